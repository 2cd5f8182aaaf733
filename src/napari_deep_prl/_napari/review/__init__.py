"""Widgets for rating and adjudicating lesions."""
