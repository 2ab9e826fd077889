"""From a manifest to fixed-shape pretraining batches through Ray Data (the Ray-free parts, the
epoch order and the torch Dataset, are in `epochs` and re-exported here).

Only manifest rows (paths and probed facts) enter Ray's object store; each decode actor opens the
files itself. A sample that fails to decode is skipped and recorded, with its path and reason, in a
named FailureLog actor; `EpochData.failures()` drains it at the end of the epoch.
Legend of batch arrays: B samples, T frames, F mel bins, S spectrogram frames.
"""

from __future__ import annotations

import logging
import os
import resource
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import ray
import torch

from crisscross.datasets.decode import DecodeError
from crisscross.datasets.epochs import (
    DecodeResources,
    PretextTorchDataset,
    collate_skipping_failures,
    epoch_order,
    usable_rows,
)
from crisscross.datasets.manifest import Manifest
from crisscross.datasets.samples import ClipSpec, PretextSample

log = logging.getLogger(__name__)
NAMESPACE = "crisscross"
__all__ = [  # the Ray-free names are re-exported: callers import the data path from one place
    "DecodeResources",
    "EpochData",
    "Failure",
    "FailureLogRef",
    "PretextTorchDataset",
    "collate_skipping_failures",
    "device_batches",
    "epoch_dataset",
    "epoch_order",
    "failure_summary",
    "iter_batches",
    "pretext_epoch",
    "usable_rows",
]


@dataclass(frozen=True)
class Failure:
    path: str
    reason: str
    epoch: int


def failure_summary(failures: list[Failure], *, epoch: int, shown: int = 5) -> str:
    """One line for the end of an epoch: how many samples were skipped, which, and why."""
    if not failures:
        return f"epoch {epoch}: no sample skipped"
    files = "; ".join(f"{f.path} ({f.reason})" for f in failures[:shown])
    more = f"; and {len(failures) - shown} more" if len(failures) > shown else ""
    return f"epoch {epoch}: {len(failures)} sample(s) skipped, failing to decode: {files}{more}"


@ray.remote(num_cpus=0)
class FailureLog:
    """Collects the samples that failed to decode, and each decode actor's peak RSS."""

    def __init__(self) -> None:
        self.items: list[Failure] = []
        self.peak_rss: dict[int, float] = {}

    def record(self, failure: Failure) -> None:
        self.items.append(failure)

    def note_rss(self, pid: int, mib: float) -> None:
        self.peak_rss[pid] = max(mib, self.peak_rss.get(pid, 0.0))

    def drain(self) -> list[Failure]:
        items, self.items = self.items, []
        return items

    def rss(self) -> dict[int, float]:
        return dict(self.peak_rss)


@dataclass(frozen=True)
class FailureLogRef:
    """The owning handle of a run's FailureLog and the name decode actors look it up by.

    Keep it for the run: a named actor lives only while its creator's handle does.
    """

    name: str
    handle: ray.actor.ActorHandle

    @classmethod
    def create(cls, name: str | None = None) -> FailureLogRef:
        name = name or f"crisscross-failures-{uuid.uuid4().hex[:12]}"
        handle = FailureLog.options(name=name, namespace=NAMESPACE).remote()
        ray.get(handle.__ray_ready__.remote())  # registered before any decode actor looks it up
        return cls(name, handle)

    def drain(self) -> list[Failure]:
        """The failures recorded since the last drain."""
        return ray.get(self.handle.drain.remote())

    def peak_rss_mib(self) -> dict[int, float]:
        """Peak resident memory of each decode actor process so far, by pid."""
        return ray.get(self.handle.rss.remote())


class PretextDecoder:
    """Ray Data callable class: a batch of manifest rows -> a batch of decoded, augmented views."""

    def __init__(self, spec: ClipSpec, seed: int, failure_log: str | None) -> None:
        torch.set_num_threads(1)  # one decode actor per CPU: no oversubscription
        self.sample = PretextSample(spec, seed=seed)
        self.failures = ray.get_actor(failure_log, namespace=NAMESPACE) if failure_log else None

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        empty = self.sample.empty()  # every array a sample holds, at zero samples
        views: dict[str, list[np.ndarray]] = {name: [] for name in empty}
        kept: list[int] = []
        for i in range(len(batch["path"])):
            row = {key: batch[key][i] for key in batch}
            try:
                out = self.sample(row, epoch=int(row["epoch"]), index=int(row["index"]))
            except (DecodeError, ValueError) as exc:
                self._record(Failure(str(row["path"]), str(exc), int(row["epoch"])))
                continue
            for name in views:
                views[name].append(out[name])
            kept.append(int(row["index"]))
        if self.failures is not None:  # ru_maxrss is in KiB on Linux
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self.failures.note_rss.remote(os.getpid(), peak)
        out = {name: np.stack(arrays) if arrays else empty[name] for name, arrays in views.items()}
        return out | {"index": np.asarray(kept, np.int64)}  # which rows a batch holds (resume)

    def _record(self, failure: Failure) -> None:
        log.warning("skipped %s: %s", failure.path, failure.reason)
        if self.failures is not None:
            ray.get(
                self.failures.record.remote(failure)
            )  # synchronous: counted before the epoch ends


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
) -> EpochData:
    """The Ray Dataset decoding `rows` (from `epoch_order`, or a worker's share of them)."""
    failure_log = failure_log or FailureLogRef.create()
    blocks = max(1, -(-rows.num_rows // resources.rows_per_task))  # one block per decode task
    dataset = ray.data.from_arrow(rows, override_num_blocks=blocks).map_batches(
        PretextDecoder,
        fn_constructor_kwargs={"spec": spec, "seed": seed, "failure_log": failure_log.name},
        batch_size=resources.rows_per_task,
        compute=ray.data.ActorPoolStrategy(size=resources.workers),
        num_cpus=resources.cpus_per_worker,
        memory=resources.memory_mb * 2**20 if resources.memory_mb else None,
    )
    return EpochData(dataset, rows.num_rows, failure_log)


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
    data: EpochData, batch_size: int, *, device: torch.device
) -> Iterator[dict[str, torch.Tensor]]:
    """The training loop's batches on `device`: collated two batches ahead of the step by Ray's
    prefetch threads and, on a GPU, pinned and copied there without blocking; full batches only."""
    return iter(
        data.dataset.iter_torch_batches(
            batch_size=batch_size,
            drop_last=True,
            prefetch_batches=2,
            device=device,
            pin_memory=device.type == "cuda",
        )
    )
