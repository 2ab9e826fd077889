"""Ray Train/Tune/Jobs glue, MLflow tracking and the command line."""
