"""Dataset layouts as users have them on disk, by registered name."""

from __future__ import annotations

from typing import Protocol

from crisscross.datasets.fs import Tree
from crisscross.datasets.layouts.audioset import AudioSet
from crisscross.datasets.layouts.base import Entry, LayoutError, Listing, Requirements
from crisscross.datasets.layouts.esc50 import ESC50
from crisscross.datasets.layouts.hmdb51 import HMDB51
from crisscross.datasets.layouts.kinetics import Kinetics, kinetics_sound_classes
from crisscross.datasets.layouts.ucf101 import UCF101
from crisscross.models.registry import Registry


class Layout(Protocol):
    name: str
    requirements: Requirements

    def scan(self, tree: Tree) -> Listing: ...


# The facts of each dataset live here, once: `kind` (pretext, or the modality a downstream set
# evaluates), `title` (as the paper's tables write it) and, for downstream sets, the official
# `folds` (splits).
LAYOUTS: Registry[Layout] = Registry("dataset")
LAYOUTS.register("kinetics400", kind="pretext", title="Kinetics-400")(
    lambda **_: Kinetics("kinetics400")
)
LAYOUTS.register("kinetics_sound", kind="pretext", title="Kinetics-Sound")(
    lambda *, classes_file=None, **_: Kinetics(
        "kinetics_sound", kinetics_sound_classes(classes_file)
    )
)
LAYOUTS.register("audioset", kind="pretext", title="AudioSet")(lambda **_: AudioSet())
LAYOUTS.register("ucf101", kind="video", title="UCF101", folds=(1, 2, 3))(lambda **_: UCF101())
LAYOUTS.register("hmdb51", kind="video", title="HMDB51", folds=(1, 2, 3))(lambda **_: HMDB51())
LAYOUTS.register("esc50", kind="audio", title="ESC50", folds=(1, 2, 3, 4, 5))(lambda **_: ESC50())
DOWNSTREAM = [name for name in LAYOUTS.names() if LAYOUTS.meta(name)["kind"] != "pretext"]
FOLDS: dict[str, tuple[int, ...]] = {n: LAYOUTS.meta(n)["folds"] for n in DOWNSTREAM}
MODALITY: dict[str, str] = {n: str(LAYOUTS.meta(n)["kind"]) for n in DOWNSTREAM}
TITLES: dict[str, str] = {n: str(LAYOUTS.meta(n)["title"]) for n in LAYOUTS.names()}


def create_layout(name: str, **options: object) -> Layout:
    """A registered layout reader; Kinetics-Sound takes `classes_file` (None: the shipped list)."""
    return LAYOUTS.create(name, **options)


__all__ = [
    "DOWNSTREAM",
    "FOLDS",
    "LAYOUTS",
    "MODALITY",
    "TITLES",
    "Entry",
    "Layout",
    "LayoutError",
    "Listing",
    "Requirements",
    "create_layout",
]
