"""Images, cohorts, lesions and patches: what goes into the model."""
