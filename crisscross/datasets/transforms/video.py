"""Video augmentations on uint8 clips, one parameter draw per clip, from an explicit generator.

A clip is (T, 3, H, W) uint8; every frame gets the same crop, flip, colour change, blur and
cutout. Outputs stay uint8 so that they cross the object store and the host-to-device copy at a
quarter of float32's size; `normalize` (on the training device) turns them into model input.

An augmentation is split in two so that the costly part can run batched on the training device:
`geometry` (crop, resize, flip: what fixes the output shape) runs per clip where the clip is
decoded, `draw` takes every other random decision as a short parameter vector (`PHOTO`), and
`photometric` applies a batch of those vectors to a batch of clips, on any device. Calling the
augmentation does all three on one clip, so both places give the same result from one generator.

Three steps come in two versions (REFERENCE.md section 4): the reference code's, which produced
the paper's numbers, and the clean one the paper describes. `blur_mode` "reference": the sigma
(0.1, 2.0) read as (sigma_x, sigma_y), a fixed blur of 0.1 across and 2.0 down; "isotropic": one
sigma per clip from U(0.1, 2.0). `cutout_mode` "reference": a square of even side
randint(1, cutout_max) // 2 * 2 around a uniform centre, clipped at the borders, multiplied after
normalisation by the mean of the clip's first normalised frame (so it happens in `to_model_input`
or `scale_cutout`, not in the uint8 output); "fill": a square of side 1 to cutout_max inside the
frame, set to the mean colour. `colour_mode` "reference": Pillow's uint8 arithmetic
(`pil_colour`: truncated after every jitter step, HSV hue, rounded luma, and the blur truncated
back to uint8 as the reference's PIL round trip does); "fast" below.

Speed ("fast" colour): brightness, contrast, saturation, grayscale and hue are all affine maps of
RGB (hue as a rotation about the grey axis in YIQ space, the linear form NVIDIA DALI uses, instead
of an HSV round trip), so the random-order colour jitter composes into one 3x3 matrix and a
per-frame offset applied in one pass; contrast's per-frame mean is carried through the
composition exactly. Unlike torchvision, values are clamped once at the end rather than after
every step. "reference" colour runs the four steps one by one, each on the clips that take it at
that position (16 masked passes, the hue in float64), several times the fast version's cost
(docs/parity.md). The blur is separable, applied as two products with banded
matrices. The resize runs on uint8 (torch's vectorised antialiased kernel, about 4x faster than
on float).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from crisscross.datasets.transforms import pil_colour

IMAGENET_MEAN = (0.485, 0.456, 0.406)
LUMA = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601, as torchvision's grayscale
RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
YIQ_TO_RGB = torch.linalg.inv(RGB_TO_YIQ)
IMAGENET_STD = (0.229, 0.224, 0.225)
# cutout fills with the mean colour, which normalises to 0
CUTOUT_FILL = torch.tensor(IMAGENET_MEAN).mul(255).round().to(torch.uint8).view(3, 1, 1)
GRAY = LUMA.expand(3, 3).clone()  # every channel becomes the luma

# The photometric parameter vector of one clip: which steps are on and their draws.
PHOTO = (
    "jitter",  # 1 if the colour jitter applies
    "brightness",
    "contrast",
    "saturation",
    "hue",  # the four factors
    "order0",
    "order1",
    "order2",
    "order3",  # the random order of the four (0 brightness .. 3 hue)
    "gray",  # 1 if grayscale applies
    "blur",  # 1 if the blur applies
    "sigma_x",  # across (the width)
    "sigma_y",  # down (the height)
    "kernel",
    "reference_colour",  # 1: Pillow's uint8 arithmetic (colour_mode "reference"), 0: fast
    "cut_scale",  # 1: the square is multiplied by the first frame's mean after normalisation
    "cut_side",  # cutout square (side 0: none); top and left may be negative
    "cut_top",
    "cut_left",
)
_P = {name: i for i, name in enumerate(PHOTO)}
CUT_BOX = slice(_P["cut_side"], _P["cut_left"] + 1)  # (side, top, left) in a PHOTO vector
MODES = {
    "blur_mode": ("reference", "isotropic"),
    "cutout_mode": ("reference", "fill"),
    "colour_mode": ("reference", "fast"),
}  # each step's versions, the reference code's first


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
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # blur_mode reference: (sigma_x, sigma_y)
    cutout_max: int = 20
    blur_mode: str = "reference"  # or "isotropic"; MODES, and the module docstring
    cutout_mode: str = "reference"  # or "fill"
    colour_mode: str = "reference"  # or "fast"

    def __post_init__(self) -> None:
        for name, versions in MODES.items():
            if getattr(self, name) not in versions:
                raise ValueError(f"{name} must be one of {versions}, not {getattr(self, name)!r}")

    @property
    def cutout_after_normalize(self) -> bool:
        """Whether the cutout happens after normalisation (the reference's), outside the uint8
        output of `__call__` and `photometric`."""
        return self.cutout_mode == "reference" and self.cutout_max > 0

    def __call__(self, clip_TCHW: torch.Tensor, g: np.random.Generator) -> torch.Tensor:
        """(T, 3, H, W) uint8 -> (T, 3, size, size) uint8, the input of `normalize`; without the
        reference cutout, which acts after normalisation (see `augment`)."""
        return self.augment(clip_TCHW, g)[0]

    def augment(
        self, clip_TCHW: torch.Tensor, g: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`__call__`'s uint8 clip and the draws behind it (a PHOTO vector): with
        `cutout_after_normalize`, `scale_cutout(normalize(clip), draws[CUT_BOX])` completes it."""
        x = self.geometry(clip_TCHW, g)
        params = self.draw(g)
        return photometric(x.unsqueeze(0), params.unsqueeze(0))[0], params

    def geometry(self, clip_TCHW: torch.Tensor, g: np.random.Generator) -> torch.Tensor:
        """Random resized crop and flip: (T, 3, H, W) uint8 -> (T, 3, size, size) uint8."""
        top, left, h, w = _crop_box(clip_TCHW.shape[-2:], self.crop_area, self.crop_ratio, g)
        crop = clip_TCHW[..., top : top + h, left : left + w]
        # channels-last uint8 takes torch's vectorised antialiased kernel (decoded frames already
        # are channels-last); antialiasing changes nothing when enlarging
        crop = crop.contiguous(memory_format=torch.channels_last)
        x = F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=True)
        if _chance(g, self.flip_p):
            x = x.flip(-1)
        return x  # channels-last strides; stacking a batch makes it contiguous

    def draw(self, g: np.random.Generator) -> torch.Tensor:
        """Every photometric decision for one clip (after `geometry`'s): a (len(PHOTO),) vector."""
        p = [0.0] * len(PHOTO)  # a list: setting tensor items one by one costs ~10 us each
        if _chance(g, self.jitter_p):
            b, c, s, h = self.jitter
            p[_P["jitter"]] = 1.0
            p[_P["brightness"]] = _uniform(g, 1 - b, 1 + b)
            p[_P["contrast"]] = _uniform(g, 1 - c, 1 + c)
            p[_P["saturation"]] = _uniform(g, 1 - s, 1 + s)
            p[_P["hue"]] = _uniform(g, -h, h)
            p[_P["order0"] : _P["order3"] + 1] = g.permutation(4).tolist()
        p[_P["gray"]] = float(_chance(g, self.gray_p))
        if _chance(g, self.blur_p):
            p[_P["blur"]] = 1.0
            if self.blur_mode == "reference":  # the pair read as (sigma_x, sigma_y), no draw
                p[_P["sigma_x"]], p[_P["sigma_y"]] = self.blur_sigma
            else:
                p[_P["sigma_x"]] = p[_P["sigma_y"]] = _uniform(g, *self.blur_sigma)
        p[_P["kernel"]] = self.blur_kernel
        p[_P["reference_colour"]] = float(self.colour_mode == "reference")
        if self.cutout_max > 0 and self.cutout_mode == "reference":
            p[_P["cut_scale"]] = 1.0
            p[CUT_BOX] = _reference_square(g, self.size, self.cutout_max)
        elif self.cutout_max > 0:
            side = int(g.integers(1, self.cutout_max + 1))
            top = int(g.integers(0, max(1, self.size - side + 1)))
            left = int(g.integers(0, max(1, self.size - side + 1)))
            p[CUT_BOX] = [side, top, left]
        return torch.tensor(p, dtype=torch.float32)


