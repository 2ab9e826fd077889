"""What a dataset layout reader returns: one Entry per media file, listed or found on disk."""

from __future__ import annotations

from dataclasses import dataclass, field

from crisscross.datasets.fs import Tree

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
LISTED_STATUSES = ("missing_on_disk", "unlisted")


class LayoutError(ValueError):
    """A dataset root without the layout's required files; says what is expected where."""


@dataclass(slots=True)  # slots: a listing holds one a file (millions)
class Entry:
    """One media file of a dataset, before probing.

    `status` is preset only for what the listing alone decides: "missing_on_disk" (named by a split
    or meta file, absent on disk) and "unlisted" (on disk, but in no split file or class list).
    """

    rel: str
    label: int = -1
    label_name: str = ""
    split: str = ""
    fold: int | None = None
    folds: dict[int, str] = field(default_factory=dict)  # UCF101/HMDB51: split -> train/test/unused
    status: str | None = None
    reason: str = ""


@dataclass
class Listing:
    """A layout's entries, its class names in label order, and notes for the user."""

    entries: list[Entry]
    classes: list[str]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Requirements:
    """What a usable file of this dataset must have."""

    video: bool
    audio: bool
    min_seconds: float


def require(tree: Tree, name: str, expected: dict[str, str]) -> None:
    """Raise LayoutError listing each expected file or folder (rel path -> what it is) not found."""
    missing = [
        f"{rel} ({what})"
        for rel, what in expected.items()
        if tree.find(rel) is None
        and not any(f.startswith(rel.rstrip("/") + "/") for f in tree.files)
    ]
    if missing:
        raise LayoutError(
            f"{tree.root}: not in the {name} layout; expected under the root: " + "; ".join(missing)
        )


def split_lines(text: str) -> list[list[str]]:
    """Non-empty, non-comment lines split on white space."""
    return [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def listed_entry(
    entries: dict[str, Entry], tree: Tree, rel: str, *, label: int, name: str, source: str
) -> Entry:
    """The entry of a file a split or meta file names; marked missing_on_disk when absent."""
    entry = entries.setdefault(rel, Entry(rel, label, name))
    if rel not in tree.files and entry.status is None:
        entry.status, entry.reason = "missing_on_disk", f"listed in {source} but not on disk"
    return entry
