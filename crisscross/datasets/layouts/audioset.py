"""AudioSet: <root>/<split>/<YTID>_<start>.mp4 (or <YTID>.mp4) plus the segments CSVs.

Segments CSVs (balanced_train_segments.csv, unbalanced_train_segments.csv, eval_segments.csv) have
'#' comment lines and rows `YTID, start_seconds, end_seconds, "positive_labels"`.
"""

from __future__ import annotations

import csv
import io

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
        labels: dict[tuple[str, str], str] = {}
        for split, csv_name in SEGMENT_FILES.items():
            source = tree.find(csv_name) or tree.find(f"csv/{csv_name}")
            if source is not None:
                for ytid, mids in _segments(tree, source):
                    labels[(split, ytid)] = mids
        entries, present = [], set()
        for rel in sorted(tree.files):
            parts = rel.split("/")
            if len(parts) != 2 or not parts[1].lower().endswith(VIDEO_EXTENSIONS):
                continue
            split, stem = parts[0], parts[1].rsplit(".", 1)[0]
            ytid = stem[:YTID_LENGTH]
            present.add((split, ytid))
            entry = Entry(rel, -1, labels.get((split, ytid), ""), split)
            if labels and (split, ytid) not in labels and split in SEGMENT_FILES:
                entry.status, entry.reason = "unlisted", f"{ytid} is not in {SEGMENT_FILES[split]}"
            entries.append(entry)
        if not entries:
            raise LayoutError(
                f"{tree.root}: not in the AudioSet layout; expected videos as "
                "<split>/<YTID>_<start>.mp4 "
                f"with split one of {', '.join(SEGMENT_FILES)}"
            )
        splits_on_disk = {split for split, _ in present}
        for (split, ytid), mids in labels.items():
            if split in splits_on_disk and (split, ytid) not in present:
                entries.append(
                    Entry(
                        f"{split}/{ytid}.mp4",
                        -1,
                        mids,
                        split,
                        status="missing_on_disk",
                        reason=f"listed in {SEGMENT_FILES[split]} but not on disk",
                    )
                )
        return Listing(entries, [])


def _segments(tree: Tree, source: str) -> list[tuple[str, str]]:
    lines = [
        line for line in tree.read_text(source).splitlines() if line and not line.startswith("#")
    ]
    rows = []
    for row in csv.reader(io.StringIO("\n".join(lines)), skipinitialspace=True):
        if len(row) < 4:
            raise LayoutError(
                f"{tree.uri(source)}: expected YTID, start_seconds, end_seconds, "
                f"positive_labels; got {row}"
            )
        rows.append((row[0], row[3]))
    return rows
