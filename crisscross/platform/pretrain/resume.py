"""`crisscross pretrain --resume RUN_ID`: the run folder and config of a logged pretraining."""

from __future__ import annotations

from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from crisscross.config import ExperimentConfig
from crisscross.platform.pretrain.job import PretrainError
from crisscross.platform.redact import MASK, redact
from crisscross.platform.tracking import tracking_uri


def resume_target(run_id: str, scratch: str, uri: str | None = None) -> tuple[str, dict[str, str]]:
    """(the run's config file, downloaded into `scratch`; overrides placing its run folder)."""
    from mlflow.artifacts import download_artifacts

    uri = uri or tracking_uri(ExperimentConfig())
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except Exception:
        raise PretrainError(
            f"--resume {run_id}: no such run in the tracking store {redact(uri)} "
            "(set MLFLOW_TRACKING_URI to the store it was logged to)"
        ) from None
    run_dir = run.data.tags.get("crisscross.run_dir")
    if not run_dir:
        raise PretrainError(f"--resume {run_id}: not a crisscross pretraining run (no run folder)")
    config = download_artifacts(
        run_id=run_id, artifact_path="config.yaml", dst_path=scratch, tracking_uri=uri
    )
    storage, _, name = run_dir.rstrip("/").rpartition("/")
    where = {"run.output_dir": storage, "run.name": name}
    saved = yaml.safe_load(Path(config).read_text()) or {}
    if MASK in str((saved.get("tracking") or {}).get("uri") or ""):
        where["tracking.uri"] = uri  # the logged copy had its credentials masked
    return config, where
