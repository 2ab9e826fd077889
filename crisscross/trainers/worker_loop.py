"""The pretraining loop every Ray Train worker runs, in three pieces: setup (model, optimiser,
restored progress, tracking, monitor, data), an epoch's steps, and its end (skips, monitor,
best, checkpoint). The state they share is one `WorkerLoop`; the checkpoint format, the data
position and the console lines stay in `crisscross.trainers.pretrain`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
from torch import nn

from crisscross.datasets.manifest import read_manifest
from crisscross.datasets.pipeline import EpochStream, FailureLogRef, epoch_table
from crisscross.datasets.positions import DataPosition, ShardProgress
from crisscross.datasets.samples import DeviceAugment
from crisscross.trainers.builders import build_model, clip_spec, decode_resources
from crisscross.trainers.monitor import KnnMonitor
from crisscross.trainers.optim import build_optimizer, set_learning_rates
from crisscross.trainers.pretext_step import NonFiniteLossError, pretext_step
from crisscross.trainers.pretrain import (
    Checkpointer,
    Console,
    EpochMeter,
    LoopClock,
    PretrainJob,
    StreamPlan,
    all_sum,
    best_score,
    console_line,
    epoch_position,
    monitor_baselines,
    quiet_ray,
    restore,
    stream_plan,
)
from crisscross.trainers.ray_metrics import TrainMetrics
from crisscross.trainers.run_folder import epoch_checkpoint, step_checkpoint
from crisscross.trainers.step_modes import compiled, prepare, run_mode
from crisscross.trainers.stop import StepSignals, preemption_words
from crisscross.trainers.tracking import NullTracker


def train_loop_per_worker(job: PretrainJob) -> dict[str, Any]:
    """Pretrain until `optim.epochs` are done; returns rank 0's summary (Ray hands it back)."""
    loop = WorkerLoop(job)
    stream: EpochStream | None = None
    plan: StreamPlan | None = None
    for epoch in range(loop.progress.epoch, loop.config.optim.epochs):
        if stream is None or epoch not in stream.sizes:
            stream = None  # the last pipeline's decode actors end before the next's
            plan, stream = loop.open_stream(epoch)
        stopped = loop.run_epoch(epoch, stream, plan)
        if stopped is not None:
            return stopped
        loop.end_epoch(epoch, stream)
    loop.tracker.flush()
    progress = loop.progress
    return {
        "stopped": None,
        "step": progress.step,
        "best": progress.best,
        "timing": loop.clock.totals(),
    }


