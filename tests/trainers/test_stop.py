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


def test_a_preemption_notice_is_asked_on_rank_0s_clock_and_checkpointed_once(tmp_path, monkeypatch):
    """Ray's `get_preemption_info` is a barrier: it is asked every `preemption_seconds`, not at
    every step; a notice makes the workers checkpoint once, and a second notice again."""
    from types import SimpleNamespace

    clock = {"now": 1000.0}
    monkeypatch.setattr(stop.time, "monotonic", lambda: clock["now"])
    asked, notice = [], {"now": None}

    def preemption():
        asked.append(clock["now"])
        return notice["now"]

    signals = StepSignals(
        str(tmp_path),
        rank=0,
        world=1,
        device=torch.device("cpu"),
        preemption=preemption,
        preemption_seconds=5,
    )
    clock["now"] += 1
    assert not signals.due() and asked == []  # not asked before 5 s
    clock["now"] += 4
    assert not signals.due() and asked == [1005.0]  # asked: no notice
    first = SimpleNamespace(deadline_ms=None, preempted_node_to_ranks={"node-a": [1]})
    notice["now"] = first
    clock["now"] += 5
    assert signals.due() and signals.reason is None  # a checkpoint, not a stop
    assert signals.fresh_notice and signals.notice is first
    clock["now"] += 5
    assert not signals.due()  # the same notice: answered already
    assert not signals.fresh_notice  # news for its own step only
    notice["now"] = SimpleNamespace(deadline_ms=None, preempted_node_to_ranks={"node-b": [0]})
    clock["now"] += 5
    assert signals.due()
    assert len(asked) == 4


def test_a_preemption_notice_in_words():
    import time
    from types import SimpleNamespace

    notice = SimpleNamespace(
        deadline_ms=int((time.time() + 30.4) * 1000), preempted_node_to_ranks={"abc": [2, 3]}
    )
    assert stop.preemption_words(notice) in (
        "a preemption notice for node abc (ranks 2, 3), deadline in 30 s",
        "a preemption notice for node abc (ranks 2, 3), deadline in 29 s",
    )
