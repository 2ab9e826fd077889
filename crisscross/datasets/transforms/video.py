"""Video augmentations on uint8 clips, one parameter draw per clip, from an explicit generator.

A clip is (T, 3, H, W) uint8; every frame gets the same crop, flip, colour change, blur and
cutout. Outputs stay uint8 so that they cross the object store and the host-to-device copy at a
quarter of float32's size; `normalize` (on the training device) turns them into model input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# cutout fills with the mean colour, which normalises to 0
CUTOUT_FILL = torch.tensor(IMAGENET_MEAN).mul(255).round().to(torch.uint8).view(3, 1, 1)


@dataclass(frozen=True)
class VideoAugment:
    """REFERENCE.md section 4; the defaults are the pretraining recipe."""

    size: int = 112
    crop_area: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.2)
    jitter_p: float = 1.0
    gray_p: float = 0.2
    blur_p: float = 0.5
    blur_kernel: int = 11
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    cutout_max: int = 20

    def __call__(self, clip_TCHW: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """(T, 3, H, W) uint8 -> (T, 3, size, size) uint8."""
        top, left, h, w = _crop_box(clip_TCHW.shape[-2:], self.crop_area, self.crop_ratio, g)
        x = TF.resized_crop(clip_TCHW, top, left, h, w, [self.size, self.size], antialias=True)
        if _chance(g, self.flip_p):
            x = TF.horizontal_flip(x)
        if _chance(g, self.jitter_p):
            x = _colour_jitter(x, self.jitter, g)
        if _chance(g, self.gray_p):
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        if _chance(g, self.blur_p):
            sigma = _uniform(g, *self.blur_sigma)
            x = TF.gaussian_blur(x, [self.blur_kernel, self.blur_kernel], [sigma, sigma])
        if self.cutout_max > 0:
            x = _cutout(x, self.cutout_max, g)
        return x


def eval_clip(clip_TCHW: torch.Tensor, size: int) -> torch.Tensor:
    """Evaluation view: short side to size / 0.875, centre crop to size; uint8 in and out."""
    x = TF.resize(clip_TCHW, [round(size / 0.875)], antialias=True)
    return TF.center_crop(x, [size, size])


def normalize(clip_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (..., T, 3, H, W) -> float (..., 3, T, H, W), ImageNet-normalised: model input."""
    mean = clip_uint8.new_tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1) * 255
    std = clip_uint8.new_tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1) * 255
    x = (clip_uint8.float() - mean) / std
    return x.transpose(-4, -3)


def _chance(g: torch.Generator, p: float) -> bool:
    return p > 0 and bool(torch.rand((), generator=g) < p)


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return float(low + (high - low) * torch.rand((), generator=g))


def _crop_box(hw, area, ratio, g) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box, drawn from `g`."""
    height, width = int(hw[0]), int(hw[1])
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = height * width * _uniform(g, *area)
        aspect = math.exp(_uniform(g, *log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=g))
            left = int(torch.randint(0, width - w + 1, (), generator=g))
            return top, left, h, w
    side = min(height, width)  # fallback: the centred largest square
    return (height - side) // 2, (width - side) // 2, side, side


def _colour_jitter(x: torch.Tensor, strength, g: torch.Generator) -> torch.Tensor:
    b, c, s, h = strength
    ops = [
        lambda v: TF.adjust_brightness(v, _uniform(g, 1 - b, 1 + b)),
        lambda v: TF.adjust_contrast(v, _uniform(g, 1 - c, 1 + c)),
        lambda v: TF.adjust_saturation(v, _uniform(g, 1 - s, 1 + s)),
        lambda v: TF.adjust_hue(v, _uniform(g, -h, h)),
    ]
    for index in torch.randperm(4, generator=g).tolist():
        x = ops[index](x)
    return x


def _cutout(x: torch.Tensor, max_side: int, g: torch.Generator) -> torch.Tensor:
    height, width = x.shape[-2:]
    side = int(torch.randint(1, max_side + 1, (), generator=g))
    top = int(torch.randint(0, max(1, height - side + 1), (), generator=g))
    left = int(torch.randint(0, max(1, width - side + 1), (), generator=g))
    x = x.clone()
    x[..., top : top + side, left : left + side] = CUTOUT_FILL.to(x.dtype)
    return x
