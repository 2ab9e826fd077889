"""Kinetics-400 and Kinetics-Sound: <root>/{train,val}/<class>/<youtube_id>_<start>_<end>.mp4.

The official CSV (label,youtube_id,time_start,time_end,split), when present as
<root>/annotations/<split>.csv or <root>/<split>.csv, names the files that should exist.
"""

from __future__ import annotations

import csv
import io
from importlib import resources
from pathlib import Path

from crisscross.datasets.fs import Tree
from crisscross.datasets.layouts.base import (
    VIDEO_EXTENSIONS,
    Entry,
    LayoutError,
    Listing,
    Requirements,
)

SPLITS = ("train", "val")
# The reference's loader keeps videos with both streams above 1.1 s; each run then skips those
# shorter than its sampling mode needs (data.short_videos).
PRETEXT = Requirements(video=True, audio=True, min_seconds=1.1)


def kinetics_sound_classes(path: str | None = None) -> list[str]:
    """The Kinetics-Sound class names: the shipped list, or a user's file (one name per line)."""
    if path is None:
        text = (
            resources.files("crisscross.datasets")
            .joinpath("data/kinetics_sound_classes.txt")
            .read_text()
        )
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise LayoutError(f"{path}: cannot read the class list ({exc.strerror})") from None
    names = [line.split("#")[0].strip() for line in text.splitlines()]
    return [name for name in names if name]


class Kinetics:
    """Kinetics-400, or the subset named by `classes` (Kinetics-Sound)."""

    requirements = PRETEXT

    def __init__(self, name: str = "kinetics400", classes: list[str] | None = None) -> None:
        self.name, self.subset = name, classes

    def scan(self, tree: Tree) -> Listing:
        on_disk = _videos_by_split(tree)
        if not any(on_disk.values()):
            raise LayoutError(
                f"{tree.root}: not in the Kinetics layout; expected videos as "
                "train/<class name>/<youtube_id>_<start:06d>_<end:06d>.mp4 (and val/...)"
            )
        expected = _csv_entries(tree)
        found_classes = sorted({cls for files in on_disk.values() for cls in files.values()})
        listed_classes = sorted({cls for cls, _, _ in expected.values()})
        classes = (
            self.subset if self.subset is not None else sorted({*found_classes, *listed_classes})
        )
        index = {name: i for i, name in enumerate(classes)}
        notes = []
        if self.subset is not None:
            absent = [c for c in self.subset if c not in found_classes]
            if absent:
                notes.append(
                    f"{len(absent)} of {len(self.subset)} classes have no videos: "
                    + ", ".join(absent[:5])
                )
        entries = []
        for split, files in on_disk.items():
            for rel, cls in files.items():
                if cls in index:
                    entries.append(Entry(rel, index[cls], cls, split))
        present = {rel for files in on_disk.values() for rel in files}
        for rel, (cls, split, source) in expected.items():
            if cls in index and rel not in present:
                entries.append(
                    Entry(
                        rel,
                        index[cls],
                        cls,
                        split,
                        status="missing_on_disk",
                        reason=f"listed in {source} but not on disk",
                    )
                )
        return Listing(entries, list(classes), notes)


def _videos_by_split(tree: Tree) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {split: {} for split in SPLITS}
    for rel in tree.files:
        parts = rel.split("/")
        if len(parts) == 3 and parts[0] in found and parts[2].lower().endswith(VIDEO_EXTENSIONS):
            found[parts[0]][rel] = parts[1]
    return found


def _csv_entries(tree: Tree) -> dict[str, tuple[str, str, str]]:
    """rel path -> (class, split, csv file) for every row of the official CSVs present."""
    expected = {}
    for split in SPLITS:
        source = next(
            (p for p in (f"annotations/{split}.csv", f"{split}.csv") if p in tree.files), None
        )
        if source is None:
            continue
        for row in csv.DictReader(io.StringIO(tree.read_text(source))):
            try:
                start, end = int(float(row["time_start"])), int(float(row["time_end"]))
                name = f"{row['youtube_id']}_{start:06d}_{end:06d}.mp4"
                expected[f"{split}/{row['label']}/{name}"] = (row["label"], split, source)
            except (KeyError, ValueError) as exc:
                raise LayoutError(
                    f"{tree.uri(source)}: expected columns "
                    "label,youtube_id,time_start,time_end,split "
                    f"(row {row}: {exc})"
                ) from None
    return expected
