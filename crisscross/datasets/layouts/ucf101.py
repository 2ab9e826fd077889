"""UCF101: <root>/UCF-101/<Class>/v_<Class>_gXX_cYY.avi with <root>/ucfTrainTestlist/.

classInd.txt numbers the classes from 1; trainlist0N.txt and testlist0N.txt name the videos of
split N. A video's membership in each split is kept (folds[n] = "train" or "test").
"""

from __future__ import annotations

from crisscross.datasets.fs import Tree
from crisscross.datasets.layouts.base import (
    VIDEO_EXTENSIONS,
    Entry,
    LayoutError,
    Listing,
    Requirements,
    listed_entry,
    require,
    split_lines,
)

VIDEO_DIR, LIST_DIR = "UCF-101", "ucfTrainTestlist"
SPLITS = (1, 2, 3)


class UCF101:
    name = "ucf101"
    requirements = Requirements(video=True, audio=False, min_seconds=0.5)

    def scan(self, tree: Tree) -> Listing:
        expected = {f"{LIST_DIR}/classInd.txt": "class index"}
        for n in SPLITS:
            expected[f"{LIST_DIR}/trainlist0{n}.txt"] = f"split {n} training videos"
            expected[f"{LIST_DIR}/testlist0{n}.txt"] = f"split {n} test videos"
        expected[f"{VIDEO_DIR}/"] = "class folders of .avi videos"
        require(tree, "UCF101", expected)
        classes = _class_index(tree)
        index = {name: i for i, name in enumerate(classes)}
        lower = {name.lower(): name for name in classes}
        entries: dict[str, Entry] = {}
        for n in SPLITS:
            for subset in ("train", "test"):
                source = f"{LIST_DIR}/{subset}list0{n}.txt"
                for fields in split_lines(tree.read_text(source)):
                    listed = f"{VIDEO_DIR}/{fields[0]}"
                    rel = tree.find(listed) or listed
                    cls = lower.get(fields[0].split("/")[0].lower())
                    if cls is None:
                        raise LayoutError(
                            f"{tree.uri(source)}: {fields[0]} names a class not in classInd.txt"
                        )
                    entry = listed_entry(
                        entries, tree, rel, label=index[cls], name=cls, source=source
                    )
                    entry.folds[n] = subset
        for rel in tree.files:
            parts = rel.split("/")
            if (
                len(parts) == 3
                and parts[0] == VIDEO_DIR
                and rel.lower().endswith(VIDEO_EXTENSIONS)
                and rel not in entries
            ):
                cls = lower.get(parts[1].lower())
                reason = (
                    f"class folder '{parts[1]}' is not in classInd.txt"
                    if cls is None
                    else "not in any trainlist/testlist file"
                )
                entries[rel] = Entry(
                    rel,
                    -1 if cls is None else index[cls],
                    cls or parts[1],
                    status="unlisted",
                    reason=reason,
                )
        return Listing(sorted(entries.values(), key=lambda e: e.rel), classes)


def _class_index(tree: Tree) -> list[str]:
    source = f"{LIST_DIR}/classInd.txt"
    rows = split_lines(tree.read_text(source))
    try:
        numbered = sorted((int(number), name) for number, name in rows)
    except ValueError:
        raise LayoutError(f"{tree.uri(source)}: expected lines '<number> <ClassName>'") from None
    if [n for n, _ in numbered] != list(range(1, len(numbered) + 1)):
        raise LayoutError(f"{tree.uri(source)}: class numbers must run 1..{len(numbered)}")
    return [name for _, name in numbered]