def _reference_square(g: np.random.Generator, size: int, longest: int) -> list[int]:
    """The reference's cutout square as (side, top, left): a half side randint(1, longest) // 2
    (so sides 0, 2, .., longest), the centre anywhere in the frame, the square free to cross the
    border (whatever falls outside is dropped)."""
    half = int(g.integers(1, longest + 1)) // 2
    row, col = int(g.integers(0, size)), int(g.integers(0, size))
    return [2 * half, row - half, col - half]


def photometric(clips_BT3HW: torch.Tensor, params_BP: torch.Tensor) -> torch.Tensor:
    """Colour jitter, grayscale, blur and (filled) cutout of a batch of uint8 clips, each by its
    own row of `params_BP` (see `VideoAugment.draw`); on the clips' device; uint8 out. The
    reference cutout (`cut_scale`) is left to `to_model_input`."""
    x = clips_BT3HW.float()
    p = params_BP.to(device=x.device, dtype=torch.float32)
    reference = p[:, _P["reference_colour"]] > 0.5
    x = _by_rows(reference, x, p, _reference_colour, _fast_colour)
    blurred = p[:, _P["blur"]] > 0.5
    if bool(blurred.any()):
        kernel = int(p[blurred][0, _P["kernel"]])
        sigmas = p[blurred, _P["sigma_x"]], p[blurred, _P["sigma_y"]]
        x[blurred] = _blur_batch(x[blurred], kernel, *sigmas)
    x = x.clamp_(0, 255)
    if bool(reference.any()):
        # the reference's blur runs on float [0, 1] and returns to uint8 through a truncating
        # cast (its unblurred values are whole already); the fast path rounds
        x = torch.where(reference[:, None, None, None, None], x.floor(), x.round())
    x = x.round_().to(torch.uint8)
    filled = (p[:, _P["cut_scale"]] < 0.5)[:, None]
    return _cutout(x, p[:, CUT_BOX] * filled)


