"""Training engine: checkpoints, metrics, the train / fine-tune loop."""
