"""Downstream heads on a pretrained backbone (REFERENCE.md section 6).

Legend: B batch, D embedding size, K classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from crisscross.models.backbone import Backbone


class Classifier(nn.Module):
    """Fine-tuning model: the backbone, globally max-pooled, then Linear(D, K) (orthogonal init)."""

    def __init__(self, backbone: Backbone, classes: int) -> None:
        super().__init__()
        if classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {classes}")
        backbone.pool = "max"
        self.backbone = backbone
        self.head = nn.Linear(backbone.embed_dim, classes)
        nn.init.orthogonal_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Model input (B, ...) -> logits (B, K)."""
        return self.head(self.backbone(x))


def svm_features(backbone: Backbone, spec_B1FT: torch.Tensor) -> torch.Tensor:
    """The ESC-50 SVM's features: conv5 map -> max pool (1, 3) stride (1, 2) -> flatten.

    (B, 1, F, T) -> (B, D * F' * T''); 4608 = 512 x 3 x 3 for a 2 s clip at the paper's width.
    """
    conv5 = backbone.forward_features(spec_B1FT)
    return F.max_pool2d(conv5, kernel_size=(1, 3), stride=(1, 2)).flatten(1)
