"""The public face: backend registration, the public API, the tuning scope and
profiles, engine detection, and the one module that builds a run's engine."""
