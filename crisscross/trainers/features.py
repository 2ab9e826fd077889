"""Frozen features of a labelled dataset: per clip, or one vector per file averaged over its clips.

Legend: N files, C clips per file, D feature size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from crisscross.datasets.decode import DecodeError
from crisscross.datasets.transforms import normalize


@torch.no_grad()
def clip_features(
    encode: Callable[[torch.Tensor], torch.Tensor],
    rows: Sequence[Mapping[str, Any]],
    sample: Callable[..., dict[str, np.ndarray]],
    *,
    key: str,
    device: torch.device,
    batch_clips: int = 32,
    skip_failures: bool = False,
    first: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """((N, C, D) features, (N,) labels, (N,) decoded) of `rows`; every file must give C clips.
    Row i is sampled as index `first + i` (its place in the whole list, when `rows` is a part).

    `key` is "video" (uint8 clips, normalised here) or "audio" (log-mel images); `encode` maps a
    batch of model inputs to (B, D). With `skip_failures`, a file that fails to decode gets zero
    features and decoded False instead of raising.
    """
    out: list[torch.Tensor | None] = [None] * len(rows)
    labels = torch.tensor([int(row["label"]) for row in rows], dtype=torch.int64)
    pending: list[np.ndarray] = []
    owners: list[tuple[int, int, int]] = []

    def flush() -> None:
        batch = torch.from_numpy(np.concatenate(pending)).to(device)
        inputs = normalize(batch) if key == "video" else batch.float()
        encoded = encode(inputs).float().cpu()
        for i, start, stop in owners:
            out[i] = encoded[start:stop]
        pending.clear()
        owners.clear()

    for i, row in enumerate(rows):
        try:
            clips = sample(row, epoch=0, index=first + i)[key]
        except (DecodeError, ValueError):
            if not skip_failures:
                raise
            continue
        offset = sum(len(p) for p in pending)
        pending.append(clips)
        owners.append((i, offset, offset + len(clips)))
        if offset + len(clips) >= batch_clips:
            flush()
    if pending:
        flush()
    decoded = torch.tensor([f is not None for f in out])
    shape = next((f.shape for f in out if f is not None), None)
    if shape is None:
        return torch.zeros(len(rows), 0, 0), labels, decoded
    zeros = torch.zeros(shape)
    return torch.stack([f if f is not None else zeros for f in out]), labels, decoded


def extract_features(
    encode: Callable[[torch.Tensor], torch.Tensor],
    rows: Sequence[Mapping[str, Any]],
    sample: Callable[..., dict[str, np.ndarray]],
    *,
    key: str,
    device: torch.device,
    batch_clips: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """((N, D) features, (N,) labels) for `rows`, each the mean over the clips `sample` gives."""
    features, labels, _ = clip_features(
        encode, rows, sample, key=key, device=device, batch_clips=batch_clips
    )
    return features.mean(dim=1), labels


def encoder_of(backbone: torch.nn.Module, kind: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The feature function: "embedding" (the globally pooled (B, D) output), "svm" (the
    ESC-50 SVM's pooled conv5 map) or "svm_reference" (the same, l2-normalised over time)."""
    from crisscross.models import svm_features

    if kind in ("svm", "svm_reference"):
        return lambda x: svm_features(backbone, x, l2_time=kind == "svm_reference")
    return backbone


def backbone_clip_features(
    backbone: torch.nn.Module,
    rows: Sequence[Mapping[str, Any]],
    samples: Mapping[str, Callable[..., dict[str, np.ndarray]]],
    *,
    key: str,
    kind: str,
    device: torch.device,
    first: int = 0,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """For each named sampler: ((N, C, D) features, (N,) decoded) of `rows` (files that fail
    to decode get zeros and decoded False); row i sampled as index `first + i`."""
    backbone = backbone.to(device).eval()
    encode = encoder_of(backbone, kind)
    out = {}
    for name, sample in samples.items():
        features, _, decoded = clip_features(
            encode, rows, sample, key=key, device=device, skip_failures=True, first=first
        )
        out[name] = (features, decoded)
    return out
