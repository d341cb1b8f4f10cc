"""The readiness engine: Trio's wait_readable/wait_writable, everywhere else."""
