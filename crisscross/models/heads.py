"""SimSiam-style projector and predictor heads, one pair per modality."""

from __future__ import annotations

from torch import nn


def projector(in_dim: int, *, out_dim: int = 2048, layers: int = 3) -> nn.Sequential:
    """(B, in_dim) -> (B, out_dim): Linear-BN-ReLU blocks ending in Linear-BN (2 or 3 layers).

    The Linear layers feed a BatchNorm, so they carry no bias.
    """
    if layers not in (2, 3):
        raise ValueError(f"projector layers must be 2 or 3, got {layers}")
    modules: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        modules += [nn.Linear(dim, out_dim, bias=False), nn.BatchNorm1d(out_dim), nn.ReLU(True)]
        dim = out_dim
    modules += [nn.Linear(dim, out_dim, bias=False), nn.BatchNorm1d(out_dim)]
    return nn.Sequential(*modules)


def predictor(dim: int = 2048, *, hidden: int = 512) -> nn.Sequential:
    """(B, dim) -> (B, dim) through a bottleneck: Linear-BN-ReLU-Linear."""
    return nn.Sequential(
        nn.Linear(dim, hidden, bias=False),
        nn.BatchNorm1d(hidden),
        nn.ReLU(True),
        nn.Linear(hidden, dim),
    )
