"""Distributed CrissCross pretraining: the loop every Ray Train worker runs.

Data: every epoch has one order of the manifest's usable rows, fixed by (seed, epoch); worker r
decodes rows r, r + W, r + 2W, ... of it through its own Ray Data pipeline. Each step all workers
agree that each has a batch, so a worker whose share ran short (skipped samples) ends the epoch
for everyone instead of hanging the all-reduce.

Checkpoints (rank 0 writes, every worker reports) hold the model, optimiser, schedule position,
epoch, step, torch RNG state and the epoch rows already trained on. A resumed run drops those rows
from the epoch and continues mid-epoch, so it ends at the same final step as an uninterrupted one.
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
import pyarrow.compute as pc
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

from crisscross.config import ExperimentConfig
from crisscross.datasets.fs import join, replace_folder
from crisscross.datasets.manifest import read_manifest
from crisscross.datasets.pipeline import (
    EpochStream,
    FailureLogRef,
    epoch_order,
    usable_rows,
)
from crisscross.datasets.samples import DeviceAugment
from crisscross.trainers.builders import build_model, clip_spec, decode_resources, seeded_model
from crisscross.trainers.monitor import KnnMonitor, MonitorSet
from crisscross.trainers.optim import LARC, build_optimizer, set_learning_rates
from crisscross.trainers.pretext_step import NonFiniteLossError, pretext_step
from crisscross.trainers.ray_metrics import TrainMetrics
from crisscross.trainers.step_modes import compiled, prepare, run_mode
from crisscross.trainers.tracking import NullTracker, Tracker

log = logging.getLogger(__name__)
STATE_FILE = "state.pt"
BEST_DIR = "best"


@dataclass(frozen=True)
class PretrainJob:
    """Everything a worker needs, resolved by the driver before any worker starts."""

    config: dict[str, Any]  # ExperimentConfig.model_dump(by_alias=True)
    manifest: str
    steps_per_epoch: int  # nominal global steps of a full epoch (the lr schedule's unit)
    storage: str  # the run folder: Ray's checkpoints and best/
    tracker: Tracker = field(default_factory=NullTracker)
    monitor_sets: tuple[MonitorSet, ...] = ()

    def experiment(self) -> ExperimentConfig:
        return ExperimentConfig.model_validate(self.config)


@dataclass
class Progress:
    """Where training is: the state a checkpoint carries besides weights and optimiser."""

    step: int = 0  # optimisation steps done, over all epochs
    epoch: int = 0  # the epoch under way
    epoch_step: int = 0  # steps done in it
    consumed: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
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
        consumed=state["consumed"].numpy(),
        best=state["best"],
    )


def remaining_rows(rows: pa.Table, consumed: np.ndarray) -> pa.Table:
    """`rows` (from `epoch_order`) less the ones already trained on."""
    if not consumed.size:
        return rows
    done = pc.is_in(rows.column("index"), value_set=pa.array(consumed, pa.int64()))
    return rows.filter(pc.invert(done))


def _gather(local: np.ndarray, world: int) -> np.ndarray:
    if world == 1:
        return local
    parts: list[np.ndarray | None] = [None] * world
    dist.all_gather_object(parts, local)
    return np.concatenate(parts)


def _all_true(flag: bool, world: int, device: torch.device) -> bool:
    if world == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def _all_sum(value: int, world: int, device: torch.device) -> int:
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
        consumed_here: np.ndarray,
        name: str,
        is_best: bool = False,
    ) -> None:
        """Every worker calls this at the same step (it gathers, and Ray's report is a barrier)."""
        consumed = _gather(consumed_here, self.world)
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
            "consumed": torch.from_numpy(np.unique(consumed)),
            "best": progress.best,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        }
        with tempfile.TemporaryDirectory(prefix="crisscross-ckpt-") as folder:
            torch.save(state, Path(folder) / STATE_FILE)
            (Path(folder) / "progress.json").write_text(
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
    `rank`: each epoch's order less the rows trained on (`progress.consumed`, of epoch `first`),
    every world-th row from `rank`, cut to whole batches (the rest would be dropped anyway)."""
    optim = config.optim
    per_worker = optim.batch_size // world
    shards, counts, held = {}, {}, 0
    for epoch in range(first, optim.epochs):
        rows = epoch_order(
            table, seed=config.run.seed, epoch=epoch, repeats=optim.repeats_per_epoch
        )
        if epoch == first:
            rows = remaining_rows(rows, progress.consumed)
        shard = rows.take(pa.array(np.arange(rank, rows.num_rows, world)))
        shard = shard.slice(0, shard.num_rows // per_worker * per_worker)
        if shards and held + shard.num_rows > STREAM_ROWS:
            break
        shards[epoch], counts[epoch] = shard, rows.num_rows
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


def train_loop_per_worker(job: PretrainJob) -> dict[str, Any]:
    """Pretrain until `optim.epochs` are done; returns rank 0's summary (Ray hands it back)."""
    clock = LoopClock()
    config = job.experiment()
    quiet_ray()
    ray.data.DataContext.get_current().execution_options.preserve_order = config.run.deterministic
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    optim_cfg, seed = config.optim, config.run.seed

    torch.manual_seed(seed)
    module = build_model(config)
    if config.model.sync_batchnorm and world > 1:
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    mode = run_mode(config.run, device)  # bf16, channels-last, compile, fused Adam
    module = prepare(module, mode, device)
    optimizer = build_optimizer(module, optim_cfg, fused=mode.fused_optimizer)
    progress = restore(ray.train.get_checkpoint(), module, optimizer)
    model = compiled(ray.train.torch.prepare_model(module, move_to_device=False), mode)
    checkpointer = Checkpointer(job.storage, rank, world)

    tracker = job.tracker if rank == 0 else NullTracker()
    tracker.open()

    def say(text: str) -> None:
        if rank == 0:
            console_line(text)

    monitor = None
    if rank == 0 and config.monitor.every and job.monitor_sets:
        monitor = KnnMonitor(list(job.monitor_sets), config)

    total_steps = optim_cfg.epochs * job.steps_per_epoch
    if progress.step:
        say(
            f"resuming at step {progress.step}: "
            f"epoch {progress.epoch + 1}, its step {progress.epoch_step}"
        )
    baseline: dict[str, float] = {}
    if monitor is not None:
        baseline = monitor_baselines(monitor, module, config, progress, device, tracker, say)

    manifest = read_manifest(job.manifest)
    spec = clip_spec(config)
    augment = DeviceAugment(spec) if spec.augment_on == "device" else None
    table = usable_rows(manifest, spec)
    failure_log = FailureLogRef.create()
    per_worker = optim_cfg.batch_size // world
    console = Console(optim_cfg.epochs, total_steps, progress.step)
    exported = TrainMetrics(config.run.name, rank)  # Prometheus/Grafana, through Ray's metrics

    stream: EpochStream | None = None
    for epoch in range(progress.epoch, optim_cfg.epochs):
        if stream is None or epoch not in stream.sizes:
            batches = stream = None  # the last pipeline's decode actors end before the next's
            plan = stream_plan(table, config, progress, first=epoch, rank=rank, world=world)
            stream = EpochStream(
                plan.shards,
                spec=spec,
                seed=seed,
                resources=decode_resources(config),
                failure_log=failure_log,
                batch_size=per_worker,
                device=device,
            )
        batches = stream.batches(epoch)
        consumed = [progress.consumed]
        epoch_steps = progress.epoch_step + plan.rows[epoch] // optim_cfg.batch_size
        exported.epoch_started(epoch)
        meter = EpochMeter()
        last_line = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            wait = time.perf_counter() - t0
            if not _all_true(batch is not None, world, device):
                break
            lrs = set_learning_rates(
                optimizer, progress.step, optim=optim_cfg, steps_per_epoch=job.steps_per_epoch
            )
            try:
                values = pretext_step(
                    model,
                    batch,
                    optimizer,
                    step=progress.step + 1,
                    device=device,
                    bf16=mode.bf16,
                    distributed=world > 1,
                    channels_last=mode.channels_last,
                    augment=augment,
                )
            except NonFiniteLossError as exc:
                tracker.flush()
                return {"stopped": str(exc), "step": progress.step, "timing": clock.totals()}
            consumed.append(batch["index"].cpu().numpy())
            progress.step += 1
            progress.epoch_step += 1
            seconds = time.perf_counter() - t0
            clock.add(seconds=seconds, wait=wait)
            meter.add(values, samples=optim_cfg.batch_size, seconds=seconds, wait=wait)
            exported.step(
                global_samples=optim_cfg.batch_size,
                own_samples=per_worker,
                seconds=seconds,
                wait=wait,
                loss=values["loss"],
            )
            tracker.log_metrics(
                values
                | {f"lr/{name}": lr for name, lr in lrs.items()}
                | {"samples_per_s": optim_cfg.batch_size / seconds, "data_wait": wait / seconds},
                step=progress.step,
            )
            if config.run.checkpoint_every and progress.step % config.run.checkpoint_every == 0:
                tracker.flush()
                checkpointer.save(
                    module,
                    optimizer,
                    progress,
                    {"step": progress.step, "loss": values["loss"]},
                    consumed_here=np.concatenate(consumed),
                    name=f"checkpoint_step{progress.step:09d}",
                )
            if rank == 0 and time.perf_counter() - last_line >= config.run.progress_seconds:
                last_line = time.perf_counter()
                say(console.line(epoch, progress, epoch_steps, meter))

        skipped = _all_sum(stream.skipped[epoch], world, device)
        failure_log.drain()  # the decode actors logged each failure; keep the log small
        summary = meter.summary() | {"epoch": epoch + 1, "epoch/skipped": skipped}
        progress.epoch, progress.epoch_step = epoch + 1, 0
        progress.consumed = np.zeros(0, np.int64)
        last = epoch + 1 == optim_cfg.epochs
        if monitor is not None and ((epoch + 1) % config.monitor.every == 0 or last):
            summary |= monitor(module, device)
        score = _score(summary)
        is_best = (
            rank == 0 and score is not None and (progress.best is None or score > progress.best)
        )
        if is_best:
            progress.best = score
        tracker.log_metrics(summary, step=progress.step)
        tracker.flush()
        checkpointer.save(
            module,
            optimizer,
            progress,
            summary | {"step": progress.step},
            consumed_here=np.zeros(0, np.int64),
            is_best=is_best,
            name=f"checkpoint_epoch{progress.epoch:04d}_step{progress.step:09d}",
        )
        say(console.line(epoch, progress, epoch_steps, meter, summary=summary, baseline=baseline))
    tracker.flush()
    return {"stopped": None, "step": progress.step, "best": progress.best, "timing": clock.totals()}


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


def _score(summary: dict[str, float]) -> float | None:
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
