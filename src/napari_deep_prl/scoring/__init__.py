"""Scoring lesions of a cohort or a project with a trained model, and the decisions on them."""
