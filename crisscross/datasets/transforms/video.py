"""Video augmentations on uint8 clips, one parameter draw per clip, from an explicit generator.

A clip is (T, 3, H, W) uint8; every frame gets the same crop, flip, colour change, blur and
cutout. Outputs stay uint8 so that they cross the object store and the host-to-device copy at a
quarter of float32's size; `normalize` (on the training device) turns them into model input.

Speed matters here: this runs for every view of every sample on the decode CPUs. Brightness,
contrast, saturation, grayscale and hue are all affine maps of RGB (hue as a rotation about the
grey axis in YIQ space, the linear form NVIDIA DALI uses, instead of an HSV round trip), so the
random-order colour jitter composes into one 3x3 matrix and a per-frame offset applied in one
pass; contrast's per-frame mean is carried through the composition exactly. Unlike torchvision,
values are clamped once at the end rather than after every step. The blur is separable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601, as torchvision's grayscale
RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
YIQ_TO_RGB = torch.linalg.inv(RGB_TO_YIQ)
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
        crop = clip_TCHW[..., top : top + h, left : left + w].float()
        shrink = min(h, w) / self.size  # antialiasing matters only when shrinking a lot
        x = F.interpolate(
            crop, size=(self.size, self.size), mode="bilinear", antialias=shrink > 1.5
        )
        if _chance(g, self.flip_p):
            x = x.flip(-1)
        matrix, offset = torch.eye(3), torch.zeros(x.shape[0], 3)
        if _chance(g, self.jitter_p):
            matrix, offset = _colour_jitter(x.mean(dim=(-2, -1)), self.jitter, g)
        if _chance(g, self.gray_p):
            matrix, offset = _then(GRAY, torch.zeros(3), matrix, offset)
        x = torch.einsum("ij,tjhw->tihw", matrix, x) + offset[:, :, None, None]
        if _chance(g, self.blur_p):
            x = _blur(x, self.blur_kernel, _uniform(g, *self.blur_sigma))
        x = x.clamp_(0, 255).round_().to(torch.uint8)
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


GRAY = LUMA.expand(3, 3).clone()  # every channel becomes the luma


def _then(a: torch.Tensor, b: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor):
    """Compose: apply (matrix, offset) first, then x -> a x + b."""
    return a @ matrix, offset @ a.T + b


def _colour_jitter(means_T3: torch.Tensor, strength, g: torch.Generator):
    """The jitter as x -> M x + o_t; `means_T3` are the frames' mean colours (for contrast)."""
    b, c, s, h = strength
    factors = [
        _uniform(g, 1 - b, 1 + b),
        _uniform(g, 1 - c, 1 + c),
        _uniform(g, 1 - s, 1 + s),
        _uniform(g, -h, h),
    ]
    matrix, offset = torch.eye(3), torch.zeros(means_T3.shape[0], 3)
    for index in torch.randperm(4, generator=g).tolist():
        f = factors[index]
        means = means_T3 @ matrix.T + offset  # each frame's mean colour so far
        if index == 0:  # brightness
            step, shift = f * torch.eye(3), torch.zeros(3)
        elif index == 1:  # contrast: blend with the frame's mean grey
            step, shift = f * torch.eye(3), ((1 - f) * (means @ LUMA))[:, None].expand(-1, 3)
        elif index == 2:  # saturation: blend with the pixel's grey
            step, shift = f * torch.eye(3) + (1 - f) * GRAY, torch.zeros(3)
        else:  # hue: rotate the chroma plane of YIQ by f turns
            cos, sin = math.cos(2 * math.pi * f), math.sin(2 * math.pi * f)
            rotation = torch.tensor([[1.0, 0, 0], [0, cos, -sin], [0, sin, cos]])
            step, shift = YIQ_TO_RGB @ rotation @ RGB_TO_YIQ, torch.zeros(3)
        matrix, offset = _then(step, shift, matrix, offset)
    return matrix, offset


def _blur(x: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (T, 3, H, W) float, reflect-padded like torchvision."""
    half = kernel // 2
    taps = torch.exp(-0.5 * (torch.arange(-half, half + 1, dtype=x.dtype) / sigma) ** 2)
    taps = taps / taps.sum()
    h, w = x.shape[-2:]
    # as banded matrices, reflect padding folded in: two matrix products beat a 1-channel
    # convolution on CPU by about 2x
    return _band(h, taps) @ x @ _band(w, taps).T


def _band(n: int, taps: torch.Tensor) -> torch.Tensor:
    """(n, n) matrix whose product with a column blurs it, reflecting at the ends."""
    half = len(taps) // 2
    identity = torch.eye(n, dtype=taps.dtype).unsqueeze(1)  # n signals of length n
    blurred = F.conv1d(F.pad(identity, (half, half), mode="reflect"), taps.view(1, 1, -1))
    return blurred.squeeze(1).T


def _cutout(x: torch.Tensor, max_side: int, g: torch.Generator) -> torch.Tensor:
    height, width = x.shape[-2:]
    side = int(torch.randint(1, max_side + 1, (), generator=g))
    top = int(torch.randint(0, max(1, height - side + 1), (), generator=g))
    left = int(torch.randint(0, max(1, width - side + 1), (), generator=g))
    x = x.clone()
    x[..., top : top + side, left : left + side] = CUTOUT_FILL.to(x.dtype)
    return x
