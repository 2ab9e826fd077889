"""Distributed CrissCross pretraining: the loop every Ray Train worker runs.

Data: every epoch has one order of the manifest's usable rows, fixed by (seed, epoch); worker r
decodes rows r, r + W, r + 2W, ... of it through its own Ray Data pipeline. Each step all workers
agree that each has a batch, so a worker whose share ran short (skipped samples) ends the epoch
for everyone instead of hanging the all-reduce.

Checkpoints (rank 0 writes, every worker reports) hold the model, optimiser, schedule position,
epoch, step, torch RNG state and the epoch's data position (`DataPosition`: the positions of the
epoch's order trained on, a frontier and its exceptions, whose size does not grow with the
dataset). A resumed run drops those rows from the epoch and continues mid-epoch, so it ends at
the same final step as an uninterrupted one.
There is no grad scaler: bf16 autocast needs no loss scaling.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

from crisscross.config import ExperimentConfig
from crisscross.datasets.fs import join, replace_folder
from crisscross.datasets.pipeline import (
    epoch_rows,
)
from crisscross.datasets.positions import DataPosition, ShardProgress
from crisscross.trainers.builders import seeded_model
from crisscross.trainers.monitor import KnnMonitor, MonitorSet
from crisscross.trainers.optim import LARC
from crisscross.trainers.run_folder import BEST_DIR, PROGRESS_FILE, STATE_FILE
from crisscross.trainers.tracking import NullTracker, Tracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainJob:
    """Everything a worker needs, resolved by the driver before any worker starts."""

    config: dict[str, Any]  # ExperimentConfig.model_dump(by_alias=True)
    manifest: str
    steps_per_epoch: int  # nominal global steps of a full epoch (the lr schedule's unit)
    storage: str  # the run folder: Ray's checkpoints and best/
    tracker: Tracker = field(default_factory=NullTracker)
    monitor_sets: tuple[MonitorSet, ...] = ()
    resume_from: str = ""  # a checkpoint folder, when Ray's snapshot of the run folder is gone

    def experiment(self) -> ExperimentConfig:
        return ExperimentConfig.model_validate(self.config)


@dataclass
class Progress:
    """Where training is: the state a checkpoint carries besides weights and optimiser."""

    step: int = 0  # optimisation steps done, over all epochs
    epoch: int = 0  # the epoch under way
    epoch_step: int = 0  # steps done in it
    position: DataPosition = field(default_factory=DataPosition)  # in the epoch under way
    best: float | None = None  # best monitor score (or lowest epoch loss) so far


def restore(
    checkpoint: ray.train.Checkpoint | None, module: nn.Module, optimizer: LARC
) -> Progress:
    """Load a checkpoint into `module` and `optimizer` (in place); its Progress, or a fresh one."""
    if checkpoint is None:
        return Progress()
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    module.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"]["torch"])
    if torch.cuda.is_available() and state["rng"].get("cuda"):
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return Progress(
        step=state["step"],
        epoch=state["epoch"],
        epoch_step=state["epoch_step"],
        position=_position(state),
        best=state["best"],
    )


def _position(state: dict[str, Any]) -> DataPosition:
    """The checkpoint's data position; a checkpoint from before data positions holds the
    trained positions themselves ("consumed"), which say the same."""
    if "position" in state:
        return DataPosition.from_state({k: np.asarray(v) for k, v in state["position"].items()})
    return DataPosition.from_ids(state["consumed"].numpy())


def epoch_position(
    base: DataPosition, shard: ShardProgress, *, total: int, world: int
) -> DataPosition:
    """Every worker calls this at the same step: `base` (where this launch started the epoch
    of `total` positions) advanced by every worker's `shard`; only the cursors travel."""
    cursors = [shard.cursor()]
    if world > 1:
        cursors = [None] * world
        dist.all_gather_object(cursors, shard.cursor())
    return base.advanced(cursors, total=total)


