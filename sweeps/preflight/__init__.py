"""Pre-flight: data, folds, batches, model and cluster checked before any resource is taken
(`sweep run` and `sweep validate`)."""
