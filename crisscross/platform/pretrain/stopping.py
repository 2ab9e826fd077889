"""Stop signals on the driver: SIGINT or SIGTERM asks the workers to checkpoint and stop.

The first signal writes the run folder's stop request (`trainers.stop.STOP_FILE`); the workers
checkpoint at their next step and return. A second signal, or GRACE_SECONDS without an answer,
stops at once (StopNow). Handlers are installed only on the main thread (a Tune trial runs in
another; Tune handles its signals).
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from crisscross.datasets.fs import atomic_write_text, join, resolve
from crisscross.trainers.stop import STOP_FILE

GRACE_SECONDS = 120  # for the checkpoint at the current step, after the first signal


class StopNow(BaseException):
    """Raised in the main thread by a second signal, or when the grace period ran out; a
    BaseException so that no `except Exception` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopRequest:
    """While the `with` block runs, SIGINT/SIGTERM request a stop of the run in `run_dir`.
    `signum` is the first signal received, None while there was none."""

    def __init__(
        self, run_dir: str, *, say: Callable[[str], None], grace: int = GRACE_SECONDS
    ) -> None:
        self.run_dir, self.say, self.grace = run_dir, say, grace
        self.path = join(run_dir, STOP_FILE)
        self.signum: int | None = None
        self._saved: dict[int, Any] = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def _remove(self) -> None:
        fs, inner = resolve(self.path)
        with contextlib.suppress(FileNotFoundError):
            fs.delete_file(inner)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise StopNow(signum)
        self.signum = signum
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        reason = f"{self.name} received by the driver at {stamp}"
        atomic_write_text(self.path, json.dumps({"reason": reason, "signal": self.name}))
        self.say(
            f"{self.name}: checkpointing at the current step, then stopping (at most "
            f"{self.grace} s; {self.name} again stops at once, without a checkpoint)"
        )
        signal.alarm(self.grace)

    def _expire(self, signum: int, frame: FrameType | None) -> None:
        raise StopNow(self.signum or signum)

    def __enter__(self) -> StopRequest:
        self._remove()  # a request a previous launch left behind is not this launch's
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._saved[signum] = signal.signal(signum, self._handle)
            self._saved[signal.SIGALRM] = signal.signal(signal.SIGALRM, self._expire)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved:
            signal.alarm(0)
            for signum, handler in self._saved.items():
                signal.signal(signum, handler)
        self._remove()
