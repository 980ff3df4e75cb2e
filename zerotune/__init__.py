"""Code shared by all three packages (trainer, sweeps, cluster) without any of them depending on another."""
