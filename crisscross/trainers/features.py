"""Frozen features of a labelled dataset: one vector per file, averaged over its test clips."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from crisscross.datasets.transforms import normalize


@torch.no_grad()
def extract_features(
    encode: Callable[[torch.Tensor], torch.Tensor],
    rows: Sequence[Mapping[str, Any]],
    sample: Callable[..., dict[str, np.ndarray]],
    *,
    key: str,
    device: torch.device,
    batch_clips: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """((N, D) features, (N,) labels) for `rows`, each the mean over the clips `sample` gives.

    `key` is "video" (uint8 clips, normalised here) or "audio" (log-mel images); `encode` maps a
    batch of model inputs to (B, D).
    """
    features, labels, pending, owners = [], [], [], []

    def flush() -> None:
        batch = torch.from_numpy(np.concatenate(pending)).to(device)
        inputs = normalize(batch) if key == "video" else batch.float()
        out = encode(inputs).float().cpu()
        for row_index, (start, stop) in owners:
            features[row_index] = out[start:stop].mean(dim=0)
        pending.clear()
        owners.clear()

    for i, row in enumerate(rows):
        item = sample(row, epoch=0, index=i)
        clips = item[key]
        offset = sum(len(p) for p in pending)
        pending.append(clips)
        owners.append((i, (offset, offset + len(clips))))
        features.append(None)
        labels.append(int(item["label"]))
        if offset + len(clips) >= batch_clips:
            flush()
    if pending:
        flush()
    return torch.stack(features), torch.tensor(labels)
