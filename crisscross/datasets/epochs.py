"""The Ray-free half of the data path: epoch order, decode resources, and the per-sample
function as a torch Dataset (used where Ray is not, e.g. a GPU box with torch alone).

Legend of batch arrays: B samples, T frames, F mel bins, S spectrogram frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from crisscross.datasets.decode import DecodeError
from crisscross.datasets.manifest import Manifest
from crisscross.datasets.samples import ClipSpec, PretextSample
from crisscross.datasets.sampling import required_seconds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeResources:
    """How the decode stage runs: actors, CPUs and memory per actor, rows per task."""

    workers: int = 2
    cpus_per_worker: float = 1.0
    memory_mb: int | None = None
    rows_per_task: int = 8


def usable_rows(manifest: Manifest, spec: ClipSpec) -> pa.Table:
    """Rows with status ok that are long enough for the sampling mode."""
    need = required_seconds(
        spec.sampling,
        audio_seconds=spec.audio_seconds,
        video_seconds=spec.video_seconds,
        short_videos=spec.short_videos,
    )
    table = manifest.usable()
    return table.filter(pc.greater_equal(table.column("duration"), need - 1e-6))


def epoch_order(table: pa.Table, *, seed: int, epoch: int, repeats: int = 1) -> pa.Table:
    """The epoch's rows, each `repeats` times, shuffled by (seed, epoch), numbered by `index`."""
    order = np.tile(np.arange(table.num_rows), repeats)
    np.random.default_rng([seed, epoch]).shuffle(order)
    rows = table.select(
        ["path", "duration", *(["audio_path"] if "audio_path" in table.column_names else [])]
    )
    rows = rows.take(pa.array(order))
    rows = rows.append_column("index", pa.array(np.arange(len(order)), pa.int64()))
    return rows.append_column("epoch", pa.array(np.full(len(order), epoch), pa.int64()))


class PretextTorchDataset(torch.utils.data.Dataset):
    """The same per-sample function as a map-style torch Dataset (debugging, benchmark baseline).

    A sample that fails gives None; `collate_skipping_failures` drops it and counts it.
    """

    def __init__(self, rows: pa.Table, sample: PretextSample) -> None:
        self.rows = rows.to_pylist()
        self.sample = sample

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, np.ndarray] | None:
        row = self.rows[i]
        try:
            return self.sample(row, epoch=int(row["epoch"]), index=int(row["index"]))
        except (DecodeError, ValueError) as exc:
            log.warning("skipped %s: %s", row["path"], exc)
            return None


def collate_skipping_failures(items: list[dict[str, np.ndarray] | None]) -> dict[str, torch.Tensor]:
    """Stack the samples that decoded (every key they hold); `failed` counts those that did not."""
    kept = [item for item in items if item is not None]
    batch = (
        {key: torch.from_numpy(np.stack([item[key] for item in kept])) for key in kept[0]}
        if kept
        else {}
    )
    batch["failed"] = torch.tensor(len(items) - len(kept))
    return batch
