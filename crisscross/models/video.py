"""R(2+1)D video backbone in the AVID-CMA variant, with the released weights' module names.

Legend: B batch, C channels, T frames, H height, W width, D embedding size.
"""

from __future__ import annotations

import torch
from torch import nn

from crisscross.models.backbone import Backbone, Pool

# blocks per stage (conv2x..conv5x) for each depth
VIDEO_DEPTHS: dict[int, tuple[int, int, int, int]] = {
    10: (1, 1, 1, 1),
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
}
STAGE_NAMES = ("conv2x", "conv3x", "conv4x", "conv5x")


class R2Plus1DBlock(nn.Module):
    """Factorised residual block: (1x3x3 spatial then 3x1x1 temporal) twice, add, BN, ReLU."""

    def __init__(self, in_planes: int, out_planes: int, stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        spatial_stride = (1, stride[1], stride[2])
        temporal_stride = (stride[0], 1, 1)
        self.spt_conv1 = _spatial_conv(in_planes, out_planes, spatial_stride)
        self.spt_bn1 = nn.BatchNorm3d(out_planes)
        self.tmp_conv1 = _temporal_conv(out_planes, out_planes, temporal_stride)
        self.tmp_bn1 = nn.BatchNorm3d(out_planes)
        self.spt_conv2 = _spatial_conv(out_planes, out_planes, (1, 1, 1))
        self.spt_bn2 = nn.BatchNorm3d(out_planes)
        self.tmp_conv2 = _temporal_conv(out_planes, out_planes, (1, 1, 1))
        self.out_bn = nn.BatchNorm3d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        # the released weights have a bare 1x1x1 conv (no BN) where the shape changes
        self.res_conv = None
        if in_planes != out_planes or stride != (1, 1, 1):
            self.res_conv = nn.Conv3d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x_BCTHW: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.spt_bn1(self.spt_conv1(x_BCTHW)))
        out = self.relu(self.tmp_bn1(self.tmp_conv1(out)))
        out = self.relu(self.spt_bn2(self.spt_conv2(out)))
        out = self.tmp_conv2(out)
        shortcut = x_BCTHW if self.res_conv is None else self.res_conv(x_BCTHW)
        return self.relu(self.out_bn(out + shortcut))


def _spatial_conv(in_planes: int, out_planes: int, stride: tuple[int, int, int]) -> nn.Conv3d:
    return nn.Conv3d(in_planes, out_planes, (1, 3, 3), stride=stride, padding=(0, 1, 1), bias=False)


def _temporal_conv(in_planes: int, out_planes: int, stride: tuple[int, int, int]) -> nn.Conv3d:
    return nn.Conv3d(in_planes, out_planes, (3, 1, 1), stride=stride, padding=(1, 0, 0), bias=False)


class R2Plus1D(Backbone):
    """Video encoder: (B, 3, T, H, W) -> (B, D) with D = 8 * width (512 at the paper's width 64).

    `forward_features` returns the conv5 map (B, D, T/8, H/32, W/32 rounded up); `forward` pools it
    globally, by average (pretraining) or max (fine-tuning).
    """

    modality = "video"

    def __init__(self, *, depth: int = 18, width: int = 64, pool: Pool = "avg") -> None:
        super().__init__(pool=pool)
        if depth not in VIDEO_DEPTHS:
            raise ValueError(f"R(2+1)D depth must be one of {sorted(VIDEO_DEPTHS)}, got {depth}")
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.depth, self.width = depth, width
        self.embed_dim = 8 * width
        self.conv1 = nn.Sequential(
            nn.Conv3d(3, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        in_planes = width
        for index, (name, blocks) in enumerate(zip(STAGE_NAMES, VIDEO_DEPTHS[depth], strict=True)):
            planes = width * 2**index
            stride = (1, 1, 1) if index == 0 else (2, 2, 2)
            layers = [R2Plus1DBlock(in_planes, planes, stride)]
            layers += [R2Plus1DBlock(planes, planes) for _ in range(blocks - 1)]
            self.add_module(name, nn.Sequential(*layers))
            in_planes = planes
        self.reset_parameters()

    @property
    def arch_name(self) -> str:
        return f"r2plus1d_{self.depth}"

    def forward_features(self, video_BCTHW: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) -> conv5 map (B, D, T', H', W')."""
        if video_BCTHW.dim() != 5 or video_BCTHW.shape[1] != 3:
            raise ValueError(
                f"video backbone expects (B, 3, T, H, W), got {tuple(video_BCTHW.shape)}"
            )
        x = self.conv1(video_BCTHW)
        for name in STAGE_NAMES:
            x = getattr(self, name)(x)
        return x
