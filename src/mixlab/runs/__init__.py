"""Run directories, the results store, and sweeps."""
