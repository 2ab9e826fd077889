"""What identifies the rows an epoch is drawn from: the usable manifest rows, in table order,
with what makes each one the same file; their digest, and what differs between two of them.

A checkpoint's data position counts positions of this table's seeded order, so a resumed run
must draw from the same rows in the same order, or its positions point at other videos.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pyarrow as pa

from crisscross.datasets.epochs import usable_rows
from crisscross.datasets.manifest import Manifest
from crisscross.datasets.samples import ClipSpec

# a row's file (path, size, modification time), its window range, its prepared audio if any
IDENTITY_COLUMNS = ("path", "size_bytes", "mtime_ns", "duration", "audio_path")


def identity_rows(manifest: Manifest, spec: ClipSpec) -> pa.Table:
    """`usable_rows` (the rows `epoch_table` holds, in its order) with only IDENTITY_COLUMNS."""
    table = usable_rows(manifest, spec)
    return table.select([c for c in IDENTITY_COLUMNS if c in table.column_names]).combine_chunks()


def rows_digest(rows: pa.Table) -> str:
    """sha256 (hex) of `rows`: its column names, then each row as a JSON list, in order."""
    digest = hashlib.sha256(json.dumps(rows.column_names).encode())
    for batch in rows.to_batches(max_chunksize=65536):
        for row in zip(*(column.to_pylist() for column in batch.columns), strict=True):
            digest.update(b"\n" + json.dumps(row).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class RowChanges:
    """Paths added, removed and changed (same path, other size, time or duration) from old to
    new rows; `reordered`: the same rows in another order."""

    added: list[str]
    removed: list[str]
    changed: list[str]
    reordered: bool

    def describe(self, shown: int = 3) -> str:
        """One line: each kind of change with its count and up to `shown` example paths."""
        parts = [
            f"{len(paths)} {kind} (e.g. {', '.join(paths[:shown])})"
            for kind, paths in (
                ("added", self.added),
                ("removed", self.removed),
                ("changed", self.changed),
            )
            if paths
        ]
        if self.reordered:
            parts.append("the same rows in another order")
        return "; ".join(parts) or "no row differs"


def row_changes(old: pa.Table, new: pa.Table) -> RowChanges:
    """What differs between two `identity_rows` tables, path by path."""
    before = {row["path"]: row for row in old.to_pylist()}
    after = {row["path"]: row for row in new.to_pylist()}
    added = [path for path in after if path not in before]
    removed = [path for path in before if path not in after]
    changed = [path for path, row in after.items() if path in before and before[path] != row]
    same = not (added or removed or changed)
    return RowChanges(added, removed, changed, same and list(before) != list(after))
