"""ESC-50: <root>/audio/*.wav with <root>/meta/esc50.csv (filename,fold,target,category,...)."""

from __future__ import annotations

import csv
import io

from crisscross.datasets.fs import Tree
from crisscross.datasets.layouts.base import Entry, LayoutError, Listing, Requirements, require

META = "meta/esc50.csv"
COLUMNS = ("filename", "fold", "target", "category")


class ESC50:
    name = "esc50"
    requirements = Requirements(video=False, audio=True, min_seconds=0.5)

    def scan(self, tree: Tree) -> Listing:
        require(tree, "ESC-50", {META: "clip metadata", "audio/": "the .wav clips"})
        reader = csv.DictReader(io.StringIO(tree.read_text(META)))
        missing_columns = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing_columns:
            raise LayoutError(f"{tree.uri(META)}: missing columns {', '.join(missing_columns)}")
        entries, names = {}, {}
        for row in reader:
            rel = f"audio/{row['filename']}"
            try:
                fold, target = int(row["fold"]), int(row["target"])
            except ValueError:
                raise LayoutError(
                    f"{tree.uri(META)}: fold and target must be integers in row {row}"
                ) from None
            entry = Entry(rel, target, row["category"], fold=fold)
            if rel not in tree.files:
                entry.status, entry.reason = "missing_on_disk", f"listed in {META} but not on disk"
            entries[rel] = entry
            names[target] = row["category"]
        for rel in tree.files:
            if rel.startswith("audio/") and rel.lower().endswith(".wav") and rel not in entries:
                entries[rel] = Entry(rel, status="unlisted", reason=f"not in {META}")
        classes = [names[t] for t in sorted(names)]
        return Listing(sorted(entries.values(), key=lambda e: e.rel), classes)
