"""`crisscross bench scale`: the steps that touch every row, on a synthetic AudioSet-size
manifest without media, each with its seconds and peak memory (RSS high-water mark above the
step's start; the per-worker steps in a fresh process that holds only the manifest, as a
training worker does).

Driver steps: list (a stubbed file system: the AudioSet layout over generated file names and a
segments CSV naming 15 % more videos than are on disk), rows (the manifest's rows, probe facts
generated), judge, write (Parquet), read (back, usable rows). Per-worker steps (one rank of
`workers`): epoch order (its share only), save (the data position at 60 % of the epoch, 0.2 %
of the rows skipped, every worker's cursor merged), resume (its share of what is left), and
dataset: the Ray Dataset the worker iterates, built from its epoch's share as `EpochStream`
builds it (one block per decode task, each put in Ray's object store; `rows_per_task` unset: as
many rows a block as `DecodeResources.task_rows` gives, the pretraining's default), then
`DATASET_BLOCKS` of its blocks streamed through a stub decoder that opens no file (a local Ray
of 2 CPUs in the worker's process; the peak counts the object store's pages this process wrote).
"""

from __future__ import annotations

import gc
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from crisscross.datasets.epochs import epoch_rows, epoch_table, usable_rows
from crisscross.datasets.fs import FileStat, Tree
from crisscross.datasets.layouts.audioset import AudioSet
from crisscross.datasets.manifest import SCHEMA, Manifest, _row, read_manifest, write_manifest
from crisscross.datasets.positions import DataPosition, ShardProgress
from crisscross.datasets.probe import FACTS, judge, usable_seconds
from crisscross.datasets.samples import ClipSpec

GOAL_SECONDS = 60.0  # any step, on a 2-core machine
GOAL_WORKER_MIB = 100.0  # epoch order and data position, per training worker
GOAL_POSITION_BYTES = 1_000_000  # the data position a checkpoint stores
WORKER_STEPS = ("epoch order", "save", "resume")  # held to the per-worker memory goal
DATASET_BLOCKS = 400  # blocks streamed through the stub decoder
AVAILABLE = 0.85  # the share of a segments CSV's videos a typical crawl has
# Memory freed goes back to the system in the worker process, so that a later step's peak is
# not hidden by an earlier step's pages reused: glibc maps every block over 64 KiB on its own
# (no dynamic threshold), and Arrow allocates through malloc.
WORKER_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "ARROW_DEFAULT_MEMORY_POOL": "system"}


class StubTree(Tree):
    """A Tree whose listing is generated: `rows` segments of AudioSet's unbalanced_train split,
    of which the first AVAILABLE are on disk (<YTID>_30000.mp4)."""

    def __init__(self, rows: int) -> None:
        self.root = "stub://audioset"
        on_disk = int(rows * AVAILABLE)
        self._csv = "# synthetic\n" + "".join(
            f'{i:011d}, 30.000, 40.000, "/m/0{i % 527:03d}"\n' for i in range(rows)
        )
        self.files = {f"unbalanced_train/{i:011d}_30000.mp4": FileStat(2_000_000 + i, i)
                      for i in range(on_disk)}  # fmt: skip
        self.files["unbalanced_train_segments.csv"] = FileStat(len(self._csv), 0)
        self.special: set[str] = set()
        self._lower = None

    def read_text(self, rel: str) -> str:
        return self._csv


def _facts(i: int) -> dict[str, Any]:
    """Generated probe facts: 1 in 100 too short, 1 in 200 unreadable, 1 in 300 silent."""
    seconds = 1.0 if i % 100 == 7 else 10.0
    audio = i % 300 != 11
    return dict(FACTS) | {
        "duration": seconds, "video_seconds": seconds, "audio_seconds": seconds if audio else None,
        "video_codec": "h264", "width": 340, "height": 256, "fps": 25.0, "frames": 250,
        "rotation": 0, "has_video": True, "has_audio": audio,
        "audio_codec": "aac" if audio else None, "sample_rate": 44100 if audio else None,
        "channels": 2 if audio else None,
        "error": "InvalidDataError: Invalid data found" if i % 200 == 3 else None,
    }  # fmt: skip


def rss_mib(field: str) -> float:
    """VmRSS or VmHWM (the peak since the last reset) of this process, MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def measured(fn: Callable[..., Any], *args: Any) -> tuple[Any, dict[str, float]]:
    """fn(*args)'s result and {"seconds", "peak_mib"}: RSS high-water mark above the start."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to VmRSS (Linux 4.0 on)
    start = rss_mib("VmRSS")
    t0 = time.perf_counter()
    out = fn(*args)
    seconds = time.perf_counter() - t0
    return out, {"seconds": seconds, "peak_mib": max(rss_mib("VmHWM") - start, 0.0)}


def _manifest_rows(tree: Tree, entries: list) -> list[dict[str, Any]]:
    out = [_row(e, tree.uri(e.rel), None, None) for e in entries]
    for i, row in enumerate(out):
        if row["status"] is None:
            row.update(_facts(i))
    return out


