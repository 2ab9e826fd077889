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


LAYOUTS: Registry[Layout] = Registry("dataset")
LAYOUTS.register("kinetics400", kind="pretext")(lambda **_: Kinetics("kinetics400"))
LAYOUTS.register("kinetics_sound", kind="pretext")(
    lambda *, classes_file=None, **_: Kinetics(
        "kinetics_sound", kinetics_sound_classes(classes_file)
    )
)
LAYOUTS.register("audioset", kind="pretext")(lambda **_: AudioSet())
LAYOUTS.register("ucf101", kind="video")(lambda **_: UCF101())
LAYOUTS.register("hmdb51", kind="video")(lambda **_: HMDB51())
LAYOUTS.register("esc50", kind="audio")(lambda **_: ESC50())


def create_layout(name: str, **options: object) -> Layout:
    """A registered layout reader; Kinetics-Sound takes `classes_file` (None: the shipped list)."""
    return LAYOUTS.create(name, **options)


__all__ = ["LAYOUTS", "Entry", "Layout", "LayoutError", "Listing", "Requirements", "create_layout"]
