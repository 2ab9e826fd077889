"""From a manifest to fixed-shape pretraining batches through Ray Data (the Ray-free parts, the
epoch order and the torch Dataset, are in `epochs`; the FailureLog and the quarantine in
`failures`; both re-exported here).

Only manifest rows (paths and probed facts) enter Ray's object store; each decode actor opens the
files itself. A sample that fails, by any exception, is skipped and recorded, with its path and
reason, in a named FailureLog actor; `EpochData.failures()` drains it at the end of the epoch.
A file that kills its decode actor outright (a decoder's segfault) cannot raise: each actor
notes the file it is decoding in a node-local marker named by its actor id, so that Ray's
restart of that actor finds the file, quarantines it in the FailureLog, and the retried task
(and every later epoch, on any actor) skips it with its reason; given the run folder, the
FailureLog also writes it there, so that a later worker group of the run (after a worker's
restart, or the next launch) skips it from the start. Restarts and retries are finite
(`DecodeResources.restarts`; Ray Data's default is to restart and retry without end).

`EpochStream` runs several consecutive epochs through one pipeline, so that the decode actors
start once rather than at every epoch (short epochs spent most of their time starting them);
it cuts the stream back into each epoch's full batches. Written here because Ray Data batches
across its input without knowing an epoch's end. `PauseWhileBackpressured` keeps Ray Data's
scheduling loop from spinning while the decoders are ahead of training (written here because
Ray 2.60 has no setting for it; the measurements are in its docstring).
Legend of batch arrays: B samples, T frames, F mel bins, S spectrogram frames.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import ray
import torch
from ray.data._internal.execution.execution_callback import ExecutionCallback

from crisscross.datasets.epochs import (
    DecodeResources,
    PretextTorchDataset,
    collate_skipping_failures,
    epoch_order,
    epoch_rows,
    epoch_table,
    failure_reason,
    usable_rows,
)
from crisscross.datasets.failures import (
    NAMESPACE,
    Failure,
    FailureLogRef,
    failure_summary,
)
from crisscross.datasets.manifest import Manifest
from crisscross.datasets.samples import ClipSpec, PretextSample

if TYPE_CHECKING:
    from ray.data._internal.execution.streaming_executor import StreamingExecutor

log = logging.getLogger(__name__)
MARKER_SECONDS = 3600.0  # a decode actor's marker older than this is removed by the next actor
__all__ = [  # the Ray-free names are re-exported: callers import the data path from one place
    "DecodeResources",
    "EpochBatcher",
    "EpochData",
    "EpochStream",
    "Failure",
    "FailureLogRef",
    "PretextTorchDataset",
    "collate_skipping_failures",
    "device_batches",
    "epoch_dataset",
    "epoch_order",
    "epoch_rows",
    "epoch_table",
    "failure_summary",
    "iter_batches",
    "pretext_epoch",
    "usable_rows",
]


class PauseWhileBackpressured(ExecutionCallback):
    """Sleeps `PAUSE_S` in each step of Ray Data's scheduling loop while an operator may not
    read its tasks' outputs (output backpressure: the decoders are ahead of training).

    Ray 2.60's loop waits for a task with `ray.wait`, which returns at once for a task whose
    output is ready but not read, so under output backpressure the loop spins. Measured on the
    quickstart (2 training workers, 2 cores): 230-320 steps/s and 41-44 % of a core per worker
    once the decoders were ahead, against 15 steps/s and 7-8 % before, leaving the training
    thread 28 % of a core. A pause of 50 ms keeps the loop at most at the 10-20 steps/s of its
    ordinary `ray.wait` timeout (100 ms); the consumer loses nothing, as the operator's output
    queue holds decoded blocks whenever this applies.
    """

    PAUSE_S = 0.05

    def on_execution_step(self, executor: StreamingExecutor) -> None:
        if any(op._in_task_output_backpressure for op in executor._topology):
            time.sleep(self.PAUSE_S)


class PretextDecoder:
    """Ray Data callable class: a batch of manifest rows -> a batch of decoded, augmented views."""

    def __init__(
        self, spec: ClipSpec, seed: int, failure_log: str | None, keep_failed: bool = False
    ) -> None:
        torch.set_num_threads(1)  # one decode actor per CPU: no oversubscription
        self.sample = PretextSample(spec, seed=seed)
        self.failures = ray.get_actor(failure_log, namespace=NAMESPACE) if failure_log else None
        self.keep_failed = keep_failed  # a zero row with ok False in place of a failed sample
        self.marker = _marker_path()
        crashed = _read_marker(self.marker)  # this actor is a restart: that file killed it
        if crashed and self.failures is not None:
            log.warning("quarantined %s: it crashed a decode actor", crashed)
            ray.get(self.failures.quarantine.remote(crashed))

    def _quarantined(self) -> set[str]:
        return ray.get(self.failures.quarantined.remote()) if self.failures is not None else set()

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        empty = self.sample.empty()  # every array a sample holds, at zero samples
        views: dict[str, list[np.ndarray]] = {name: [] for name in empty}
        kept: list[int] = []
        epochs: list[int] = []
        ok: list[bool] = []
        quarantined = self._quarantined()
        for i in range(len(batch["path"])):
            row = {key: batch[key][i] for key in batch}
            decoded = True
            try:
                if str(row["path"]) in quarantined:
                    raise QuarantinedError("it crashed a decode actor before: not opened again")
                _write_marker(self.marker, str(row["path"]))
                out = self.sample(row, epoch=int(row["epoch"]), index=int(row["index"]))
            except Exception as exc:  # any per-sample failure: recorded, the task goes on
                self._record(Failure(str(row["path"]), failure_reason(exc), int(row["epoch"])))
                if not self.keep_failed:
                    continue
                decoded = False
                out = {name: np.zeros(a.shape[1:], a.dtype) for name, a in empty.items()}
            for name in views:
                views[name].append(out[name])
            kept.append(int(row["index"]))
            epochs.append(int(row["epoch"]))
            ok.append(decoded)
        _write_marker(self.marker, "")  # the batch is done: no file in flight
        if self.failures is not None:  # ru_maxrss is in KiB on Linux
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self.failures.note_rss.remote(os.getpid(), peak)
        out = {name: np.stack(arrays) if arrays else empty[name] for name, arrays in views.items()}
        meta = {"index": np.asarray(kept, np.int64)}  # which rows a batch holds (resume)
        if self.keep_failed:  # the stream needs every row's epoch and whether it decoded
            meta |= {"epoch": np.asarray(epochs, np.int64), "ok": np.asarray(ok, np.bool_)}
        return out | meta

    def _record(self, failure: Failure) -> None:
        log.warning("skipped %s: %s", failure.path, failure.reason)
        if self.failures is not None:
            ray.get(
                self.failures.record.remote(failure)
            )  # synchronous: counted before the epoch ends


class QuarantinedError(RuntimeError):
    """A file that crashed a decode actor before: skipped without opening it again."""


def _marker_path() -> str:
    """Where this decode actor notes the file it is decoding: node-local, named by the actor's
    id, which a restart of the actor keeps."""
    actor = ray.get_runtime_context().get_actor_id() or f"pid{os.getpid()}"
    folder = os.path.join(tempfile.gettempdir(), "crisscross-decoding")
    os.makedirs(folder, exist_ok=True)
    old = time.time() - MARKER_SECONDS  # markers of actors long gone: a restart reads its own
    with os.scandir(folder) as entries:  # within seconds of the crash
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.name != actor and entry.stat().st_mtime < old:
                    os.remove(entry.path)
    return os.path.join(folder, actor)


def _write_marker(path: str, text: str) -> None:
    # no fsync: the page cache outlives a crashed process, and this runs once per sample
    with open(path, "w") as handle:
        handle.write(text)


def _read_marker(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return ""


@dataclass
class EpochData:
    """One epoch of pretraining samples as a Ray Dataset, and its decode failures."""

    dataset: ray.data.Dataset
    rows: int
    failure_log: FailureLogRef

    def failures(self) -> list[Failure]:
        """The samples that failed since the last call (call it when the epoch is consumed)."""
        return self.failure_log.drain()


def pretext_epoch(
    manifest: Manifest,
    *,
    spec: ClipSpec,
    epoch: int,
    seed: int = 0,
    repeats: int = 1,
    resources: DecodeResources = DecodeResources(),
    failure_log: FailureLogRef | None = None,
) -> EpochData:
    """The Ray Dataset of one epoch; failures go to the run's `failure_log` (or a new one)."""
    rows = epoch_order(usable_rows(manifest, spec), seed=seed, epoch=epoch, repeats=repeats)
    return epoch_dataset(rows, spec=spec, seed=seed, resources=resources, failure_log=failure_log)


