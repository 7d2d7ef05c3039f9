"""Paper A's training runs: the run folder (configs, checkpoints) and the training loop."""