def _judge(rows: list[dict[str, Any]]) -> None:
    needs = AudioSet.requirements
    for row in rows:
        if row["status"] is None:
            row["status"], row["reason"] = judge(row, needs)
            row["duration"] = usable_seconds(row, needs)


def _write(rows: list[dict[str, Any]], path: str) -> None:
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    write_manifest(Manifest(table, "audioset", "stub://audioset", [], 0.0), path)


def _read(path: str) -> pa.Table:
    return usable_rows(read_manifest(path), ClipSpec())


def driver_steps(rows: int, manifest_path: str) -> dict[str, dict[str, float]]:
    """The one-time steps on the driver; writes the manifest to `manifest_path`."""
    steps: dict[str, dict[str, float]] = {}
    tree, steps["list"] = measured(StubTree, rows)
    listing, more = measured(AudioSet().scan, tree)
    steps["list"] = {k: steps["list"][k] + more[k] for k in more}
    table_rows, steps["rows"] = measured(_manifest_rows, tree, listing.entries)
    del tree, listing
    _, steps["judge"] = measured(_judge, table_rows)
    _, steps["write"] = measured(_write, table_rows, manifest_path)
    del table_rows
    usable, steps["read"] = measured(_read, manifest_path)
    steps["read"]["usable_rows"] = usable.num_rows
    return steps


