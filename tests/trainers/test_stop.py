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


def test_a_notice_with_a_deadline_gets_a_last_checkpoint_before_it(tmp_path, monkeypatch):
    """A checkpoint at the notice, and one `last_call_seconds` before its deadline: a reclaim
    loses at most that much training, not everything since the notice."""
    from types import SimpleNamespace

    clock = {"mono": 1000.0, "wall": 5000.0}
    monkeypatch.setattr(stop.time, "monotonic", lambda: clock["mono"])
    monkeypatch.setattr(stop.time, "time", lambda: clock["wall"])

    def tick(seconds: float) -> None:
        clock["mono"] += seconds
        clock["wall"] += seconds

    notice = SimpleNamespace(deadline_ms=(5000 + 6 + 120) * 1000, preempted_node_to_ranks={})
    signals = StepSignals(
        str(tmp_path),
        rank=0,
        world=1,
        device=torch.device("cpu"),
        preemption=lambda: notice,
        preemption_seconds=5,
        last_call_seconds=15,
    )
    tick(6)
    assert signals.due() and signals.fresh_notice  # the notice: deadline in 120 s
    saved = []
    for _ in range(200):  # steps of 1 s to past the deadline
        tick(1)
        if signals.due():
            saved.append((clock["wall"] - 5006, signals.at_last_call))
            signals.saved()
            assert not signals.at_last_call  # answered: a checkpoint_every one is not it
    assert saved == [(105.0, True)]  # once, 15 s before the deadline
    late = SimpleNamespace(deadline_ms=int((clock["wall"] + 10) * 1000), preempted_node_to_ranks={})
    notice = late  # a new notice closer to its deadline than 15 s: its own checkpoint is the last
    tick(5)
    assert signals.due() and signals.fresh_notice and signals.last_call is None
