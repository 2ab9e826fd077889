"""The CrissCross objective as pure functions of embeddings (no negatives, no momentum encoder).

Legend: B batch, K projector size. `z` are projector outputs, `p` predictor outputs, keyed by view:
v1, v2 (video windows t1, t2) and a1, a2 (audio windows t1, t2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

VIEWS = ("v1", "v2", "a1", "a2")
# term name -> (view x, view y), grouped by family
TERMS: dict[str, tuple[str, str]] = {
    "v1v2": ("v1", "v2"),  # intra-modal, video
    "a1a2": ("a1", "a2"),  # intra-modal, audio
    "v1a1": ("v1", "a1"),  # synchronous cross-modal
    "v2a2": ("v2", "a2"),
    "v1a2": ("v1", "a2"),  # asynchronous ("relaxed") cross-modal
    "a1v2": ("a1", "v2"),
}


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss families and the switches that turn a family off.

    `w_video` weighs L_v1v2, `w_audio` L_a1a2, `w_sync` L_v1a1 + L_v2a2, `w_async` L_v1a2 + L_a1v2.
    The weighted sum of the enabled terms is divided by their number (6 with all on).
    """

    w_video: float = 1.0
    w_audio: float = 1.0
    w_sync: float = 1.0
    w_async: float = 1.0
    intra: bool = True
    sync: bool = True
    asynchronous: bool = True

    def __post_init__(self) -> None:
        for name in ("w_video", "w_audio", "w_sync", "w_async"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if not (self.intra or self.sync or self.asynchronous):
            raise ValueError("every loss term is switched off: enable intra, sync or asynchronous")

    def term_weights(self) -> dict[str, float]:
        """Weight of each of the six terms; 0.0 for a switched-off family."""
        intra, sync, asyn = self.intra, self.sync, self.asynchronous
        return {
            "v1v2": self.w_video if intra else 0.0,
            "a1a2": self.w_audio if intra else 0.0,
            "v1a1": self.w_sync if sync else 0.0,
            "v2a2": self.w_sync if sync else 0.0,
            "v1a2": self.w_async if asyn else 0.0,
            "a1v2": self.w_async if asyn else 0.0,
        }

    def enabled_terms(self) -> list[str]:
        families = {"v1v2": self.intra, "a1a2": self.intra, "v1a1": self.sync, "v2a2": self.sync}
        families |= {"v1a2": self.asynchronous, "a1v2": self.asynchronous}
        return [term for term, on in families.items() if on]


STATS = ("embed_std/video", "embed_std/audio", "embed_cos/av")


@torch.no_grad()
def embedding_stats(z: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SimSiam's collapse indicators from the projections `z` of the four views, as scalars.

    "embed_std/<modality>": the std over the batch of the l2-normalised projections (both windows),
    averaged over the K dimensions, times sqrt(K): about 1 for outputs spread over the sphere,
    0 for a collapsed encoder that maps every input to one point. "embed_cos/av": the mean
    cosine between the synchronous video and audio projections (v1 with a1, v2 with a2).
    """
    out = {}
    for modality, views in (("video", ("v1", "v2")), ("audio", ("a1", "a2"))):
        unit = F.normalize(torch.cat([z[v].detach().float() for v in views]), dim=-1)
        out[f"embed_std/{modality}"] = (
            unit.std(dim=0, unbiased=False).mean() * unit.shape[-1] ** 0.5
        )
    cos = [
        F.cosine_similarity(z[v].detach().float(), z[a].detach().float(), dim=-1)
        for v, a in (("v1", "a1"), ("v2", "a2"))
    ]
    out["embed_cos/av"] = torch.cat(cos).mean()
    return out


def negative_cosine(p_BK: torch.Tensor, z_BK: torch.Tensor) -> torch.Tensor:
    """D(p, z) = -cos(p, stopgrad(z)), averaged over the batch: a scalar in [-1, 1]."""
    return -F.cosine_similarity(p_BK, z_BK.detach(), dim=-1).mean()


def pair_loss(
    p_x: torch.Tensor, z_x: torch.Tensor, p_y: torch.Tensor, z_y: torch.Tensor
) -> torch.Tensor:
    """L_xy = D(p_x, z_y) / 2 + D(p_y, z_x) / 2, symmetric in x and y."""
    return 0.5 * negative_cosine(p_x, z_y) + 0.5 * negative_cosine(p_y, z_x)


def crisscross_loss(
    z: Mapping[str, torch.Tensor], p: Mapping[str, torch.Tensor], weights: LossWeights
) -> dict[str, torch.Tensor]:
    """The total loss and the six pair terms from projections `z` and predictions `p` per view.

    Returns {"loss": scalar, "v1v2": ..., "a1v2": ...}. Switched-off terms are still reported, for
    monitoring, but computed without gradient and left out of the total.
    """
    missing = [view for view in VIEWS if view not in z or view not in p]
    if missing:
        raise KeyError(f"crisscross_loss needs z and p for views {VIEWS}; missing {missing}")
    enabled = set(weights.enabled_terms())
    term_weights = weights.term_weights()
    out: dict[str, torch.Tensor] = {}
    total = None
    for term, (x, y) in TERMS.items():
        with torch.set_grad_enabled(torch.is_grad_enabled() and term in enabled):
            out[term] = pair_loss(p[x], z[x], p[y], z[y])
        if term in enabled:
            weighted = term_weights[term] * out[term]
            total = weighted if total is None else total + weighted
    assert total is not None  # LossWeights guarantees one enabled family
    return {"loss": total / len(enabled), **out}