def worker_steps(
    manifest_path: str,
    *,
    workers: int,
    repeats: int,
    batch: int,
    rows_per_task: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Rank 0's per-epoch steps, in this process (run it in a fresh one: `_worker_main`)."""
    table = epoch_table(read_manifest(manifest_path), ClipSpec())  # as the trainer holds it
    total, per_worker = table.num_rows * repeats, batch // workers

    def share(position: DataPosition, rank: int) -> pa.Table:
        mine = position.share(total, rank=rank, world=workers)
        mine = mine[: len(mine) // per_worker * per_worker]
        return epoch_rows(table, mine, seed=seed, epoch=0)

    shard, steps = {}, {}
    shard[0], steps["epoch order"] = measured(lambda: share(DataPosition(), 0))
    steps["epoch order"] |= {"rows": shard[0].num_rows, "table_mib": table.nbytes / 2**20}
    # every rank 60 % through its share, 1 row in 500 skipped (failed to decode)
    rng = np.random.default_rng(seed)
    progress = []
    for rank in range(workers):
        mine = DataPosition().share(total, rank=rank, world=workers)
        tracked = ShardProgress(mine)
        used = mine[: int(len(mine) * 0.6)]
        tracked.mark(used[rng.random(len(used)) >= 0.002])
        progress.append(tracked)

    (position, stored), steps["save"] = measured(_save, progress, total)
    steps["save"] |= {"position_bytes": stored, "trained_rows": position.count,
                      "listed_ids_bytes": 8 * position.count}  # fmt: skip
    del shard, progress  # a resumed worker is a new process: it holds neither
    left, steps["resume"] = measured(lambda: share(position, 0))
    steps["resume"]["rows"] = left.num_rows
    del left
    shard = shard_rows(table, total, workers, per_worker, seed)
    steps["dataset"] = _dataset_step(shard, rows_per_task)
    return {"steps": steps, "positions": total}


def shard_rows(table: pa.Table, total: int, workers: int, per_worker: int, seed: int) -> pa.Table:
    """Rank 0's rows of epoch 0: what its first pipeline streams (`stream_plan` puts at least
    one epoch in a pipeline, more only while they fit in STREAM_ROWS)."""
    mine = DataPosition().share(total, rank=0, world=workers)
    mine = mine[: len(mine) // per_worker * per_worker]
    return epoch_rows(table, mine, seed=seed, epoch=0)


class StubDecoder:
    """Stands in for PretextDecoder (an actor pool, one task a block): opens no file."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"index": np.asarray(batch["index"], np.int64)}


def _dataset_step(shard: pa.Table, rows_per_task: int | None) -> dict[str, float]:
    """Build the worker's dataset over `shard` (timed and measured), then stream DATASET_BLOCKS
    of its blocks through a stub decoder (timed apart: Ray Data's cost per decode task)."""
    import ray

    from crisscross.datasets.pipeline import DecodeResources, arrow_dataset

    rows_per_task = DecodeResources(rows_per_task=rows_per_task).task_rows(shard.num_rows)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        blocks = -(-shard.num_rows // rows_per_task)
        dataset, figures = measured(arrow_dataset, shard, blocks)
        head = min(DATASET_BLOCKS, blocks)
        stream = arrow_dataset(shard.slice(0, head * rows_per_task), head).map_batches(
            StubDecoder,
            batch_size=rows_per_task,
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=1,
        )
        t0 = time.perf_counter()
        seen = sum(len(b["index"]) for b in stream.iter_batches(batch_size=None))
        streamed = time.perf_counter() - t0
        del dataset
    finally:
        ray.shutdown()
    return figures | {
        "rows": shard.num_rows,
        "blocks": blocks,
        "rows_per_task": rows_per_task,
        "streamed_blocks": head,
        "streamed_rows": seen,
        "ms_per_block": 1000 * streamed / max(head, 1),
    }


def _save(progress: list[ShardProgress], total: int) -> tuple[DataPosition, int]:
    """Every worker's cursor merged into the epoch's position, and its size in a checkpoint."""
    position = DataPosition().advanced([p.cursor() for p in progress], total=total)
    return position, _stored_bytes(position)


def _stored_bytes(position: DataPosition) -> int:
    """The bytes torch.save writes for the checkpoint's data position."""
    import torch

    buffer = io.BytesIO()
    state = position.state()
    torch.save({"frontier": state["frontier"]} | {k: torch.from_numpy(state[k])
               for k in ("holes", "extras")}, buffer)  # fmt: skip
    return buffer.getbuffer().nbytes


def _worker_main() -> None:
    args = json.loads(sys.argv[1])
    print(json.dumps(worker_steps(args.pop("manifest"), **args)))


def run_scale(
    *,
    rows: int,
    workers: int = 16,
    repeats: int = 5,
    batch: int = 2048,
    rows_per_task: int | None = None,
) -> dict:
    """Every step's figures, the goals and whether each is met (see the module's docstring)."""
    with tempfile.TemporaryDirectory(prefix="crisscross-scale-") as folder:
        manifest_path = str(Path(folder) / "manifest.parquet")
        steps = driver_steps(rows, manifest_path)
        args = {"manifest": manifest_path, "workers": workers, "repeats": repeats, "batch": batch}
        args["rows_per_task"] = rows_per_task
        done = subprocess.run(
            [sys.executable, "-c", "from crisscross.bench.scale import _worker_main;"
             "_worker_main()", json.dumps(args)],
            capture_output=True, text=True, check=False, env=os.environ | WORKER_ENV,
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"the worker steps failed: {done.stderr.strip()[-2000:]}")
        worker = json.loads(done.stdout.splitlines()[-1])
    steps |= worker["steps"]
    position_bytes = steps["save"]["position_bytes"]
    worker_mib = max(steps[s]["peak_mib"] for s in WORKER_STEPS)
    return {
        "rows": rows, "workers": workers, "repeats": repeats, "batch": batch,
        "rows_per_task": rows_per_task,
        "positions": worker["positions"], "steps": steps,
        "goals": {
            "step_seconds": {"goal": GOAL_SECONDS,
                             "worst": max(s["seconds"] for s in steps.values())},
            "worker_mib": {"goal": GOAL_WORKER_MIB, "worst": worker_mib},
            "position_bytes": {"goal": GOAL_POSITION_BYTES, "worst": position_bytes},
        },
    } | {"met": _met(steps, worker_mib, position_bytes)}  # fmt: skip


def _met(steps: dict[str, dict[str, float]], worker_mib: float, position_bytes: int) -> bool:
    return (
        all(s["seconds"] <= GOAL_SECONDS for s in steps.values())
        and worker_mib <= GOAL_WORKER_MIB
        and position_bytes < GOAL_POSITION_BYTES
    )


def scale_table(results: dict[str, Any]) -> str:
    """The figures beside their goals, one line a step."""
    lines = [
        f"{results['rows']:,} manifest rows, {results['workers']} workers, "
        f"{results['repeats']} repeats ({results['positions']:,} positions an epoch)",
        "| step | s | peak MiB | goal | verdict |",
        "|---|---|---|---|---|",
    ]
    for name, step in results["steps"].items():
        worker = name in WORKER_STEPS
        goal = f"<= {GOAL_SECONDS:.0f} s" + (f", <= {GOAL_WORKER_MIB:.0f} MiB" if worker else "")
        ok = step["seconds"] <= GOAL_SECONDS and (not worker or step["peak_mib"] <= GOAL_WORKER_MIB)
        where = " (per worker)" if worker or name == "dataset" else ""
        lines.append(
            f"| {name}{where} | {step['seconds']:.2f} | "
            f"{step['peak_mib']:.1f} | {goal} | {'met' if ok else 'NOT met'} |"
        )
    data = results["steps"].get("dataset")
    if data:
        lines.append(
            f"dataset: {data['rows']:,} rows in {data['blocks']:,} blocks of "
            f"{data['rows_per_task']} built in "
            f"{data['seconds']:.2f} s; a stub decoder streamed {data['streamed_blocks']} of them "
            f"at {data['ms_per_block']:.1f} ms a block (Ray Data's own cost a decode task: "
            f"{data['blocks'] * data['ms_per_block'] / 1000:,.0f} s for the worker's stream)"
        )
    size = results["steps"]["save"]["position_bytes"]
    listed = results["steps"]["save"]["listed_ids_bytes"]
    lines.append(
        f"checkpoint data position: {size:,} bytes (goal < {GOAL_POSITION_BYTES:,}: "
        f"{'met' if size < GOAL_POSITION_BYTES else 'NOT met'}; the trained ids listed: "
        f"{listed:,} bytes)"
    )
    return "\n".join(lines)
