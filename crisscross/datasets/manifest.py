"""Manifests: every file of a dataset with its label, split, media facts and a status, in Parquet.

Training and evaluation read the manifest, never the directory. A manifest is rebuilt
incrementally: files whose size and modification time did not change keep their probe.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crisscross.datasets.fs import Tree, atomic_output, join, resolve
from crisscross.datasets.layouts import create_layout
from crisscross.datasets.layouts.base import Entry
from crisscross.datasets.probe import FACTS, judge, usable_seconds
from crisscross.datasets.probe_run import parts_folder, probe_files, remove_parts

log = logging.getLogger(__name__)
STATUSES = ("ok", "no_audio", "too_short", "unreadable", "missing_on_disk", "unlisted")
SCHEMA = pa.schema(
    [
        ("rel", pa.string()),
        ("path", pa.string()),
        ("label", pa.int32()),
        ("label_name", pa.string()),
        ("split", pa.string()),
        ("fold", pa.int32()),
        ("fold1", pa.string()),
        ("fold2", pa.string()),
        ("fold3", pa.string()),
        ("size_bytes", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("duration", pa.float64()),  # seconds inside every stream the dataset needs
        ("video_seconds", pa.float64()),  # where the video stream ends
        ("audio_seconds", pa.float64()),  # where the audio stream ends
        ("video_codec", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("fps", pa.float64()),
        ("frames", pa.int64()),
        ("rotation", pa.int32()),
        ("has_video", pa.bool_()),
        ("has_audio", pa.bool_()),
        ("audio_codec", pa.string()),
        ("sample_rate", pa.int32()),
        ("channels", pa.int32()),
        ("error", pa.string()),
        ("status", pa.string()),
        ("reason", pa.string()),
        # prepared copies only: the 16 kHz mono int16 audio, and the original file
        ("audio_path", pa.string()),
        ("source_path", pa.string()),
    ]
)


@dataclass(frozen=True)
class Manifest:
    """A manifest table with the dataset it describes."""

    table: pa.Table
    dataset: str
    root: str
    classes: list[str]
    min_seconds: float

    def counts(self) -> Counter[str]:
        return Counter(self.table.column("status").to_pylist())

    def usable(self) -> pa.Table:
        return self.table.filter(pc.equal(self.table.column("status"), "ok"))


@dataclass(frozen=True)
class BuildReport:
    manifest: Manifest
    path: str
    probed: int
    reused: int
    notes: list[str]


def default_manifest_path(dataset: str, root: str) -> str:
    return join(root, f"crisscross_manifest_{dataset}.parquet")


def build_manifest(
    dataset: str,
    root: str,
    *,
    out: str | None = None,
    min_seconds: float | None = None,
    classes_file: str | None = None,
    workers: int | None = None,
    progress: bool = False,
    on: str = "local",
    verify: str = "header",
) -> BuildReport:
    """List `root` in the layout of `dataset`, probe every file in parallel, write Parquet.

    Probes are written as they come to `<out>.parts/` (a rerun after an interruption probes
    only the rest), merged into the manifest and removed. `progress`: a bar on stderr. `on`:
    "local" (a thread pool here) or "ray" (tasks on the connected Ray cluster). `verify`:
    "header", or "demux"/"decode" to read every packet (`probe`); a verifying build probes
    every file again rather than trust an earlier manifest's header-only probes."""
    layout = create_layout(dataset, classes_file=classes_file)
    needs = layout.requirements
    if min_seconds is not None:
        needs = replace(needs, min_seconds=min_seconds)
    tree = Tree(root)
    listing = layout.scan(tree)
    out = out or default_manifest_path(dataset, root)
    cached = _cached_facts(out, dataset, root) if verify == "header" else {}
    rows, to_probe = _listed_rows(tree, listing.entries, cached)
    parts = parts_folder(out)
    probed = probe_files(
        to_probe,
        needs=needs,
        parts=parts,
        schema=SCHEMA,
        meta={"dataset": dataset, "root": root}
        | ({"verify": verify} if verify != "header" else {}),
        workers=workers,
        progress=progress,
        on=on,
        verify=verify,
    )
    for row, facts in zip(to_probe, probed, strict=True):
        row.update(facts)
    for row, entry in zip(rows, listing.entries, strict=True):
        if entry.status is None and entry.rel not in tree.special:  # those: _listed_rows
            row["status"], row["reason"] = judge(row, needs)
            row["duration"] = usable_seconds(row, needs)
    manifest = Manifest(
        pa.Table.from_pylist(rows, schema=SCHEMA), dataset, root, listing.classes, needs.min_seconds
    )
    write_manifest(manifest, out)
    remove_parts(parts)  # merged into the manifest
    return BuildReport(
        manifest,
        out,
        len(to_probe),
        len(rows) - len(to_probe) - _preset(listing.entries, tree),
        listing.notes,
    )


