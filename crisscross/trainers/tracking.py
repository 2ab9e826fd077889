"""What the training loop needs from experiment tracking; the platform implements it (MLflow).

The loop only ever sees this interface, so trainers never import a tracking library, and a
tracker must be picklable: Ray sends it to the workers, and only rank 0 uses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class Tracker(Protocol):
    def open(self) -> None:
        """Connect from a worker (rank 0), once per start of the worker group."""
        ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record metrics at a global step (may be buffered).

        A metric already stored at this step or a later one is dropped: a worker group restarted
        from a checkpoint repeats some steps, and nothing may be logged twice.
        """
        ...

    def persist(self) -> None:
        """Keep what is buffered where a crash cannot lose it (the run folder), without the
        server; called before a checkpoint, so that a checkpoint never waits on tracking."""
        ...

    def flush(self) -> None:
        """Write out whatever is buffered."""
        ...


class NullTracker:
    """Logs nothing (benchmarks, and tests of the loop itself)."""

    def open(self) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def persist(self) -> None:
        pass

    def flush(self) -> None:
        pass
