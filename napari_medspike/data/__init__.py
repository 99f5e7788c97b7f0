"""Images and masks: reading, synthetic data, datasets."""
