"""One sweep trial: a Ray Train pretraining started from a Tune trial, and what Tune hears of it.

Tune runs `run_trial` once per configuration; it builds the trial's config through the one
override path and calls `run_pretrain`, whose TorchTrainer forwards every epoch that carries the
monitor's accuracy to Tune (`ScoreReport`). `TrialLedger` (a Tune callback in the sweep's driver)
writes each trial's end to disk and closes its MLflow run with the status and the reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from ray import tune

from crisscross.config import ExperimentConfig, apply_overrides
from crisscross.config.sweep_schema import expand_case
from crisscross.datasets.fs import atomic_write_text
from crisscross.platform.pretrain.job import run_pretrain
from crisscross.platform.pretrain.run_record import read_record
from crisscross.platform.sweep.report import SCORE, ScoreReport, selection_score
from crisscross.trainers.monitor import MonitorSet

LEDGER = "ledger"  # <sweep folder>/ledger/<trial id>.json: how each trial ended


@dataclass(frozen=True)
class TrialJob:
    """What every trial shares, resolved once by the sweep's driver."""

    base: dict[str, Any]  # ExperimentConfig dump: the base experiment with the fixed overrides
    sweep: str
    runs_dir: str  # the trials' run folders: <runs_dir>/<sweep>-<trial id>
    parent_run_id: str
    metric: str
    monitor_sets: tuple[MonitorSet, ...]
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)  # the sweep's named cases


def trial_config(job: TrialJob, params: dict[str, Any], trial_id: str) -> ExperimentConfig:
    """The base experiment with the trial's values, run folder and run name."""
    base = ExperimentConfig.model_validate(job.base)
    where = {"run.name": f"{job.sweep}-{trial_id}", "run.output_dir": job.runs_dir}
    return apply_overrides(base, expand_case(params, job.cases) | where)


def run_trial(params: dict[str, Any], job: TrialJob) -> None:
    """Tune's trainable: pretrain with `params`; a resumed sweep continues the same run."""
    trial_id = tune.get_context().get_trial_id()
    config = trial_config(job, params, trial_id)

    def say(text: str) -> None:
        print(f"[{config.run.name}] {text}", flush=True)

    outcome = run_pretrain(
        config,
        say=say,
        monitor=job.monitor_sets,
        tags={
            "mlflow.parentRunId": job.parent_run_id,
            "crisscross.sweep": job.sweep,
            "crisscross.trial_id": trial_id,
            "crisscross.searched": ", ".join(sorted(params)),
        }
        | ({"crisscross.case": str(params["case"])} if "case" in params else {}),
        callbacks=[ScoreReport(job.metric, config.optim.epochs)],
    )
    # The last epoch's score (ScoreReport holds it back), or a run that finished before an
    # interruption Tune did not see: the run is complete before Tune hears of its end.
    score = selection_score(outcome.knn_after | outcome.metrics, job.metric)
    if score is not None:
        tune.report({SCORE: score, "epoch": config.optim.epochs})


@dataclass(frozen=True)
class TrialEnd:
    trial_id: str
    status: str  # finished | stopped | failed
    reason: str
    epoch: int
    score: float | None


class TrialLedger(tune.Callback):
    """Writes how each trial ended to <folder>/ledger/ and closes its MLflow run to match.

    It keeps no state in memory, so the copy Tune restores on --resume works the same."""

    def __init__(
        self, *, folder: str, runs_dir: str, sweep: str, epochs: int, uri: str, metric: str
    ) -> None:
        self.folder, self.runs_dir, self.sweep = folder, runs_dir, sweep
        self.epochs, self.uri, self.metric = epochs, uri, metric

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        epoch = int(last.get("epoch", 0))
        epochs = int(trial.config.get("optim.epochs", self.epochs))
        score = last.get(SCORE)
        record = read_record(f"{self.runs_dir}/{self.sweep}-{trial.trial_id}") or {}
        if record.get("finished_step") is not None:  # finish() exported and closed the run
            end = TrialEnd(trial.trial_id, "finished", f"completed {epochs} epochs", epoch, score)
        else:
            reason = f"stopped early by ASHA after epoch {epoch}" + (
                f" ({self.metric} {score:.3f})" if score is not None else ""
            )
            end = TrialEnd(trial.trial_id, "stopped", reason, epoch, score)
        self._record(end, status="FINISHED" if end.status == "finished" else "KILLED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        end = TrialEnd(
            trial.trial_id,
            "failed",
            error_line(trial),
            int(last.get("epoch", 0)),
            last.get(SCORE),
        )
        self._record(end, status="FAILED")

    def _record(self, end: TrialEnd, *, status: str) -> None:
        path = Path(self.folder) / LEDGER / f"{end.trial_id}.json"
        atomic_write_text(str(path), json.dumps(end.__dict__, default=_plain))
        close_child_run(self, end.trial_id, status=status, reason=end.reason)


def close_child_run(ledger: TrialLedger, trial_id: str, *, status: str, reason: str) -> None:
    """Set the trial's MLflow run to `status` with its stop reason (when the run exists)."""
    record = read_record(f"{ledger.runs_dir}/{ledger.sweep}-{trial_id}")
    if record is None:
        return
    client = MlflowClient(ledger.uri)
    run_id = record["mlflow_run_id"]
    client.set_tag(run_id, "crisscross.stop_reason", reason[:5000])
    # a finished trial's run_pretrain closed its run itself; one that ended otherwise before
    # (an interruption's KILLED) is set FINISHED now, once
    if status != "FINISHED" or client.get_run(run_id).info.status != "FINISHED":
        client.set_terminated(run_id, status=status)


def error_line(trial: Any) -> str:
    """The last line of a failed trial's error: the message our code raised."""
    path = getattr(trial, "error_file", None) or ""
    try:
        text = Path(path).read_text().strip() if path else ""
    except OSError:
        text = ""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][:2000] if lines else "failed (no error message recorded)"


def _plain(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else str(value)
