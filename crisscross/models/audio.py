"""ResNet-18 audio backbone over a 1-channel log-mel image, with the released weights' module names.

Legend: B batch, F mel bins, T spectrogram frames, D embedding size.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from crisscross.models.backbone import Backbone, Pool

AUDIO_STAGE_NAMES = ("block1", "block2", "block3", "block4")


class AudioResNet18(Backbone):
    """Audio encoder: (B, 1, F, T) -> (B, D) with D = 8 * width (512 at the paper's width 64).

    A 2 s clip (1, 80, 201) gives a conv5 map of (D, 3, 7); `forward` pools it globally.
    """

    modality = "audio"

    def __init__(self, *, width: int = 64, pool: Pool = "avg") -> None:
        super().__init__(pool=pool)
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.width = width
        self.embed_dim = 8 * width
        self.conv1 = nn.Sequential(
            nn.Conv2d(1, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        in_planes = width
        for index, name in enumerate(AUDIO_STAGE_NAMES):
            planes = width * 2**index
            stride = 1 if index == 0 else 2
            downsample = None
            if stride != 1 or in_planes != planes:
                downsample = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                    nn.BatchNorm2d(planes),
                )
            stage = nn.Sequential(
                BasicBlock(in_planes, planes, stride, downsample), BasicBlock(planes, planes)
            )
            self.add_module(name, stage)
            in_planes = planes
        self.reset_parameters()

    @property
    def arch_name(self) -> str:
        return "resnet18_audio"

    def forward_features(self, spec_B1FT: torch.Tensor) -> torch.Tensor:
        """(B, 1, F, T) -> conv5 map (B, D, F', T')."""
        if spec_B1FT.dim() != 4 or spec_B1FT.shape[1] != 1:
            raise ValueError(f"audio backbone expects (B, 1, F, T), got {tuple(spec_B1FT.shape)}")
        x = self.conv1(spec_B1FT)
        for name in AUDIO_STAGE_NAMES:
            x = getattr(self, name)(x)
        return x
