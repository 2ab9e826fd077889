"""Several independent training draws of one file as one sample (the ESC-50 SVM's crops)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RepeatedDraws:
    """`times` draws of a one-clip training sampler, stacked: {key: (times, ...), "label"}.

    Draw j of file i uses the sampler's (epoch j, index i) generators, so every draw differs and
    each is reproducible.
    """

    sample: Callable[..., dict[str, np.ndarray]]
    times: int
    key: str

    def __call__(self, row: Mapping[str, Any], *, epoch: int, index: int) -> dict[str, np.ndarray]:
        draws = [
            self.sample(row, epoch=epoch * self.times + j, index=index) for j in range(self.times)
        ]
        return {
            self.key: np.concatenate([d[self.key] for d in draws]),
            "label": draws[0]["label"],
        }
