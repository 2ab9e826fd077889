"""A pretraining run's end: export the backbones, log the checkpoints and the loss curve, close
the MLflow run, once the tracking server answers (`finish`); what a
finished run returns (`Outcome`, read back by `outcome_of`) and the error of a run that
started but did not finish (`RunFailedError`)."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import ray.train
import requests
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from crisscross.config import ExperimentConfig
from crisscross.datasets.fs import join, resolve
from crisscross.models.weights import save_backbone
from crisscross.platform.journal import JOURNAL_FILE, MetricJournal
from crisscross.platform.pretrain.loss_plot import plot_losses
from crisscross.platform.pretrain.resume_check import unlisted_checkpoints
from crisscross.platform.pretrain.run_record import read_record, write_record
from crisscross.platform.tracking import server_answers, set_tag, unanswered
from crisscross.trainers.builders import build_model
from crisscross.trainers.run_folder import BEST_DIR, STATE_FILE


class RunFailedError(RuntimeError):
    """Training started but did not finish; the message says where it stopped and what is kept."""


class RunInterruptedError(RunFailedError):
    """Stopped by a signal (SIGINT, SIGTERM); the command exits with 128 + `signum`."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


@dataclass(frozen=True)
class Outcome:
    run_id: str
    tracking_uri: str
    run_dir: str
    final_step: int
    metrics: dict[str, float]
    backbones: dict[str, str]
    knn_before: dict[str, float]
    knn_after: dict[str, float]
    trained: bool = True  # False: the run had already finished, nothing was trained now
    baseline: dict[str, float] = dataclasses.field(default_factory=dict)  # chance/*, init/*
    timing: dict[str, float] = dataclasses.field(default_factory=dict)  # rank 0's LoopClock


def uri_exists(uri: str) -> bool:
    fs, inner = resolve(uri)
    return fs.get_file_info(inner).type != pafs.FileType.NotFound


def finish(
    client: MlflowClient,
    config: ExperimentConfig,
    run_id: str,
    uri: str,
    run_dir: str,
    checkpoint: ray.train.Checkpoint | None,
    storage: str,
    *,
    step: int | None = None,
) -> Outcome:
    """Export the backbones, log the checkpoints (or their URIs), the loss curve and the metrics
    the workers journaled, close the run FINISHED: once the tracking server answers within
    seconds (`server_answers`; MLflow's own retries of an upload to a server that is down take
    minutes), else RunFailedError saying how to close the run later (`step`: where training
    got to). The checkpoints stay either way."""
    if checkpoint is None:
        raise RunFailedError(f"training ended without a checkpoint in {run_dir}")
    try:
        server_answers(client, run_id)
        final_step, backbones = _send(client, config, run_id, run_dir, checkpoint, storage)
    except (MlflowException, requests.RequestException) as exc:
        raise RunFailedError(
            f"training reached step {step}, but {unanswered(exc, client)} while the run was "
            f"closed; the checkpoints stay in {run_dir}: run the same command again once it "
            "answers, to export the backbones and close the run"
        ) from None
    for leftover in unlisted_checkpoints(run_dir):  # run.keep_checkpoints holds for them too
        shutil.rmtree(leftover, ignore_errors=True)
    record = (read_record(run_dir) or {}) | {"finished_step": final_step, "backbones": backbones}
    write_record(run_dir, record)
    return outcome_of(client, run_id, uri, run_dir, record)


def _send(
    client: MlflowClient,
    config: ExperimentConfig,
    run_id: str,
    run_dir: str,
    checkpoint: ray.train.Checkpoint,
    storage: str,
) -> tuple[int, dict[str, str]]:
    """finish's part that talks to the server: (the checkpoint's step, backbone artifacts)."""
    local = "://" not in storage
    backbones = {}
    with tempfile.TemporaryDirectory(prefix="crisscross-export-") as folder:
        with checkpoint.as_directory() as ckpt:
            state = torch.load(Path(ckpt) / STATE_FILE, map_location="cpu", weights_only=True)
            if local:
                client.log_artifacts(run_id, ckpt, "checkpoints/latest")
        model = build_model(config)
        model.load_state_dict(state["model"])
        for prefix, module in (("vid", model.video), ("aud", model.audio)):
            path = Path(folder) / f"{prefix}_{config.run.name}.pth.tar"
            save_backbone(module, path)
            client.log_artifact(run_id, str(path), "backbones")
            backbones[prefix] = f"backbones/{path.name}"
        # metrics the workers journaled and could not send before they ended
        MetricJournal(join(run_dir, JOURNAL_FILE)).replay(client, run_id)
        plot = Path(folder) / "loss_curve.png"
        if plot_losses(client, run_id, plot):
            client.log_artifact(run_id, str(plot))
    best = join(run_dir, BEST_DIR)
    set_tag(client, run_id, "checkpoint.latest", checkpoint.path)
    if uri_exists(best):
        set_tag(client, run_id, "checkpoint.best", best)
        if local:
            client.log_artifacts(run_id, best, "checkpoints/best")
    client.set_terminated(run_id, status="FINISHED")
    return int(state["step"]), backbones


def outcome_of(
    client: MlflowClient, run_id: str, uri: str, run_dir: str, record: dict[str, Any]
) -> Outcome:
    """A finished run's summary, read back from the tracking store and the run record."""
    metrics = client.get_run(run_id).data.metrics
    before, after = {}, {}
    for key in (k for k in metrics if k.startswith(("knn/", "probe/"))):
        history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        if history[0].step == 0:
            before[key] = history[0].value
        after[key] = history[-1].value
    baseline = {k: v for k, v in metrics.items() if k.startswith(("chance/", "init/"))}
    return Outcome(
        run_id,
        uri,
        run_dir,
        int(record["finished_step"]),
        metrics,
        dict(record.get("backbones", {})),
        before,
        after,
        baseline=baseline,
    )
