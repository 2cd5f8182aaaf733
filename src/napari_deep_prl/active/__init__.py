"""Active learning: which lesion to rate next, and fine-tuning on new labels."""
