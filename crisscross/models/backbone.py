"""The interface every backbone shares: a conv5 feature map, a global pool, an embedding size."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import nn

Pool = Literal["avg", "max"]


class Backbone(nn.Module):
    """Base of the encoders: `forward_features` gives the conv5 map, `forward` the (B, D) embedding.

    Subclasses set `embed_dim` and implement `forward_features`. Pooling has no parameters, so
    switching `pool` between "avg" (pretraining) and "max" (fine-tuning) keeps the weights loadable.
    """

    modality: ClassVar[str]
    embed_dim: int
    width: int

    @property
    def arch_name(self) -> str:
        """The registered name this architecture is built by (e.g. "r2plus1d_18")."""
        raise NotImplementedError

    def __init__(self, *, pool: Pool = "avg") -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """conv5 map (B, D, *spatial) -> (B, D), pooled by `self.pool` over every other axis."""
        flat = features.flatten(2)
        return flat.amax(dim=2) if self.pool == "max" else flat.mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_parameters(self) -> None:
        """He-normal convolutions, unit BatchNorm: the reference initialisation."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
