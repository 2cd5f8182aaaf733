"""Physics-based synthetic PRL cohort (placeholder exports, completed below)."""
