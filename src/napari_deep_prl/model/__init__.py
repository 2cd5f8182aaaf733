"""The Deep-PRL network, its training, checkpoints and inference."""
