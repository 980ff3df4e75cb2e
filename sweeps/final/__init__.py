"""One fit on one split, not a sweep: `zerotune train`, the refit of the best trial, and predictions with its model."""
