"""Downstream heads on a pretrained backbone (REFERENCE.md section 6).

Legend: B batch, D embedding size, K classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crisscross.models.backbone import Backbone


class Classifier(nn.Module):
    """Fine-tuning model: the backbone, globally max-pooled, optionally dropout, then Linear(D, K)
    (orthogonal init).

    `dropout` is the probability of zeroing a pooled feature in training (0: no dropout layer).
    Dropout has no parameters, so the state_dict keys are the same with or without it.
    """

    def __init__(self, backbone: Backbone, classes: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        if classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        backbone.pool = "max"
        self.backbone = backbone
        # registered before the head, so the module order reads as the forward pass
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.head = nn.Linear(backbone.embed_dim, classes)
        nn.init.orthogonal_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Model input (B, ...) -> logits (B, K)."""
        z_BD = self.backbone(x)
        if self.dropout is not None:
            z_BD = self.dropout(z_BD)
        return self.head(z_BD)


def svm_features(
    backbone: Backbone, spec_B1FT: torch.Tensor, *, l2_time: bool = False
) -> torch.Tensor:
    """The ESC-50 SVM's features: conv5 map -> max pool (1, 3) stride (1, 2) -> flatten.

    (B, 1, F, T) -> (B, D * F' * T''); 4608 = 512 x 3 x 3 for a 2 s clip at the paper's width.
    `l2_time`: the reference protocol's l2-normalisation over the last (time) axis of the pooled
    4-d map before flattening.
    """
    conv5 = backbone.forward_features(spec_B1FT)
    pooled = F.max_pool2d(conv5, kernel_size=(1, 3), stride=(1, 2))
    if l2_time:
        pooled = F.normalize(pooled, p=2, dim=-1)
    return pooled.flatten(1)