def all_true(flag: bool, world: int, device: torch.device) -> bool:
    if world == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def all_sum(value: int, world: int, device: torch.device) -> int:
    if world == 1:
        return value
    t = torch.tensor([value], device=device)
    dist.all_reduce(t)
    return int(t.item())


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Checkpointer:
    """Writes checkpoints through `ray.train.report` and keeps the best one under `best/`."""

    def __init__(self, storage: str, rank: int, world: int) -> None:
        self.storage, self.rank, self.world = storage, rank, world

    def save(
        self,
        module: nn.Module,
        optimizer: LARC,
        progress: Progress,
        metrics: dict[str, float],
        *,
        position: DataPosition,
        name: str,
        is_best: bool = False,
    ) -> None:
        """Every worker calls this at the same step (Ray's report is a barrier); `position`:
        where training is in `progress.epoch` (from `epoch_position`)."""
        if self.rank != 0:
            ray.train.report(metrics, checkpoint=None)
            return
        state = {
            "model": module.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": {"step": progress.step},  # the lr is a function of the step
            "grad_scaler": None,  # bf16 autocast needs no loss scaling
            "step": progress.step,
            "epoch": progress.epoch,
            "epoch_step": progress.epoch_step,
            "position": {
                "frontier": position.frontier,
                "holes": torch.from_numpy(position.holes),
                "extras": torch.from_numpy(position.extras),
            },
            "best": progress.best,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        }
        with tempfile.TemporaryDirectory(prefix="crisscross-ckpt-") as folder:
            torch.save(state, Path(folder) / STATE_FILE)
            (Path(folder) / PROGRESS_FILE).write_text(
                json.dumps(
                    {k: v for k, v in state.items() if k in ("step", "epoch", "best")}
                    | {"pid": os.getpid()}  # the worker process that wrote it
                )
            )
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(folder),
                checkpoint_dir_name=name,
            )
            if is_best:  # swapped in whole: a crash mid-copy keeps the previous best/
                replace_folder(folder, join(self.storage, BEST_DIR))


STREAM_ROWS = 200_000  # at most this many rows of one worker's epochs share a pipeline


@dataclass(frozen=True)
class StreamPlan:
    """The epochs one pipeline decodes: this worker's rows of each, and each one's row count
    over all workers (its steps: rows // global batch)."""

    shards: dict[int, pa.Table]
    rows: dict[int, int]


