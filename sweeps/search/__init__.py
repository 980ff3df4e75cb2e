"""Running a sweep: the search space, the folds, one Tune trial (k fold fits on one worker group), the Tune run."""
