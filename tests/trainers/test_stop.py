"""The per-step signals of the loop: a stop the driver wrote, a time-based checkpoint."""

from __future__ import annotations

import json

import torch

from crisscross.trainers import stop
from crisscross.trainers.stop import STOP_FILE, StepSignals


def test_stop_file_is_seen_within_the_poll_interval(tmp_path):
    signals = StepSignals(
        str(tmp_path), rank=0, world=1, device=torch.device("cpu"), poll_seconds=0
    )
    assert not signals.due() and signals.reason is None
    (tmp_path / STOP_FILE).write_text(json.dumps({"reason": "SIGTERM received by the driver"}))
    assert signals.due()
    assert signals.reason == "SIGTERM received by the driver"


def test_checkpoint_falls_due_when_the_interval_passed(tmp_path, monkeypatch):
    clock = {"now": 1000.0}
    monkeypatch.setattr(stop.time, "monotonic", lambda: clock["now"])
    signals = StepSignals(
        str(tmp_path), rank=0, world=1, device=torch.device("cpu"), checkpoint_seconds=600
    )
    clock["now"] += 599
    assert not signals.due()
    clock["now"] += 2
    assert signals.due() and signals.reason is None  # a checkpoint, not a stop
    signals.saved()
    clock["now"] += 300
    assert not signals.due()  # the interval starts again at the checkpoint
