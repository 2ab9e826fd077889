"""The epoch's identity rows: their digest, and what changed between two of them."""

from __future__ import annotations

import pyarrow as pa

from crisscross.datasets.epoch_identity import row_changes, rows_digest


def rows(*items: tuple[str, int, int, float]) -> pa.Table:
    names = ["path", "size_bytes", "mtime_ns", "duration"]
    return pa.Table.from_pylist([dict(zip(names, item, strict=True)) for item in items])


A, B, C = ("/d/a.mp4", 10, 1, 4.0), ("/d/b.mp4", 20, 2, 4.0), ("/d/c.mp4", 30, 3, 4.0)


def test_digest_changes_with_any_row_or_its_order_and_not_with_chunking():
    base = rows(A, B, C)
    chunked = pa.concat_tables([rows(A), rows(B, C)])
    assert rows_digest(chunked) == rows_digest(base)
    assert len(rows_digest(base)) == 64
    for other in (rows(A, B), rows(A, C, B), rows(A, B, ("/d/c.mp4", 30, 4, 4.0))):
        assert rows_digest(other) != rows_digest(base)


def test_changes_count_added_removed_changed_with_example_paths():
    touched = ("/d/b.mp4", 20, 9, 4.0)
    new = rows(A, touched, ("/d/e.mp4", 1, 1, 5.0), ("/d/f.mp4", 1, 1, 5.0))
    changes = row_changes(rows(A, B, C), new)
    assert (changes.added, changes.removed, changes.changed) == (
        ["/d/e.mp4", "/d/f.mp4"],
        ["/d/c.mp4"],
        ["/d/b.mp4"],
    )
    assert changes.describe(shown=1) == (
        "2 added (e.g. /d/e.mp4); 1 removed (e.g. /d/c.mp4); 1 changed (e.g. /d/b.mp4)"
    )


def test_the_same_rows_in_another_order_are_a_change():
    changes = row_changes(rows(A, B, C), rows(C, A, B))
    assert changes.reordered
    assert changes.describe() == "the same rows in another order"
