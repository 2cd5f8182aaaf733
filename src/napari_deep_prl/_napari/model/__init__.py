"""The model panel: scoring, ranking and fine-tuning in the viewer."""