def to_model_input(clips_BT3HW: torch.Tensor, params_BP: torch.Tensor) -> torch.Tensor:
    """The whole photometric augmentation of a batch and its normalisation: uint8 (B, T, 3, H, W)
    -> float (B, 3, T, H, W), the reference cutout (after normalisation) included."""
    p = params_BP.to(device=clips_BT3HW.device, dtype=torch.float32)
    x = normalize(photometric(clips_BT3HW, p))
    scaled = p[:, _P["cut_scale"]] > 0.5
    if bool(scaled.any()):
        x = scale_cutout(x, p[:, CUT_BOX] * scaled[:, None])
    return x


def scale_cutout(x_B3THW: torch.Tensor, box_B3: torch.Tensor) -> torch.Tensor:
    """The reference's cutout on normalised clips: each clip's (side, top, left) square, clipped
    at the borders, multiplied in every frame and channel by the mean of the clip's first frame
    over its channels and pixels (side 0: unchanged)."""
    mean_B = x_B3THW[:, :, 0].mean(dim=(1, 2, 3))
    mask = _square(box_B3.to(x_B3THW.device), *x_B3THW.shape[-2:])[:, None, None]
    return torch.where(mask, x_B3THW * mean_B[:, None, None, None, None], x_B3THW)


def _by_rows(rows_B, x, p, on_rows, elsewhere) -> torch.Tensor:
    """`on_rows(x, p)` for the clips where `rows_B`, `elsewhere(x, p)` for the others."""
    count = int(rows_B.sum())
    if count in (0, len(rows_B)):
        return on_rows(x, p) if count else elsewhere(x, p)
    out = torch.empty_like(x)
    out[rows_B], out[~rows_B] = on_rows(x[rows_B], p[rows_B]), elsewhere(x[~rows_B], p[~rows_B])
    return out


