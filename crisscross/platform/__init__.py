"""Ray Train/Tune/Jobs glue in job-named subpackages (cli, pretrain, evaluation, sweep, cluster)
and the services they share: storage, MLflow tracking and its journal, leases, redaction."""
