"""Checkpoints the workers agree on between steps: a stop the driver asked for, or time passed.

The driver asks a run to stop (on SIGINT/SIGTERM) by writing STOP_FILE into the run folder. Rank 0
looks for it at most every `poll_seconds`, and checks the time since the last checkpoint; every
rank learns the answer at the same step, from the one all-reduce per step that also tells whether
every rank still has a batch (`exchange`), so all checkpoint and stop at the same step.

A spot node's reclaim notice (`ray.train.get_preemption_info`, passed in as `preemption`) is
asked every `preemption_seconds` by rank 0's clock; that call is a barrier of every rank, so
the all-reduce tells every rank at which step to make it. On a notice the workers checkpoint at
once, once per notice, and train on; a notice with a deadline gets a last checkpoint
`last_call_seconds` before it (rank 0's wall clock), so a reclaim loses at most that much
training whatever the notice period. Ray Train restarts the group from the latest checkpoint
at the deadline, and does not charge it to `run.max_failures`; a node that dies before its
deadline is an ordinary failure to Ray (tests/platform/cluster/test_two_nodes.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pyarrow.fs as pafs
import torch
import torch.distributed as dist

from crisscross.datasets.fs import join, resolve

STOP_FILE = "crisscross_stop.json"  # {"reason": "..."}: written by the driver, read by rank 0
_NONE, _TIMED, _STOP = 0, 1, 2
# before a preemption deadline: a checkpoint of the paper-size models to shared storage takes
# seconds, and rank 0 looks at the clock once per step
LAST_CALL_SECONDS = 15.0


def read_stop(storage: str) -> str | None:
    """The reason in the run folder's stop request, None when there is none."""
    fs, inner = resolve(join(storage, STOP_FILE))
    if fs.get_file_info(inner).type == pafs.FileType.NotFound:
        return None
    try:
        with fs.open_input_stream(inner) as stream:
            return str(json.loads(stream.read()).get("reason") or "stop requested")
    except (OSError, ValueError):  # removed or being replaced meanwhile: still a request
        return "stop requested"


class StepSignals:
    """Asked by every worker after every step: checkpoint now? `reason` is set once a stop was
    requested (rank 0 has the driver's words; the others "stop requested")."""

    def __init__(
        self,
        storage: str,
        *,
        rank: int,
        world: int,
        device: torch.device,
        checkpoint_seconds: float = 0.0,
        poll_seconds: float = 1.0,
        preemption: Callable[[], Any] | None = None,
        preemption_seconds: float = 5.0,
        last_call_seconds: float = LAST_CALL_SECONDS,
    ) -> None:
        self.storage, self.rank, self.world, self.device = storage, rank, world, device
        self.checkpoint_seconds, self.poll_seconds = checkpoint_seconds, poll_seconds
        self.preemption, self.preemption_seconds = preemption, preemption_seconds
        self.reason: str | None = None
        self.notice: Any = None  # the preemption notice checkpointed for, once seen
        self.fresh_notice = False  # a notice came at this step (the loop says so)
        self.last_call_seconds = last_call_seconds
        self.last_call: float | None = None  # wall-clock time of the checkpoint before a deadline
        self.at_last_call = False  # this step's checkpoint is that one (the loop says so)
        self._polled = self._saved = self._asked = time.monotonic()

    def due(self) -> bool:
        """Whether to checkpoint at this step; every worker calls it at the same step."""
        return self.exchange(True)[1]

    def exchange(self, has_batch: bool) -> tuple[bool, bool]:
        """(every rank has its next batch, checkpoint now), agreed by all ranks in one
        all-reduce; every worker calls it at the same step, before the step."""
        code, ask = _NONE, 0
        self.fresh_notice = self.at_last_call = False  # news for the step it came at only
        if self.rank == 0:
            now = time.monotonic()
            if now - self._polled >= self.poll_seconds:
                self._polled = now
                self.reason = read_stop(self.storage)
                code = _STOP if self.reason else _NONE
            if code == _NONE and self.checkpoint_seconds:
                code = _TIMED if now - self._saved >= self.checkpoint_seconds else _NONE
            if self.last_call is not None and time.time() >= self.last_call:
                self.last_call, self.at_last_call = None, code == _NONE
                code = code or _TIMED
            if self.preemption is not None and now - self._asked >= self.preemption_seconds:
                self._asked, ask = now, 1
        missing = int(not has_batch)
        if self.world > 1:
            t = torch.tensor([missing, code, ask], device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            missing, code, ask = (int(v) for v in t.tolist())
        if code == _STOP and self.reason is None:
            self.reason = "stop requested"
        if ask and code == _NONE and self._new_notice():
            code = _TIMED
        return not missing, code != _NONE

    def _new_notice(self) -> bool:
        """Whether a preemption notice came that no checkpoint answered yet (every rank asks
        at the same step: the call is a barrier)."""
        notice = self.preemption()
        if notice is None or notice == self.notice:
            return False
        self.notice, self.fresh_notice = notice, True
        deadline = getattr(notice, "deadline_ms", None)
        self.last_call = None
        if deadline is not None and deadline / 1000 - self.last_call_seconds > time.time():
            self.last_call = deadline / 1000 - self.last_call_seconds
        return True

    def saved(self) -> None:
        """A checkpoint was written now (the time-based interval starts again); the notice or
        last call it answered is no longer news (another checkpoint before the next exchange,
        `run.checkpoint_every`'s, is not said to answer it)."""
        self._saved = time.monotonic()
        self.fresh_notice = self.at_last_call = False


def preemption_words(notice: Any) -> str:
    """'a preemption notice for node n1 (ranks 2, 3), deadline in 41 s' from Ray's
    PreemptionInfo (`deadline_ms`, `preempted_node_to_ranks`)."""
    nodes = getattr(notice, "preempted_node_to_ranks", {}) or {}
    where = ", ".join(
        f"{node[:12]} (ranks {', '.join(str(r) for r in ranks)})"
        for node, ranks in sorted(nodes.items())
    )
    text = "a preemption notice" + (f" for node {where}" if where else "")
    deadline = getattr(notice, "deadline_ms", None)
    if deadline is not None:
        text += f", deadline in {max(0.0, deadline / 1000 - time.time()):.0f} s"
    return text
