"""The run folder's layout, owned here: what a pretraining or a fine-tuning fold writes into its
folder and how the folder is read back (`RunFolder`).

    <run folder>/crisscross_run.json           the record (platform/pretrain/run_record.py
                                               writes and parses its contents)
    <run folder>/checkpoint_step<N>/           a checkpoint mid-epoch (step N, 9 digits)
    <run folder>/checkpoint_epoch<E>_step<N>/  a checkpoint at the end of epoch E
    <run folder>/checkpoint_epoch<E>/          a fine-tuning fold's checkpoint after epoch E
    <run folder>/best/                         the best monitored checkpoint, swapped in whole
    <checkpoint>/state.pt, progress.json       the state, and its step/epoch/best as JSON

Ray Train names and prunes the checkpoint folders (`checkpoint_dir_name`); a folder without its
state file is one Ray had not finished writing. "Latest" is the highest step, not the last name
in sorted order (every epoch checkpoint sorts before every mid-epoch one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

STATE_FILE = "state.pt"
PROGRESS_FILE = "progress.json"
BEST_DIR = "best"
RUN_RECORD = "crisscross_run.json"
_NAME = re.compile(r"^checkpoint_(?:epoch(\d+))?_?(?:step(\d+))?$")


def step_checkpoint(step: int) -> str:
    """The folder name of a mid-epoch checkpoint at global step `step`."""
    return f"checkpoint_step{step:09d}"


def epoch_checkpoint(epoch: int, step: int | None = None) -> str:
    """The folder name of the checkpoint at the end of `epoch` (at global step `step`, for a
    pretraining; a fine-tuning fold's names carry the epoch only)."""
    name = f"checkpoint_epoch{epoch:04d}"
    return name if step is None else f"{name}_step{step:09d}"


def checkpoint_order(name: str) -> tuple[int, int, bool] | None:
    """(step, epoch, at an epoch's end) that orders checkpoint folder `name`; None for a name this
    module does not write. A fine-tuning name (no step) orders by its epoch."""
    match = _NAME.match(name)
    if not match or not any(match.groups()):
        return None
    epoch, step = (int(g) if g else -1 for g in match.groups())
    return step, epoch, epoch >= 0  # at the same step, the epoch end is the later one


@dataclass(frozen=True)
class RunFolder:
    """A local run folder: its record, its complete checkpoints, the latest and the best."""

    path: Path

    @property
    def record(self) -> Path:
        return self.path / RUN_RECORD

    def is_run(self) -> bool:
        """Whether a run wrote its record here."""
        return self.record.is_file()

    def checkpoints(self) -> list[Path]:
        """The complete checkpoints (state file written), oldest first."""
        found = []
        for folder in self.path.glob("checkpoint_*"):
            order = checkpoint_order(folder.name)
            if order is not None and (folder / STATE_FILE).is_file():
                found.append((order, folder))
        return [folder for _, folder in sorted(found)]

    def latest(self) -> Path | None:
        """The checkpoint of the highest step, or None before the first one."""
        found = self.checkpoints()
        return found[-1] if found else None

    def best(self) -> Path | None:
        """The best monitored checkpoint, or None when none was monitored yet."""
        best = self.path / BEST_DIR
        return best if (best / STATE_FILE).is_file() else None
