"""What a sweep's storage says: trials and their states, the best trial, status, importances."""
