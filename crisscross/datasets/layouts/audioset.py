"""AudioSet: <root>/<split>/<YTID>_<start>.mp4 (or <YTID>.mp4) plus the segments CSVs.

Segments CSVs (balanced_train_segments.csv, unbalanced_train_segments.csv, eval_segments.csv) have
'#' comment lines and rows `YTID, start_seconds, end_seconds, "positive_labels"`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from crisscross.datasets.fs import Tree
from crisscross.datasets.layouts.base import VIDEO_EXTENSIONS, Entry, LayoutError, Listing
from crisscross.datasets.layouts.kinetics import PRETEXT

SEGMENT_FILES = {
    "balanced_train": "balanced_train_segments.csv",
    "unbalanced_train": "unbalanced_train_segments.csv",
    "eval": "eval_segments.csv",
}
YTID_LENGTH = 11  # YouTube ids are 11 characters, underscores included


class AudioSet:
    name = "audioset"
    requirements = PRETEXT

    def scan(self, tree: Tree) -> Listing:
        # per split, YTID -> labels: no tuple per row (AudioSet's CSVs name about 2 M segments)
        labels: dict[str, dict[str, str]] = {}
        for split, csv_name in SEGMENT_FILES.items():
            source = tree.find(csv_name) or tree.find(f"csv/{csv_name}")
            if source is not None:
                labels[split] = dict(_segments(tree, source))
        entries: list[Entry] = []
        present: dict[str, set[str]] = {}
        have_labels = any(labels.values())
        for rel in sorted(tree.files):
            parts = rel.split("/")
            if len(parts) != 2 or not parts[1].lower().endswith(VIDEO_EXTENSIONS):
                continue
            split, stem = parts[0], parts[1].rsplit(".", 1)[0]
            ytid = stem[:YTID_LENGTH]
            present.setdefault(split, set()).add(ytid)
            listed = labels.get(split, {})
            entry = Entry(rel, -1, listed.get(ytid, ""), split)
            if have_labels and split in SEGMENT_FILES and ytid not in listed:
                entry.status, entry.reason = "unlisted", f"{ytid} is not in {SEGMENT_FILES[split]}"
            entries.append(entry)
        if not entries:
            raise LayoutError(
                f"{tree.root}: not in the AudioSet layout; expected videos as "
                "<split>/<YTID>_<start>.mp4 "
                f"with split one of {', '.join(SEGMENT_FILES)}"
            )
        for split, listed in labels.items():
            on_disk = present.get(split)
            if on_disk is None:  # a split with no video on disk is not part of this copy
                continue
            reason = f"listed in {SEGMENT_FILES[split]} but not on disk"
            for ytid, mids in listed.items():
                if ytid not in on_disk:
                    entries.append(
                        Entry(
                            f"{split}/{ytid}.mp4",
                            -1,
                            mids,
                            split,
                            status="missing_on_disk",
                            reason=reason,
                        )
                    )
        return Listing(entries, [])


def _segments(tree: Tree, source: str) -> Iterator[tuple[str, str]]:
    """(YTID, labels) of each row; rows of the same labels share one string."""
    shared: dict[str, str] = {}
    lines = (line for line in io.StringIO(tree.read_text(source)) if not line.startswith("#"))
    for row in csv.reader(lines, skipinitialspace=True):
        if not row:
            continue
        if len(row) < 4:
            raise LayoutError(
                f"{tree.uri(source)}: expected YTID, start_seconds, end_seconds, "
                f"positive_labels; got {row}"
            )
        yield row[0], shared.setdefault(row[3], row[3])
