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


TASK_ROWS = 8  # samples per decode task by default: a small task starts the stream soonest
MAX_TASKS = 8192  # decode tasks a worker's pipeline holds at most when rows_per_task is unset


@dataclass(frozen=True)
class DecodeResources:
    """How the decode stage runs: actors, CPUs and memory per actor, rows per task, and how
    often a crashed actor is restarted (its task retried) before the pipeline fails.

    `rows_per_task` unset: TASK_ROWS, or more where a pipeline's rows (a worker's share of one
    epoch, or of several consecutive ones: `EpochStream`) would need over MAX_TASKS tasks. Each
    task is one object put in Ray's object store (about 1.3 ms) and about 25 ms of Ray Data's
    own time (`crisscross bench scale`, README "AudioSet scale"): a worker's share of an
    AudioSet epoch in tasks of 8 took 89 s to build and spent about 25 minutes of the epoch on
    Ray Data's overhead. A task's size changes nothing a sample holds (each is seeded by its
    row's epoch and position)."""

    workers: int = 2
    cpus_per_worker: float = 1.0
    memory_mb: int | None = None
    rows_per_task: int | None = None
    restarts: int = 4

    def task_rows(self, rows: int) -> int:
        """Samples per decode task for a pipeline of `rows` rows."""
        if self.rows_per_task is not None:
            return self.rows_per_task
        return max(TASK_ROWS, -(-rows // MAX_TASKS))


def failure_reason(exc: Exception) -> str:
    """Why a sample was skipped, in one line: a DecodeError's own message (it names the file
    and the cause), any other exception's type and message."""
    text = str(exc) if isinstance(exc, DecodeError) else f"{type(exc).__name__}: {exc}"
    return (text.strip().splitlines() or [type(exc).__name__])[0][:500]


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


ORDER_COLUMNS = ("path", "duration", "audio_path")  # what an epoch's rows carry, if present


def epoch_table(manifest: Manifest, spec: ClipSpec) -> pa.Table:
    """`usable_rows` with only ORDER_COLUMNS, in one chunk: what a training worker holds for
    the run (not the whole manifest); a take from one chunk copies only the rows taken, where
    a take from several first joins them (the whole path column, every epoch)."""
    table = usable_rows(manifest, spec)
    return table.select([c for c in ORDER_COLUMNS if c in table.column_names]).combine_chunks()


def epoch_rows_at(positions: np.ndarray, *, rows: int, seed: int, epoch: int) -> np.ndarray:
    """The table rows at `positions` (sorted int64) of the epoch's order of `rows` rows, each
    repeat a pass over all of them: position p is row perm_k[p % rows] with k = p // rows and
    perm_k the seeded permutation of (seed, epoch, k). A worker asks for its share only and
    holds one repeat's permutation at a time (int32: 4 bytes a row)."""
    positions = np.asarray(positions, np.int64)
    out = np.empty(len(positions), np.int64)
    if not len(positions):
        return out
    for k in range(int(positions[0]) // rows, int(positions[-1]) // rows + 1):
        lo, hi = np.searchsorted(positions, [k * rows, (k + 1) * rows])
        if lo < hi:
            perm = np.arange(rows, dtype=np.int32)
            np.random.default_rng([seed, epoch, k]).shuffle(perm)
            out[lo:hi] = perm[positions[lo:hi] - k * rows]
    return out


def epoch_rows(table: pa.Table, positions: np.ndarray, *, seed: int, epoch: int) -> pa.Table:
    """The rows at `positions` of the epoch's order (`epoch_rows_at`), numbered by `index`
    (their positions) and marked with `epoch`."""
    rows = table.select([c for c in ORDER_COLUMNS if c in table.column_names])
    at = epoch_rows_at(positions, rows=table.num_rows, seed=seed, epoch=epoch)
    rows = rows.take(pa.array(at))
    rows = rows.append_column("index", pa.array(np.asarray(positions, np.int64), pa.int64()))
    return rows.append_column("epoch", pa.array(np.full(len(at), epoch), pa.int64()))


def epoch_order(table: pa.Table, *, seed: int, epoch: int, repeats: int = 1) -> pa.Table:
    """The epoch's rows, each `repeats` times, shuffled by (seed, epoch), numbered by `index`
    (the whole order; a training worker builds its share with `epoch_rows`)."""
    total = table.num_rows * repeats
    return epoch_rows(table, np.arange(total, dtype=np.int64), seed=seed, epoch=epoch)


class PretextTorchDataset(torch.utils.data.Dataset):
    """The same per-sample function as a map-style torch Dataset (debugging, benchmark baseline).

    A sample that fails, by any exception (a damaged or missing file, a decoder's RuntimeError,
    a MemoryError), gives None; `collate_skipping_failures` drops it and counts it.
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
        except Exception as exc:  # one poison file must not stop the epoch: logged, skipped
            log.warning("skipped %s: %s", row["path"], failure_reason(exc))
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
