"""orch: the command line, settings, Ray/Tuner wiring and MLflow logging of searches."""

__version__ = "0.1.0"
