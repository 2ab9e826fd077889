"""Pillow's uint8 colour arithmetic, batched in torch: the reference's colour jitter and grayscale.

The reference jitters PIL images (torchvision's functional on PIL): brightness, contrast and
saturation are `Image.blend` with a degenerate image, truncated to uint8 after every step; the
hue goes through PIL's HSV, whose hue and saturation are uint8 too; grayscale is PIL's "L". Here
the same arithmetic runs on float tensors holding uint8 values, (B, T, 3, H, W), one factor per
clip, in float32 where Pillow's C code computes in float and in float64 where it computes in
double, so that each step equals Pillow's, frame by frame (tests/datasets/test_video_quirks.py).
"""

from __future__ import annotations

import torch

# (v, p, q, t) index of each output channel for each hue sector, as colorsys/Pillow pick them
_SECTORS = ((0, 2, 1, 1, 3, 0), (3, 0, 0, 2, 1, 1), (1, 1, 3, 0, 0, 2))


def jitter(
    x_BT3HW: torch.Tensor, factors_B4: torch.Tensor, order_B4: torch.Tensor, on_B: torch.Tensor
) -> torch.Tensor:
    """Each clip's brightness, contrast, saturation and hue factors (columns 0..3), applied in
    its own order (`order_B4`, a permutation of 0..3), where `on_B`; changes `x_BT3HW` in place.
    A hue of 0 is skipped, as the reference skips a hue strength of 0 (PIL's HSV round trip is
    not lossless); the other steps are exact identities at a factor of 1."""
    steps = (brightness, contrast, saturation, hue)
    has_hue = factors_B4[:, 3] != 0
    for k in range(4):
        for index, step in enumerate(steps):
            rows = on_B & (order_B4[:, k] == index) & (has_hue if index == 3 else True)
            if bool(rows.any()):
                x_BT3HW[rows] = step(x_BT3HW[rows], factors_B4[rows, index])
    return x_BT3HW


def luma(x_BT3HW: torch.Tensor) -> torch.Tensor:
    """PIL's "L" of each pixel, (B, T, 1, H, W): ITU-R 601 in 16-bit fixed point, rounded. Every
    partial sum is an integer below 2**24, so float32 holds it exactly."""
    r, g, b = x_BT3HW.unbind(-3)
    fixed = r * 19595 + g * 38470 + b * 7471 + 32768
    return torch.floor(fixed / 65536).unsqueeze(-3)


def grayscale(x_BT3HW: torch.Tensor) -> torch.Tensor:
    """PIL's convert("L"), each channel set to it."""
    return luma(x_BT3HW).expand_as(x_BT3HW).clone()


def brightness(x_BT3HW: torch.Tensor, factor_B: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Brightness: a blend with black."""
    return _blend(0.0, x_BT3HW, factor_B)


def contrast(x_BT3HW: torch.Tensor, factor_B: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Contrast: a blend with each frame's mean luma, rounded to an integer."""
    mean = luma(x_BT3HW).double().mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(torch.floor(mean + 0.5).float(), x_BT3HW, factor_B)


def saturation(x_BT3HW: torch.Tensor, factor_B: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Color: a blend with the pixel's luma."""
    return _blend(luma(x_BT3HW), x_BT3HW, factor_B)


def hue(x_BT3HW: torch.Tensor, factor_B: torch.Tensor) -> torch.Tensor:
    """torchvision's PIL adjust_hue: to PIL's uint8 HSV, hue plus int(factor * 255) modulo 256
    (numpy's uint8 overflow), back to RGB."""
    h, s, v = _rgb_to_hsv(x_BT3HW)
    shift = torch.trunc(factor_B.double() * 255).view(-1, *[1] * (h.dim() - 1))
    return _hsv_to_rgb(torch.remainder(h + shift, 256), s, v)


def _blend(base, x: torch.Tensor, factor_B: torch.Tensor) -> torch.Tensor:
    """Image.blend(degenerate, image, factor): base + factor * (image - base) in float32, clipped
    and truncated to uint8."""
    f = factor_B.to(x.dtype).view(-1, *[1] * (x.dim() - 1))
    return (base + f * (x - base)).clamp_(0, 255).floor_()


def _rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pillow's rgb2hsv: uint8 hue and saturation (float64) and value (float32)."""
    r, g, b = x.unbind(-3)
    maxc = torch.maximum(r, torch.maximum(g, b))
    grey = maxc == torch.minimum(r, torch.minimum(g, b))
    one = torch.ones_like(maxc)
    span = torch.where(grey, one, maxc - torch.minimum(r, torch.minimum(g, b)))
    s = span / torch.where(grey, one, maxc)  # float32, as Pillow's
    rc, gc, bc = ((maxc - c) / span for c in (r, g, b))
    rc, gc, bc = rc.double(), gc.double(), bc.double()  # the next sums are in double, kept float
    h = torch.where(
        r == maxc,
        (bc - gc).float(),
        torch.where(g == maxc, (2.0 + rc - bc).float(), (4.0 + gc - rc).float()),
    )
    h = torch.fmod(h.double() / 6.0 + 1.0, 1.0).float()
    zero = torch.zeros_like(h, dtype=torch.float64)
    hue_u8 = torch.where(grey, zero, torch.trunc(h.double() * 255.0).clamp_(0, 255))
    sat_u8 = torch.where(grey, zero, torch.trunc(s.double() * 255.0).clamp_(0, 255))
    return hue_u8, sat_u8, maxc


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Pillow's hsv2rgb from uint8 hue and saturation (float64) and value (float32)."""
    h6 = h * 6.0 / 255.0
    sector = torch.floor(h6)
    f = (h6 - sector).float()
    fs = (s / 255.0).float()
    vd = v.double()
    p = _round(vd * (1.0 - fs.double()))
    q = _round(vd * (1.0 - (fs * f).double()))  # fs * f is a float product in Pillow
    t = _round(vd * (1.0 - fs.double() * (1.0 - f.double())))
    vpqt = torch.stack((v, p, q, t), dim=-3)  # float32: all hold integers 0..255
    table = torch.tensor(_SECTORS, device=v.device)
    pick = table[:, sector.long().remainder_(6)].movedim(0, -3)  # (..., 3, H, W)
    rgb = vpqt.gather(-3, pick)
    return torch.where((s == 0).unsqueeze(-3), v.unsqueeze(-3), rgb)


def _round(x: torch.Tensor) -> torch.Tensor:
    """C's round (half away from zero) of non-negative doubles, clipped to uint8, as float32."""
    return torch.floor(x + 0.5).clamp_(0, 255).float()
