"""Nested cross-validation, baselines, reports and figures."""