def stream_plan(
    table: pa.Table,
    config: ExperimentConfig,
    progress: Progress,
    *,
    first: int,
    rank: int,
    world: int,
) -> StreamPlan:
    """Epochs `first`, `first + 1`, ... (as many as fit in STREAM_ROWS, at least one) for worker
    `rank`: each epoch's order less the rows trained on (`progress.position`, of epoch `first`),
    every world-th row from `rank`, cut to whole batches (the rest would be dropped anyway).
    Only this worker's positions are computed, never the whole order."""
    optim = config.optim
    per_worker = optim.batch_size // world
    shards, counts, held = {}, {}, 0
    for epoch in range(first, optim.epochs):
        position = progress.position if epoch == first else DataPosition()
        total = table.num_rows * optim.repeats_per_epoch
        mine = position.share(total, rank=rank, world=world)
        mine = mine[: len(mine) // per_worker * per_worker]
        shard = epoch_rows(table, mine, seed=config.run.seed, epoch=epoch)
        if shards and held + shard.num_rows > STREAM_ROWS:
            break
        shards[epoch], counts[epoch] = shard, position.remaining(total)
        held += shard.num_rows
    return StreamPlan(shards, counts)


class LoopClock:
    """Where a worker's time went: in steps (waiting for data apart) and in all, since start."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.steps = 0
        self.step_seconds = 0.0
        self.wait_seconds = 0.0

    def add(self, *, seconds: float, wait: float) -> None:
        self.steps += 1
        self.step_seconds += seconds - wait
        self.wait_seconds += wait

    def totals(self) -> dict[str, float]:
        """{"steps", "step_seconds" (computing), "wait_seconds" (for data), "loop_seconds"}."""
        return {
            "steps": self.steps,
            "step_seconds": self.step_seconds,
            "wait_seconds": self.wait_seconds,
            "loop_seconds": time.perf_counter() - self.started,
        }


class EpochMeter:
    """Running sums of an epoch: loss terms, samples, step and data-wait time."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.samples = 0
        self.seconds = 0.0
        self.wait = 0.0

    def add(self, values: dict[str, float], *, samples: int, seconds: float, wait: float) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
        self.steps += 1
        self.samples += samples
        self.seconds += seconds
        self.wait += wait

    def rates(self) -> tuple[float, float]:
        """(samples/s, data-wait share) so far."""
        return self.samples / max(self.seconds, 1e-9), self.wait / max(self.seconds, 1e-9)

    def summary(self) -> dict[str, float]:
        sps, wait = self.rates()
        out = {f"epoch/{k}": v / max(self.steps, 1) for k, v in self.sums.items()}
        return out | {"epoch/samples_per_s": sps, "epoch/data_wait": wait}


def quiet_ray() -> None:
    """Keep Ray's per-epoch and per-report lines off the console; warnings still show."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "bars disabled"
    # Ray Train logs every report at INFO under the logger named by its file's path, which its
    # own LoggingConfig level does not reach.
    from ray.train.v2._internal.execution import context as train_context

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def console_line(text: str) -> None:
    """One line on the console; Ray Train tees a worker's sys.stdout to stderr: raw stream."""
    stream = sys.__stdout__ or sys.stdout
    stream.write(text + "\n")
    stream.flush()


def monitor_baselines(
    monitor: KnnMonitor,
    module: nn.Module,
    config: ExperimentConfig,
    progress: Progress,
    device: torch.device,
    tracker: Tracker,
    say: Callable[[str], None],
) -> dict[str, float]:
    """Chance and the random init's scores, logged once per launch: at step 0 with
    monitor.before_training they are the monitor before training; otherwise (a resumed run, a
    sweep's trial) the run's initial weights are rebuilt from its seed and scored."""
    if config.monitor.before_training and progress.step == 0 and progress.epoch == 0:
        scores = monitor(module, device)
        baseline = monitor.chance() | {f"init/{k}": v for k, v in scores.items()}
        tracker.log_metrics(dict(scores) | baseline, step=0)
        say("monitor before training" + _scores(scores, baseline))
        return baseline
    baseline = monitor.baselines(seeded_model(config), device)
    tracker.log_metrics(baseline, step=progress.step)
    return baseline


def best_score(summary: dict[str, float]) -> float | None:
    """Higher is better: the mean kNN accuracy when the monitor ran, else minus the epoch loss."""
    knn = [v for k, v in summary.items() if k.startswith("knn/")]
    if knn:
        return float(np.mean(knn))
    loss = summary.get("epoch/loss")
    return None if loss is None or not math.isfinite(loss) else -loss


def _scores(scores: Mapping[str, float], baseline: Mapping[str, float] | None = None) -> str:
    """ " | kNN video 0.625 (init 0.300, chance 0.250), audio ... | probe video ..." from monitor
    metrics and, where known, their random-init and chance baselines."""
    baseline = baseline or {}
    text = ""
    for prefix, title in (("knn/", "kNN"), ("probe/", "probe")):
        found = {k.removeprefix(prefix): v for k, v in scores.items() if k.startswith(prefix)}
        if found:
            text += f" | {title} " + ", ".join(
                f"{k} {v:.3f}{_against(baseline, prefix + k)}" for k, v in found.items()
            )
    return text


def _against(baseline: Mapping[str, float], key: str) -> str:
    """ " (init 0.300, chance 0.250)" for "knn/video", or "" without baselines."""
    parts = []
    if f"init/{key}" in baseline:
        parts.append(f"init {baseline[f'init/{key}']:.3f}")
    modality = key.rpartition("/")[2]
    if f"chance/{modality}" in baseline:
        parts.append(f"chance {baseline[f'chance/{modality}']:.3f}")
    return f" ({', '.join(parts)})" if parts else ""


def _collapse(meter: EpochMeter) -> str:
    """ " | embed std video 0.62, audio 0.71, cos av 0.31": the collapse indicators' means."""
    if "embed_std/video" not in meter.sums:
        return ""
    mean = {k: v / max(meter.steps, 1) for k, v in meter.sums.items()}
    return (
        f" | embed std video {mean['embed_std/video']:.2f}, audio {mean['embed_std/audio']:.2f}"
        f", cos av {mean['embed_cos/av']:.2f}"
    )


class Console:
    """Rank 0's progress lines: loss, samples/s, data-wait share, ETA (and the epoch's summary)."""

    def __init__(self, epochs: int, total_steps: int, start_step: int) -> None:
        self.epochs, self.total_steps, self.start_step = epochs, total_steps, start_step
        self.started = time.perf_counter()

    def line(
        self,
        epoch: int,
        progress: Progress,
        epoch_steps: int,
        meter: EpochMeter,
        *,
        summary: dict[str, float] | None = None,
        baseline: Mapping[str, float] | None = None,
    ) -> str:
        """Inside an epoch, or at its end when its `summary` is given."""
        sps, wait = meter.rates()
        elapsed = time.perf_counter() - self.started
        rate = (progress.step - self.start_step) / max(elapsed, 1e-9)
        eta = (self.total_steps - progress.step) / rate if rate > 0 else float("nan")
        loss = meter.sums.get("loss", float("nan")) / max(meter.steps, 1)
        where = f"done, {meter.steps} steps" if summary else f"at step {meter.steps}/{epoch_steps}"
        text = (
            f"epoch {epoch + 1}/{self.epochs} {where} (total {progress.step})"
            f" | loss {loss:.4f} | {sps:.1f} samples/s | data wait {wait:.0%}"
            f" | ETA {_clock(eta) if math.isfinite(eta) else '?'}"
        )
        text += _collapse(meter)
        if summary:
            if summary.get("epoch/skipped"):
                text += f" | {int(summary['epoch/skipped'])} samples skipped"
            text += _scores(summary, baseline)
        return text
