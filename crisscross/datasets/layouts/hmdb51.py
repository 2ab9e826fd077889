"""HMDB51: <root>/<class>/<name>.avi and testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt.

Each split file line is '<name>.avi <id>' with id 1 = train, 2 = test, 0 = unused.
"""

from __future__ import annotations

import re

from crisscross.datasets.fs import Tree
from crisscross.datasets.layouts.base import (
    VIDEO_EXTENSIONS,
    Entry,
    LayoutError,
    Listing,
    Requirements,
    listed_entry,
    split_lines,
)

SPLIT_DIR = "testTrainMulti_7030_splits"
SUBSETS = {"1": "train", "2": "test", "0": "unused"}
_SPLIT_FILE = re.compile(rf"^{SPLIT_DIR}/(.+)_test_split([123])\.txt$")


class HMDB51:
    name = "hmdb51"
    requirements = Requirements(video=True, audio=False, min_seconds=0.5)

    def scan(self, tree: Tree) -> Listing:
        split_files = {m.group(1, 2): rel for rel in tree.files if (m := _SPLIT_FILE.match(rel))}
        classes = sorted({cls for cls, _ in split_files})
        if not classes:
            raise LayoutError(
                f"{tree.root}: not in the HMDB51 layout; expected "
                f"{SPLIT_DIR}/<class>_test_split1.txt "
                "(and split2, split3) beside the class folders <class>/<name>.avi"
            )
        incomplete = [
            f"{SPLIT_DIR}/{c}_test_split{n}.txt"
            for c in classes
            for n in "123"
            if (c, n) not in split_files
        ]
        if incomplete:
            raise LayoutError(
                f"{tree.root}: HMDB51 split files missing: {', '.join(incomplete[:5])}"
            )
        index = {name: i for i, name in enumerate(classes)}
        entries: dict[str, Entry] = {}
        for (cls, n), source in sorted(split_files.items()):
            for fields in split_lines(tree.read_text(source)):
                if len(fields) != 2 or fields[1] not in SUBSETS:
                    raise LayoutError(
                        f"{tree.uri(source)}: expected '<name>.avi <0|1|2>', "
                        f"got {' '.join(fields)!r}"
                    )
                rel = f"{cls}/{fields[0]}"
                entry = listed_entry(entries, tree, rel, label=index[cls], name=cls, source=source)
                entry.folds[int(n)] = SUBSETS[fields[1]]
        for rel in tree.files:
            parts = rel.split("/")
            if len(parts) == 2 and rel.lower().endswith(VIDEO_EXTENSIONS) and rel not in entries:
                known = parts[0] in index
                entries[rel] = Entry(
                    rel,
                    index.get(parts[0], -1),
                    parts[0],
                    status="unlisted",
                    reason="not in the class's split files"
                    if known
                    else f"class folder '{parts[0]}' has no split files",
                )
        return Listing(sorted(entries.values(), key=lambda e: e.rel), classes)