class WorkerLoop:
    """One worker's pretraining state, built once (`__init__` is the setup piece)."""

    def __init__(self, job: PretrainJob) -> None:
        self.job, self.clock = job, LoopClock()
        self.config = config = job.experiment()
        quiet_ray()
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = config.run.deterministic
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self._build_model()
        self.checkpointer = Checkpointer(job.storage, self.rank, self.world)
        self.signals = StepSignals(  # a stop the driver asked for, or checkpoint_minutes passed
            job.storage,
            rank=self.rank,
            world=self.world,
            device=self.device,
            checkpoint_seconds=60 * config.run.checkpoint_minutes,
            preemption=ray.train.get_preemption_info,  # a spot node's reclaim notice
        )
        self.saved_step = self.progress.step  # of the last checkpoint (a restored one's)
        self.last_loss = float("nan")
        self.tracker = job.tracker if self.rank == 0 else NullTracker()
        self.tracker.open()
        self._start_monitor()
        self.spec = clip_spec(config)
        self.augment = DeviceAugment(self.spec) if self.spec.augment_on == "device" else None
        self.table = epoch_table(read_manifest(job.manifest), self.spec)  # the manifest is let go
        self.failure_log = FailureLogRef.create(storage=job.storage, rank=self.rank)
        self.per_worker = config.optim.batch_size // self.world
        total_steps = config.optim.epochs * job.steps_per_epoch
        self.console = Console(config.optim.epochs, total_steps, self.progress.step)
        self.exported = TrainMetrics(config.run.name, self.rank)  # Prometheus, through Ray
        self.total = self.table.num_rows * config.optim.repeats_per_epoch  # an epoch's positions
        self.meter, self.trained = EpochMeter(), ShardProgress(np.zeros(0, np.int64))
        self.epoch_steps = 0  # the current epoch's, set by run_epoch

    def _build_model(self) -> None:
        config, device = self.config, self.device
        torch.manual_seed(config.run.seed)
        module = build_model(config)
        if config.model.sync_batchnorm and self.world > 1:
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        self.mode = run_mode(config.run, device)  # bf16, channels-last, compile, fused Adam
        self.module = prepare(module, self.mode, device)
        self.optimizer = build_optimizer(self.module, config.optim, fused=self.mode.fused_optimizer)
        checkpoint = ray.train.get_checkpoint()  # Ray's latest, after a restart in this launch
        if checkpoint is None and self.job.resume_from:
            checkpoint = ray.train.Checkpoint(self.job.resume_from)
        self.progress = restore(checkpoint, self.module, self.optimizer)
        wrapped = ray.train.torch.prepare_model(self.module, move_to_device=False)
        self.model = compiled(wrapped, self.mode)

    def _start_monitor(self) -> None:
        config, progress = self.config, self.progress
        self.monitor = None
        if self.rank == 0 and config.monitor.every and self.job.monitor_sets:
            self.monitor = KnnMonitor(list(self.job.monitor_sets), config)
        if progress.step:
            self.say(
                f"resuming at step {progress.step}: "
                f"epoch {progress.epoch + 1}, its step {progress.epoch_step}"
            )
        self.baseline: dict[str, float] = {}
        if self.monitor is not None:
            self.baseline = monitor_baselines(
                self.monitor, self.module, config, progress, self.device, self.tracker, self.say
            )

    def say(self, text: str) -> None:
        if self.rank == 0:
            console_line(text)

    def open_stream(self, first: int) -> tuple[StreamPlan, EpochStream]:
        """The decode pipeline serving this worker's epochs from `first` on, and its plan."""
        plan = stream_plan(
            self.table, self.config, self.progress, first=first, rank=self.rank, world=self.world
        )
        stream = EpochStream(
            plan.shards,
            spec=self.spec,
            seed=self.config.run.seed,
            resources=decode_resources(self.config),
            failure_log=self.failure_log,
            batch_size=self.per_worker,
            device=self.device,
        )
        return plan, stream

    def run_epoch(self, epoch: int, stream: EpochStream, plan: StreamPlan) -> dict[str, Any] | None:
        """The epoch's steps; the run's summary when it must end here (a stop or a NaN)."""
        optim, progress = self.config.optim, self.progress
        batches = stream.batches(epoch)
        self.trained = ShardProgress(plan.shards[epoch].column("index").to_numpy())
        self.epoch_steps = progress.epoch_step + plan.rows[epoch] // optim.batch_size
        self.exported.epoch_started(epoch)
        self.meter, last_line = EpochMeter(), time.perf_counter()
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            wait = time.perf_counter() - t0
            have, due = self.signals.exchange(batch is not None)
            # the state after the last step; a stop always names its own step checkpoint
            if due and (self.signals.reason or self.progress.step > self.saved_step):
                self._checkpoint()
            if self.signals.reason:  # the driver asked to stop: checkpointed and flushed above
                return {"interrupted": self.signals.reason, "step": self.progress.step}
            if not have:
                return None
            stopped = self._step(batch, t0, wait)
            if stopped is not None:
                return stopped
            if (
                self.rank == 0
                and time.perf_counter() - last_line >= self.config.run.progress_seconds
            ):
                last_line = time.perf_counter()
                self.say(self.console.line(epoch, progress, self.epoch_steps, self.meter))

    def _step(self, batch: dict[str, Any], t0: float, wait: float) -> dict[str, Any] | None:
        optim, progress = self.config.optim, self.progress
        lrs = set_learning_rates(
            self.optimizer, progress.step, optim=optim, steps_per_epoch=self.job.steps_per_epoch
        )
        try:
            values = pretext_step(
                self.model,
                batch,
                self.optimizer,
                step=progress.step + 1,
                device=self.device,
                bf16=self.mode.bf16,
                distributed=self.world > 1,
                channels_last=self.mode.channels_last,
                augment=self.augment,
            )
        except NonFiniteLossError as exc:
            self.tracker.flush()
            return {"stopped": str(exc), "step": progress.step, "timing": self.clock.totals()}
        self.trained.mark(batch["index"].cpu().numpy())
        progress.step += 1
        progress.epoch_step += 1
        seconds = time.perf_counter() - t0
        self._record(values, lrs, seconds=seconds, wait=wait)
        self.last_loss = values["loss"]
        every = self.config.run.checkpoint_every
        if every and progress.step % every == 0:
            self._checkpoint()
        return None

    def _record(self, values, lrs, *, seconds: float, wait: float) -> None:
        batch_size = self.config.optim.batch_size
        self.clock.add(seconds=seconds, wait=wait)
        self.meter.add(values, samples=batch_size, seconds=seconds, wait=wait)
        self.exported.step(
            global_samples=batch_size,
            own_samples=self.per_worker,
            seconds=seconds,
            wait=wait,
            loss=values["loss"],
        )
        self.tracker.log_metrics(
            values
            | {f"lr/{name}": lr for name, lr in lrs.items()}
            | {"samples_per_s": batch_size / seconds, "data_wait": wait / seconds},
            step=self.progress.step,
        )

    def _checkpoint(self) -> None:
        """A mid-epoch checkpoint of the state after the last step (metrics persisted first,
        sent after: a tracking server that does not answer never delays a checkpoint)."""
        progress = self.progress
        if self.signals.fresh_notice:
            self.say(f"step {progress.step}: checkpoint on {preemption_words(self.signals.notice)}")
        elif self.signals.at_last_call:
            self.say(f"step {progress.step}: checkpoint before the preemption deadline")
        self.tracker.persist()
        position = epoch_position(
            progress.position, self.trained, total=self.total, world=self.world
        )
        self.checkpointer.save(
            self.module,
            self.optimizer,
            progress,
            {"step": progress.step, "loss": self.last_loss},
            position=position,
            name=step_checkpoint(progress.step),
        )
        self.saved_step = progress.step
        self.signals.saved()
        self.tracker.flush()

    def end_epoch(self, epoch: int, stream: EpochStream) -> None:
        """Skips, the monitor, best, the epoch's checkpoint and its console line."""
        config, progress = self.config, self.progress
        skipped = all_sum(stream.skipped[epoch], self.world, self.device)
        self.failure_log.drain()  # the decode actors logged each failure; keep the log small
        summary = self.meter.summary() | {"epoch": epoch + 1, "epoch/skipped": skipped}
        progress.epoch, progress.epoch_step = epoch + 1, 0
        progress.position = DataPosition()
        last = epoch + 1 == config.optim.epochs
        if self.monitor is not None and ((epoch + 1) % config.monitor.every == 0 or last):
            summary |= self.monitor(self.module, self.device)
        score = best_score(summary)
        is_best = (
            self.rank == 0
            and score is not None
            and (progress.best is None or score > progress.best)
        )
        if is_best:
            progress.best = score
        self.tracker.log_metrics(summary, step=progress.step)
        self.tracker.persist()
        self.checkpointer.save(
            self.module,
            self.optimizer,
            progress,
            summary | {"step": progress.step},
            position=DataPosition(),
            is_best=is_best,
            name=epoch_checkpoint(progress.epoch, progress.step),
        )
        self.saved_step = progress.step
        self.signals.saved()
        self.tracker.flush()
        line = self.console.line(
            epoch, progress, self.epoch_steps, self.meter, summary=summary, baseline=self.baseline
        )
        self.say(line)
