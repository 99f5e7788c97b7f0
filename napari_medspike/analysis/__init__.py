"""Analysis of what the spiking network does: energy, firing rates, display maps."""
