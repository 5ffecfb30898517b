"""Search backends: Optuna (in-process or worker processes) and Ray Tune; both write one store."""