def epoch_dataset(
    rows: pa.Table,
    *,
    spec: ClipSpec,
    seed: int = 0,
    resources: DecodeResources = DecodeResources(),
    failure_log: FailureLogRef | None = None,
    keep_failed: bool = False,
    decoder: type[PretextDecoder] | None = None,
) -> EpochData:
    """The Ray Dataset decoding `rows` (from `epoch_order`, or a worker's share of them). With
    `keep_failed`, a sample that fails to decode stays as a zero row, and every row carries its
    `epoch` and `ok` (False for such a row), as `EpochStream` needs. `decoder` replaces the
    callable class (a subclass of PretextDecoder: the fault-injection tests)."""
    failure_log = failure_log or FailureLogRef.create()
    per_task = resources.task_rows(rows.num_rows)
    blocks = max(1, -(-rows.num_rows // per_task))  # one block per decode task
    kwargs = {
        "spec": spec,
        "seed": seed,
        "failure_log": failure_log.name,
        "keep_failed": keep_failed,
    }
    with warnings.catch_warnings():  # Ray 2.60 takes max_restarts only as a `ray_remote_args`
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        dataset = _decoding(rows, blocks, per_task, resources, decoder or PretextDecoder, kwargs)
    return EpochData(dataset, rows.num_rows, failure_log)


def _decoding(
    rows: pa.Table,
    blocks: int,
    per_task: int,
    resources: DecodeResources,
    decoder: type[PretextDecoder],
    kwargs: dict[str, object],
) -> ray.data.Dataset:
    """The decode stage over `rows` in `blocks` of `per_task` rows (one decode task each)."""
    return arrow_dataset(rows, blocks).map_batches(
        decoder,
        fn_constructor_kwargs=kwargs,
        batch_size=per_task,
        compute=ray.data.ActorPoolStrategy(size=resources.workers),
        num_cpus=resources.cpus_per_worker,
        memory=resources.memory_mb * 2**20 if resources.memory_mb else None,
        max_restarts=resources.restarts,  # a crashed actor: its file quarantined, then retried
        max_task_retries=resources.restarts,
    )


def arrow_dataset(rows: pa.Table, blocks: int) -> ray.data.Dataset:
    """`ray.data.from_arrow(rows, override_num_blocks=blocks)` with the blocks' metadata computed
    here, as `ray.data.from_items` does. from_arrow starts one metadata task per block, each
    asking for a whole CPU; on a machine whose CPUs the training workers and the other workers'
    decode actors already hold (2 workers on 2 cores), those tasks never ran: rank 1's stream
    waited forever behind rank 0's, and so did the all-reduce. Written against Ray Data's
    logical plan because no public constructor takes Arrow blocks without those tasks."""
    from ray.data._internal.logical.interfaces import LogicalPlan
    from ray.data._internal.logical.operators.from_operators import FromArrow
    from ray.data._internal.stats import DatasetStats
    from ray.data.block import BlockExecStats, BlockMetadataWithSchema
    from ray.data.context import DataContext
    from ray.data.dataset import MaterializedDataset

    size = -(-rows.num_rows // max(blocks, 1))
    tables = [rows.slice(i, size) for i in range(0, rows.num_rows, size)] or [rows]
    metadata = [
        BlockMetadataWithSchema.from_block(t, block_exec_stats=BlockExecStats.builder().build())
        for t in tables
    ]
    stats = DatasetStats(metadata={"FromArrow": metadata}, parent=None)
    context = DataContext.get_current().copy()
    if PauseWhileBackpressured not in context.custom_execution_callback_classes:
        context.custom_execution_callback_classes.append(PauseWhileBackpressured)
    plan = LogicalPlan(FromArrow([ray.put(t) for t in tables], metadata), context)
    return MaterializedDataset(plan, context, stats)


def iter_batches(
    data: EpochData, batch_size: int, *, drop_last: bool = True
) -> Iterator[dict[str, torch.Tensor]]:
    """Fixed-shape torch batches: v1/v2 uint8 (B, T, 3, H, W); a1/a2 float32 (B, 1, F, S), or
    with `augment_on: device` waveforms (B, samples) and each view's draws `<view>_aug`; and
    `index` (B,), the epoch-row numbers of the samples."""
    yield from data.dataset.iter_torch_batches(
        batch_size=batch_size, drop_last=drop_last, device="cpu"
    )


def device_batches(
    data: EpochData, batch_size: int, *, device: torch.device, drop_last: bool = True
) -> Iterator[dict[str, torch.Tensor]]:
    """The training loop's batches on `device`: collated two batches ahead of the step by Ray's
    prefetch threads and, on a GPU, pinned and copied there without blocking; full batches only
    (with `drop_last`)."""
    return iter(
        data.dataset.iter_torch_batches(
            batch_size=batch_size,
            drop_last=drop_last,
            prefetch_batches=2,
            device=device,
            pin_memory=device.type == "cuda",
        )
    )


class EpochBatcher:
    """Cuts a stream of row batches from consecutive epochs back into each epoch's full batches.

    `source` yields batches whose rows carry `index`, `epoch` and `ok` (False: failed to
    decode), in any order across epochs; `sizes` maps each epoch, in the order they run, to how
    many rows of it the source holds. `batches(epoch)` yields that epoch's full batches of rows
    that decoded and ends once all its rows have come through (a partial last batch is dropped,
    as `drop_last` does); rows of an epoch already ended are dropped, rows of a later epoch that
    come early wait for it. `skipped[epoch]` counts its rows that failed to decode.
    """

    def __init__(
        self,
        source: Iterator[dict[str, torch.Tensor]],
        sizes: Mapping[int, int],
        batch_size: int,
    ) -> None:
        self.sizes = dict(sizes)
        self.batch_size = batch_size
        self.skipped = dict.fromkeys(self.sizes, 0)
        self._source = source
        self._seen = dict.fromkeys(self.sizes, 0)
        self._waiting: dict[int, list[dict[str, torch.Tensor]]] = {e: [] for e in self.sizes}
        self._current = min(self.sizes)

    def batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """The full batches of `epoch` (one of `sizes`, not before the current one)."""
        if epoch not in self.sizes or epoch < self._current:
            raise ValueError(f"epoch {epoch} is not ahead in this stream ({list(self.sizes)})")
        self._current = epoch
        for earlier in [e for e in self._waiting if e < epoch]:
            self._waiting[earlier] = []
        while True:
            if _rows(self._waiting[epoch]) >= self.batch_size:
                yield self._take(epoch)
            elif self._seen[epoch] >= self.sizes[epoch]:
                self._waiting[epoch] = []
                return
            else:
                raw = next(self._source, None)
                if raw is None:
                    return
                self._sort(raw)

    def _sort(self, raw: dict[str, torch.Tensor]) -> None:
        """File a batch's rows under their epochs; count the failed ones and drop them."""
        raw = dict(raw)
        epochs, ok = raw.pop("epoch").cpu(), raw.pop("ok").cpu().bool()
        for epoch in epochs.unique().tolist():
            mine = epochs == epoch
            self._seen[epoch] += int(mine.sum())
            self.skipped[epoch] += int((mine & ~ok).sum())
            keep = mine & ok
            if epoch < self._current or not bool(keep.any()):
                continue
            if bool(keep.all()):
                self._waiting[epoch].append(raw)
            else:
                where = keep.nonzero().squeeze(1).to(raw["index"].device)
                self._waiting[epoch].append({k: v.index_select(0, where) for k, v in raw.items()})

    def _take(self, epoch: int) -> dict[str, torch.Tensor]:
        """The next `batch_size` rows waiting in `epoch` (the batch as it came when it fits)."""
        waiting, size = self._waiting[epoch], self.batch_size
        if _rows(waiting[:1]) == size:
            return waiting.pop(0)
        merged = {k: torch.cat([part[k] for part in waiting]) for k in waiting[0]}
        rest = {k: v[size:] for k, v in merged.items()}
        self._waiting[epoch] = [rest] if _rows([rest]) else []
        return {k: v[:size] for k, v in merged.items()}


class EpochStream(EpochBatcher):
    """Consecutive epochs decoded by one Ray Data pipeline, cut back into each epoch's batches.

    `shards` maps each epoch, in the order they run, to the rows this worker trains on in it
    (from `epoch_order`); the decode actors start once for all of them. `data` is the pipeline.
    """

    def __init__(
        self,
        shards: Mapping[int, pa.Table],
        *,
        spec: ClipSpec,
        seed: int,
        resources: DecodeResources,
        failure_log: FailureLogRef,
        batch_size: int,
        device: torch.device,
    ) -> None:
        self.data = epoch_dataset(
            pa.concat_tables(list(shards.values())),
            spec=spec,
            seed=seed,
            resources=resources,
            failure_log=failure_log,
            keep_failed=True,
        )
        source = device_batches(self.data, batch_size, device=device, drop_last=False)
        super().__init__(source, {e: rows.num_rows for e, rows in shards.items()}, batch_size)


def _rows(parts: list[dict[str, torch.Tensor]]) -> int:
    return sum(len(part["index"]) for part in parts)
