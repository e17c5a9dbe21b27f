"""Optuna define-by-run search spaces and per-dataset presets (no Ray, no MLflow)."""