def _listed_rows(
    tree: Tree, entries: list[Entry], cached: dict[tuple, dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A row per listed entry, with the facts of an unchanged file (same size and mtime) from
    the previous manifest; and the rows still to probe (the same dicts)."""
    rows, to_probe = [], []
    for entry in entries:
        stat = tree.files.get(entry.rel)
        row = _row(
            entry, tree.uri(entry.rel), stat.size if stat else None, stat.mtime_ns if stat else None
        )
        rows.append(row)
        if entry.rel in tree.special:  # a FIFO, socket or device: say what it is, never open it
            row["status"] = "unreadable"
            row["reason"] = "not a regular file (a FIFO, socket or device): not opened"
        elif entry.status is None:
            key = (entry.rel, row["size_bytes"], row["mtime_ns"])
            if key in cached:
                row.update(cached[key])
            else:
                to_probe.append(row)
    return rows, to_probe


def _preset(entries: list[Entry], tree: Tree) -> int:
    """Rows whose status the listing alone decided (not probed, not reused)."""
    return sum(entry.status is not None or entry.rel in tree.special for entry in entries)


def _row(entry: Entry, path: str, size: int | None, mtime: int | None) -> dict[str, Any]:
    row: dict[str, Any] = dict(FACTS) | {"audio_path": None, "source_path": None}
    row |= {
        "rel": entry.rel,
        "path": path,
        "label": entry.label,
        "label_name": entry.label_name,
        "split": entry.split,
        "fold": entry.fold,
        "size_bytes": size,
        "mtime_ns": mtime,
        "status": entry.status,
        "reason": entry.reason,
    }
    for n in (1, 2, 3):
        row[f"fold{n}"] = entry.folds.get(n)
    return row


def write_manifest(manifest: Manifest, path: str) -> None:
    meta = {
        "dataset": manifest.dataset,
        "root": manifest.root,
        "classes": manifest.classes,
        "min_seconds": manifest.min_seconds,
    }
    table = manifest.table.replace_schema_metadata({"crisscross": json.dumps(meta)})
    with atomic_output(path) as stream:  # a crash mid-write keeps the previous manifest
        pq.write_table(table, stream)


def read_manifest(path: str) -> Manifest:
    """A manifest written by `build_manifest`; ValueError says what is wrong with the file."""
    fs, inner = resolve(path)
    try:
        table = pq.read_table(inner, filesystem=fs)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ValueError(f"{path}: not a readable manifest ({exc})") from None
    raw = (table.schema.metadata or {}).get(b"crisscross")
    if raw is None:
        raise ValueError(
            f"{path}: a Parquet file, but not a crisscross manifest (no dataset metadata)"
        )
    try:
        meta = json.loads(raw)
        return Manifest(table, meta["dataset"], meta["root"], meta["classes"], meta["min_seconds"])
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(
            f"{path}: a Parquet file with damaged crisscross metadata ({type(exc).__name__}: "
            f"{exc}); build the manifest again (crisscross data manifest)"
        ) from None


def _cached_facts(path: str, dataset: str, root: str) -> dict[tuple, dict[str, Any]]:
    """Probe results of an earlier manifest at `path`, keyed by (rel, size, mtime)."""
    fs, inner = resolve(path)
    if fs.get_file_info(inner).type.name != "File":
        return {}
    try:
        old = read_manifest(path)
    except ValueError as exc:
        log.warning("ignoring the earlier manifest: %s", exc)
        return {}
    if (old.dataset, old.root) != (dataset, root):
        return {}
    if missing := [k for k in FACTS if k not in old.table.column_names]:
        log.info("probing every file again: the earlier manifest has no %s", ", ".join(missing))
        return {}
    facts = {}
    for row in old.table.to_pylist():
        if row["status"] not in ("missing_on_disk", "unlisted"):
            facts[(row["rel"], row["size_bytes"], row["mtime_ns"])] = {k: row[k] for k in FACTS}
    return facts


def summary(manifest: Manifest) -> str:
    """A table of file counts per status and split."""
    table = manifest.table
    splits = [s or "-" for s in table.column("split").to_pylist()]
    if not any(s != "-" for s in splits):  # ESC-50 folds, or UCF101/HMDB51 split 1 membership
        folds, first = table.column("fold").to_pylist(), table.column("fold1").to_pylist()
        splits = [
            f"fold {f}" if f is not None else f"split1 {m}" if m else "-"
            for f, m in zip(folds, first, strict=True)
        ]
    pairs = Counter(zip(table.column("status").to_pylist(), splits, strict=True))
    columns = sorted({s for _, s in pairs})
    statuses = [s for s in STATUSES if any(st == s for st, _ in pairs)]
    width = max([len("status"), *map(len, statuses)])
    head = f"{'status':<{width}}  " + "  ".join(f"{c:>10}" for c in columns) + f"  {'total':>8}"
    lines = [head, "-" * len(head)]
    for status in statuses:
        counts = [pairs[(status, c)] for c in columns]
        lines.append(
            f"{status:<{width}}  " + "  ".join(f"{n:>10}" for n in counts) + f"  {sum(counts):>8}"
        )
    totals = [sum(pairs[(s, c)] for s in statuses) for c in columns]
    lines.append(
        f"{'total':<{width}}  " + "  ".join(f"{n:>10}" for n in totals) + f"  {sum(totals):>8}"
    )
    return "\n".join(lines)
