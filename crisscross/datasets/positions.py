"""Where training is inside an epoch: the positions of the epoch's order already trained on,
kept small (a frontier and its exceptions), and each worker's progress through its share.

Positions number an epoch's order (`epochs.epoch_positions`): 0 .. total - 1. A resumed epoch
trains on the positions left, in order, worker r taking every world-th of them from the r-th.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

_EMPTY = np.zeros(0, np.int64)


def _ids(values: np.ndarray | Sequence[int]) -> np.ndarray:
    return np.unique(np.asarray(values, np.int64))


@dataclass(frozen=True)
class DataPosition:
    """The positions of one epoch's order trained on: all below `frontier` but `holes`, and
    `extras` at or above it (both sorted int64). Its size grows with the rows skipped and the
    workers' skew, not with the dataset."""

    frontier: int = 0
    holes: np.ndarray = field(default_factory=lambda: _EMPTY)
    extras: np.ndarray = field(default_factory=lambda: _EMPTY)

    @classmethod
    def from_ids(cls, ids: np.ndarray | Sequence[int]) -> DataPosition:
        """The position whose trained set is `ids` (any order, repeats allowed)."""
        return cls(0, _EMPTY, _ids(ids)).compact()

    @property
    def count(self) -> int:
        """How many positions are trained on."""
        return self.frontier - len(self.holes) + len(self.extras)

    @property
    def size(self) -> int:
        """How many numbers it holds (what a checkpoint stores)."""
        return 1 + len(self.holes) + len(self.extras)

    def ids(self) -> np.ndarray:
        """The trained positions, sorted (tests and small epochs only: it is `count` long)."""
        below = np.setdiff1d(np.arange(self.frontier, dtype=np.int64), self.holes)
        return np.concatenate([below, self.extras])

    def remaining(self, total: int) -> int:
        """How many of `total` positions are left."""
        return total - self.count

    def remaining_at(self, at: np.ndarray, total: int) -> np.ndarray:
        """The positions of the `at`-th (int array, each below `remaining(total)`) of those left,
        which are the holes, then the positions from the frontier on that are not extras."""
        at = np.asarray(at, np.int64)
        if at.size and at.max() >= self.remaining(total):
            raise IndexError(f"only {self.remaining(total)} positions are left of {total}")
        out = np.empty_like(at)
        low = at < len(self.holes)
        out[low] = self.holes[at[low]]
        j = at[~low] - len(self.holes)  # the j-th position from the frontier on, extras skipped
        gaps = self.extras - self.frontier - np.arange(len(self.extras))
        out[~low] = self.frontier + j + np.searchsorted(gaps, j, side="right")
        return out

    def share(self, total: int, *, rank: int, world: int) -> np.ndarray:
        """Worker `rank`'s positions of those left: every `world`-th from the `rank`-th."""
        return self.remaining_at(np.arange(rank, self.remaining(total), world), total)

    def with_ids(self, ids: np.ndarray) -> DataPosition:
        """This position with `ids` trained on too."""
        ids = _ids(ids)
        below = ids[ids < self.frontier]
        return DataPosition(
            self.frontier,
            np.setdiff1d(self.holes, below),
            np.union1d(self.extras, ids[ids >= self.frontier]).astype(np.int64),
        )

    def without_ids(self, ids: np.ndarray) -> DataPosition:
        """This position with `ids` not trained on."""
        ids = _ids(ids)
        below = ids[ids < self.frontier]
        return DataPosition(
            self.frontier,
            np.union1d(self.holes, below).astype(np.int64),
            np.setdiff1d(self.extras, ids[ids >= self.frontier]),
        )

    def compact(self) -> DataPosition:
        """The same set with the frontier where it leaves the fewest exceptions."""
        h, e, f = self.holes, self.extras, self.frontier
        # frontier just past each extra: the extras below become trained, the gaps holes
        up = len(h) + (e + 1 - f - np.arange(1, len(e) + 1)) + (len(e) - np.arange(1, len(e) + 1))
        # frontier at each hole: the holes from it on leave, what they fenced becomes extras
        down = np.arange(len(h)) + len(e) + (f - h) - (len(h) - np.arange(len(h)))
        best = len(h) + len(e)
        if up.size and up.min() < best and (not down.size or up.min() <= down.min()):
            t = int(up.argmin())
            g = int(e[t]) + 1
            gaps = np.setdiff1d(np.arange(f, g, dtype=np.int64), e[: t + 1])
            return DataPosition(g, np.concatenate([h, gaps]), e[t + 1 :])
        if down.size and down.min() < best:
            t = int(down.argmin())
            g = int(h[t])
            fenced = np.setdiff1d(np.arange(g, f, dtype=np.int64), h[t:])
            return DataPosition(g, h[:t], np.concatenate([fenced, e]))
        return self

    def advanced(self, cursors: Sequence[tuple[int, np.ndarray]], *, total: int) -> DataPosition:
        """This position after each worker r of `len(cursors)` trained on its `share` up to
        `cursors[r] = (cursor, holes)`: the share's first `cursor` positions less `holes`."""
        world = len(cursors)
        if not world:
            return self
        least = min(c for c, _ in cursors)
        k = least * world  # the first k positions left: every worker's first `least`
        if k >= len(self.holes):
            frontier = (
                int(self.remaining_at(np.array([k]), total)[0])
                if k < self.remaining(total)
                else total
            )
            done = DataPosition(frontier, _EMPTY, self.extras[self.extras >= frontier])
        else:
            done = DataPosition(self.frontier, self.holes[k:], self.extras)
        ahead = [
            np.arange(least, c, dtype=np.int64) * world + r for r, (c, _) in enumerate(cursors)
        ]
        done = done.with_ids(self.remaining_at(np.concatenate(ahead), total))
        untrained = np.concatenate([_EMPTY, *(np.asarray(h, np.int64) for _, h in cursors)])
        return done.without_ids(untrained).compact()

    def state(self) -> dict[str, object]:
        """What a checkpoint stores (plain ints and int64 arrays)."""
        return {"frontier": self.frontier, "holes": self.holes, "extras": self.extras}

    @classmethod
    def from_state(cls, state: dict[str, object]) -> DataPosition:
        return cls(
            int(state["frontier"]),  # type: ignore[call-overload]
            np.asarray(state["holes"], np.int64),
            np.asarray(state["extras"], np.int64),
        )


class ShardProgress:
    """One worker's way through its share of an epoch: which of `positions` (sorted, from
    `DataPosition.share`) it trained on; `cursor()` is what `DataPosition.advanced` takes."""

    def __init__(self, positions: np.ndarray) -> None:
        self.positions = np.asarray(positions, np.int64)
        self.trained = np.zeros(len(self.positions), bool)

    def mark(self, index: np.ndarray) -> None:
        """The positions of a batch trained on (each one of `positions`)."""
        at = np.searchsorted(self.positions, np.asarray(index, np.int64))
        if at.size and (at.max() >= len(self.positions) or (self.positions[at] != index).any()):
            raise ValueError("a trained position is not in this worker's share")
        self.trained[at] = True

    def cursor(self) -> tuple[int, np.ndarray]:
        """(how far into the share it got, the positions before that not trained on)."""
        done = np.flatnonzero(self.trained)
        end = int(done[-1]) + 1 if done.size else 0
        return end, self.positions[:end][~self.trained[:end]]
