"""Probing many files: in parallel, with a progress bar (files/s, ETA, counts per status so far),
and the results written as they come in Parquet parts beside the manifest, so that an
interrupted run resumes from what it had; `build_manifest` merges them and removes the parts.

Where the probes run (`on`): "local", a thread pool in this process (a laptop; probing is mostly
waiting on reads); "ray", Ray tasks of RAY_CHUNK files each on the cluster this process is
connected to (every node must reach the files: a bucket URI or a shared file system), at most
two tasks per cluster CPU in flight, results taken as they finish. The driver only writes
parts and draws the bar, so two million probes cost it little memory beyond their facts.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from tqdm import tqdm

from crisscross.datasets.fs import atomic_output, join, resolve
from crisscross.datasets.layouts.base import Requirements
from crisscross.datasets.probe import FACTS, judge, probe
from crisscross.datasets.ray_map import chunked_on_ray

log = logging.getLogger(__name__)
KEY = ("rel", "size_bytes", "mtime_ns")  # a probe stays good while these do
PART_ROWS = 2000  # probes per part file, at most
PART_SECONDS = 30.0  # a part is written at least this often while probes come in
RAY_CHUNK = 64  # files per Ray task: ~0.5 s of probing, so task overhead stays small
PLACES = ("local", "ray")
Key = tuple[str, int | None, int | None]


def parts_folder(out: str) -> str:
    """Where the parts of the manifest at `out` go while it is built."""
    return f"{out}.parts"


def _schema(full: pa.Schema, meta: dict[str, str]) -> pa.Schema:
    fields = [full.field(name) for name in (*KEY, *FACTS)]
    return pa.schema(fields, metadata={"crisscross_parts": json.dumps(meta)})


def read_parts(folder: str, meta: dict[str, str]) -> dict[Key, dict[str, Any]]:
    """The probes an interrupted build wrote under `folder`, keyed by (rel, size, mtime); parts
    of another dataset or root, or unreadable ones, are left out (and said so)."""
    fs, inner = resolve(folder)
    if fs.get_file_info(inner).type != pafs.FileType.Directory:
        return {}
    facts: dict[Key, dict[str, Any]] = {}
    for info in fs.get_file_info(pafs.FileSelector(inner)):
        if not info.base_name.endswith(".parquet"):
            continue
        try:
            table = pq.read_table(info.path, filesystem=fs)
        except (OSError, pa.ArrowInvalid) as exc:
            log.warning("ignoring the damaged part %s: %s", info.path, exc)
            continue
        found = json.loads((table.schema.metadata or {}).get(b"crisscross_parts", b"{}"))
        if found != meta:
            log.warning("ignoring %s: a part of another build (%s)", info.path, found)
            continue
        for row in table.to_pylist():
            facts[(row["rel"], row["size_bytes"], row["mtime_ns"])] = {k: row[k] for k in FACTS}
    return facts


def remove_parts(folder: str) -> None:
    """Delete the parts once the manifest that merges them is written."""
    fs, inner = resolve(folder)
    if fs.get_file_info(inner).type == pafs.FileType.Directory:
        fs.delete_dir(inner)


class PartWriter:
    """Collects probes and writes them as `part-<n>.parquet` under `folder` every PART_ROWS
    probes or PART_SECONDS seconds, and when closed (a Ctrl-C or a crash included)."""

    def __init__(self, folder: str, schema: pa.Schema) -> None:
        self.folder, self.schema = folder, schema
        self.pending: list[dict[str, Any]] = []
        self.written = time.monotonic()
        self.part = 0
        self.prefix = f"part-{os.getpid()}-{time.time_ns()}-"  # apart from earlier runs' parts

    def add(self, row: dict[str, Any], facts: dict[str, Any]) -> None:
        self.pending.append({k: row[k] for k in KEY} | facts)
        if len(self.pending) >= PART_ROWS or time.monotonic() - self.written >= PART_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            table = pa.Table.from_pylist(self.pending, schema=self.schema)
            with atomic_output(join(self.folder, f"{self.prefix}{self.part:06d}.parquet")) as out:
                pq.write_table(table, out)
            self.part += 1
            self.pending = []
        self.written = time.monotonic()


def probe_files(
    rows: list[dict[str, Any]],
    *,
    needs: Requirements,
    parts: str,
    schema: pa.Schema,
    meta: dict[str, str],
    workers: int | None = None,
    progress: bool = False,
    on: str = "local",
    verify: str = "header",
) -> list[dict[str, Any]]:
    """The probe facts of each of `rows` (with "path" and KEY), in order: those in `parts` from
    an interrupted run as they were, the others probed (`on` this machine's `workers` threads,
    or Ray tasks) and written there as they come. `progress`: a bar on stderr with the counts
    per status so far."""
    if on not in PLACES:
        raise ValueError(f"probes run on one of {', '.join(PLACES)}, not {on!r}")
    done = read_parts(parts, meta)
    facts: list[dict[str, Any] | None] = [done.get(tuple(r[k] for k in KEY)) for r in rows]
    todo = [i for i, f in enumerate(facts) if f is None]
    counts = Counter(
        judge(f | {"size_bytes": r["size_bytes"]}, needs)[0]
        for r, f in zip(rows, facts, strict=True)
        if f is not None
    )
    if len(todo) < len(rows):
        log.info("resuming: %d probes from %s", len(rows) - len(todo), parts)
    bar = tqdm(total=len(rows), initial=len(rows) - len(todo), unit="file", desc="probing",
               disable=not progress, dynamic_ncols=True, smoothing=0.05)  # fmt: skip
    writer = PartWriter(parts, _schema(schema, meta))
    shown = 0.0
    try:
        probed = (
            _probed_on_ray(rows, todo, verify)
            if on == "ray"
            else _probed(rows, todo, workers, verify)
        )
        for i, found in probed:
            facts[i] = found
            writer.add(rows[i], found)
            counts[judge(found | {"size_bytes": rows[i]["size_bytes"]}, needs)[0]] += 1
            bar.update(1)
            if time.monotonic() - shown >= 0.5:
                shown = time.monotonic()
                bar.set_postfix_str(_counts(counts), refresh=False)
    finally:
        writer.flush()
        bar.set_postfix_str(_counts(counts), refresh=False)
        bar.close()
    return facts  # type: ignore[return-value]


def _counts(counts: Counter[str]) -> str:
    return " ".join(f"{status} {n}" for status, n in counts.most_common())


def _probed(
    rows: list[dict[str, Any]], todo: list[int], workers: int | None, verify: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, facts) of each of `todo`, in order; leaving early cancels the probes not begun."""

    def work(i: int) -> dict[str, Any]:
        return _safe_probe(rows[i]["path"], rows[i]["size_bytes"], verify)

    with ThreadPoolExecutor(max_workers=workers or min(32, 4 * (os.cpu_count() or 1))) as pool:
        yield from zip(todo, pool.map(work, todo), strict=True)


def _safe_probe(path: str, size: int | None, verify: str = "header") -> dict[str, Any]:
    """`probe`, with any exception it lets through (a decoder bug, a FIFO's error) recorded as
    the file's error: one file never ends a build."""
    try:
        return probe(path, size, verify) if verify != "header" else probe(path, size)
    except Exception as exc:
        return dict(FACTS) | {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}


def _probe_chunk(items: list[tuple[str, int | None]], verify: str) -> list[dict[str, Any]]:
    """One Ray task's probes: the facts of each (path, size), in order."""
    return [_safe_probe(path, size, verify) for path, size in items]


def _probed_on_ray(
    rows: list[dict[str, Any]], todo: list[int], verify: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, facts) of each of `todo` as Ray tasks finish; leaving early cancels the rest."""
    items = [(rows[i]["path"], rows[i]["size_bytes"]) for i in todo]
    for k, facts in chunked_on_ray(_probe_chunk, items, chunk=RAY_CHUNK, args=(verify,)):
        yield todo[k], facts