def _fast_colour(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    matrix, offset = _colour(x.mean(dim=(-2, -1)), p)
    return torch.einsum("bij,btjhw->btihw", matrix, x) + offset[..., None, None]


def _reference_colour(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Pillow's jitter steps in each clip's order, then PIL's grayscale; uint8 values in float."""
    factors = p[:, _P["brightness"] : _P["hue"] + 1]
    order = p[:, _P["order0"] : _P["order3"] + 1].long()
    x = pil_colour.jitter(x, factors, order, p[:, _P["jitter"]] > 0.5)
    gray = p[:, _P["gray"]] > 0.5
    if bool(gray.any()):
        x[gray] = pil_colour.grayscale(x[gray])
    return x


def _colour(means_BT3: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each clip's colour steps as x -> M x + o_t: M (B, 3, 3), o (B, T, 3)."""
    batch, frames, device = means_BT3.shape[0], means_BT3.shape[1], means_BT3.device
    eye = torch.eye(3, device=device).expand(batch, 3, 3)
    matrix, offset = eye.clone(), means_BT3.new_zeros(batch, frames, 3)
    jitter = p[:, _P["jitter"]] > 0.5
    if bool(jitter.any()):
        matrix, offset = _colour_jitter_batch(means_BT3, p, matrix, offset, jitter)
    gray = (p[:, _P["gray"]] > 0.5)[:, None, None]
    grey = _constants(str(device))["gray"]
    matrix = torch.where(gray, grey @ matrix, matrix)
    offset = torch.where(gray, offset @ grey.T, offset)
    return matrix, offset


def _colour_jitter_batch(means_BT3, p, matrix, offset, on):
    """Compose each clip's four jitter steps in its own order (identity where `on` is False)."""
    device = means_BT3.device
    c = _constants(str(device))
    luma, gray, to_yiq, to_rgb = c["luma"], c["gray"], c["to_yiq"], c["to_rgb"]
    eye = torch.eye(3, device=device)
    f = p[:, _P["brightness"] : _P["hue"] + 1]  # (B, 4)
    cos, sin = torch.cos(2 * math.pi * f[:, 3]), torch.sin(2 * math.pi * f[:, 3])
    rotation = torch.zeros(len(p), 3, 3, device=device)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    steps = torch.stack(
        [
            f[:, 0, None, None] * eye,  # brightness
            f[:, 1, None, None] * eye,  # contrast (plus its shift below)
            f[:, 2, None, None] * eye + (1 - f[:, 2, None, None]) * gray,  # saturation
            to_rgb @ rotation @ to_yiq,  # hue: rotate the chroma plane of YIQ
        ],
        dim=1,
    )  # (B, 4, 3, 3)
    order = p[:, _P["order0"] : _P["order3"] + 1].long()
    rows = torch.arange(len(p), device=device)
    for k in range(4):
        index = order[:, k]
        means = means_BT3 @ matrix.transpose(1, 2) + offset  # each frame's mean colour so far
        # contrast blends with the frame's mean grey: its shift is (1 - f) * that grey
        shift = ((1 - f[:, 1, None]) * (means @ luma))[..., None].expand(-1, -1, 3)
        shift = torch.where((index == 1)[:, None, None], shift, torch.zeros_like(shift))
        step = steps[rows, index]
        new_matrix, new_offset = step @ matrix, offset @ step.transpose(1, 2) + shift
        matrix = torch.where(on[:, None, None], new_matrix, matrix)
        offset = torch.where(on[:, None, None], new_offset, offset)
    return matrix, offset


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


def _chance(g: np.random.Generator, p: float) -> bool:
    return p > 0 and bool(g.random() < p)


def _uniform(g: np.random.Generator, low: float, high: float) -> float:
    return float(low + (high - low) * g.random())


def _crop_box(hw, area, ratio, g) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box, drawn from `g`."""
    height, width = int(hw[0]), int(hw[1])
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = height * width * _uniform(g, *area)
        aspect = math.exp(_uniform(g, *log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(g.integers(0, height - h + 1))
            left = int(g.integers(0, width - w + 1))
            return top, left, h, w
    side = min(height, width)  # fallback: the centred largest square
    return (height - side) // 2, (width - side) // 2, side, side


def _colour_jitter(means_T3: torch.Tensor, strength, g: np.random.Generator):
    """One clip's jitter as x -> M x + o_t (M (3, 3), o (T, 3)); `means_T3` are its frames'
    mean colours (for contrast)."""
    p = VideoAugment(jitter=tuple(strength), gray_p=0, blur_p=0, cutout_max=0).draw(g)
    matrix, offset = _colour(means_T3.unsqueeze(0), p.unsqueeze(0))
    return matrix[0], offset[0]


def _blur(x: torch.Tensor, kernel: int, sigma: float, sigma_y: float | None = None) -> torch.Tensor:
    """Separable Gaussian blur of (T, 3, H, W) float, reflect-padded like torchvision; `sigma`
    across, `sigma_y` (default: the same) down, as torchvision's (sigma_x, sigma_y)."""
    sigmas = [torch.tensor([s], device=x.device) for s in (sigma, sigma_y or sigma)]
    return _blur_batch(x.unsqueeze(0), kernel, *sigmas)[0]


def _blur_batch(
    x_BT3HW: torch.Tensor, kernel: int, sigma_x_B: torch.Tensor, sigma_y_B: torch.Tensor
) -> torch.Tensor:
    """Each clip blurred with its own sigmas (x across the width, y down the height): two
    products with banded matrices, reflect padding folded in (on CPU about 2x faster than a
    one-channel convolution)."""
    h, w = x_BT3HW.shape[-2:]
    rows = _band(h, _taps(kernel, sigma_y_B, x_BT3HW))[:, None, None]
    cols = _band(w, _taps(kernel, sigma_x_B, x_BT3HW))[:, None, None]
    return rows @ x_BT3HW @ cols.transpose(-1, -2)


def _taps(kernel: int, sigma_B: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, K) normalised Gaussian taps, as torchvision's kernel."""
    half = kernel // 2
    offsets = torch.arange(-half, half + 1, dtype=like.dtype, device=like.device)
    taps = torch.exp(-0.5 * (offsets / sigma_B[:, None].to(like.dtype)) ** 2)
    return taps / taps.sum(dim=1, keepdim=True)


def _band(n: int, taps_BK: torch.Tensor) -> torch.Tensor:
    """(B, n, n) matrices whose product with a column blurs it, reflecting at the ends."""
    index = _reflect_index(n, taps_BK.shape[1], str(taps_BK.device))  # (n, K)
    batch = taps_BK.shape[0]
    band = taps_BK.new_zeros(batch, n, n)
    return band.scatter_add_(2, index.expand(batch, -1, -1), taps_BK[:, None, :].expand(-1, n, -1))


@functools.lru_cache(maxsize=32)
def _reflect_index(n: int, kernel: int, device: str) -> torch.Tensor:
    """Column read by tap k for output i: i + k - half, reflected into [0, n) like torch's pad."""
    half = kernel // 2
    index = torch.arange(n)[:, None] + torch.arange(kernel)[None, :] - half
    period = max(2 * (n - 1), 1)
    index = index.remainder(period)
    index = torch.where(index >= n, period - index, index)
    return index.to(device)


def _cutout(x_BT3HW: torch.Tensor, box_B3: torch.Tensor) -> torch.Tensor:
    """Fill each clip's (side, top, left) square with the mean colour (side 0: unchanged)."""
    mask = _square(box_B3, *x_BT3HW.shape[-2:])[:, None, None]  # (B, 1, 1, H, W)
    return torch.where(mask, _constants(str(x_BT3HW.device))["fill"], x_BT3HW)


def _square(box_B3: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H, W) masks of each (side, top, left) square; what falls outside the frame is dropped."""
    side, top, left = (box_B3[:, i, None] for i in range(3))
    ys = torch.arange(height, device=box_B3.device)[None, :]
    xs = torch.arange(width, device=box_B3.device)[None, :]
    in_rows = (ys >= top) & (ys < top + side)  # (B, H)
    in_cols = (xs >= left) & (xs < left + side)  # (B, W)
    return in_rows[:, :, None] & in_cols[:, None, :]


@functools.lru_cache(maxsize=8)
def _constants(device: str) -> dict[str, torch.Tensor]:
    """The colour constants on `device`, copied there once (not on every training step)."""
    named = {"luma": LUMA, "gray": GRAY, "to_yiq": RGB_TO_YIQ, "to_rgb": YIQ_TO_RGB}
    return {k: v.to(device) for k, v in named.items()} | {"fill": CUTOUT_FILL.to(device)}
