"""Clip-level pieces of the downstream protocols: epoch orders, worker shares, clip averaging.

Legend: V videos (or files), C clips per video, K classes, D feature size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from crisscross.datasets.decode import DecodeError


def epoch_clips(videos: int, *, clips_per_video: int, seed: int, epoch: int) -> np.ndarray:
    """Row numbers of one fine-tuning epoch: every video `clips_per_video` times, shuffled."""
    order = np.tile(np.arange(videos), clips_per_video)
    np.random.default_rng([seed, epoch]).shuffle(order)
    return order


def worker_share(
    order: np.ndarray, *, global_batch: int, rank: int, world: int
) -> tuple[np.ndarray, int]:
    """(this worker's positions in `order`, steps): step s takes global batch s's rank-th slice,
    so every worker runs the same number of steps; the last partial global batch is dropped."""
    steps = len(order) // global_batch
    local = global_batch // world
    positions = np.arange(steps * global_batch).reshape(steps, world, local)[:, rank].ravel()
    return positions, steps


def average_clip_softmax(logits_VCK: torch.Tensor) -> torch.Tensor:
    """(V, C, K) logits of C clips per video -> (V, K) class probabilities, the mean softmax."""
    return logits_VCK.float().softmax(dim=-1).mean(dim=1)


class ClipDataset(torch.utils.data.Dataset):
    """Samples of `rows` at `positions` of an epoch order, through a per-sample function.

    A sample that fails to decode gives None (`collate_skipping_failures` drops and counts it).
    """

    def __init__(
        self,
        rows: Sequence[Mapping[str, Any]],
        order: np.ndarray,
        positions: np.ndarray,
        sample: Callable[..., dict[str, np.ndarray]],
        *,
        epoch: int,
    ) -> None:
        self.rows, self.order, self.positions = rows, order, positions
        self.sample, self.epoch = sample, epoch

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict[str, np.ndarray] | None:
        position = int(self.positions[i])
        row = self.rows[int(self.order[position])]
        try:
            return self.sample(row, epoch=self.epoch, index=position)
        except (DecodeError, ValueError):
            return None
