"""The audio front end (log-mel, normalised) and its augmentations, from an explicit generator.

Matches the reference code (REFERENCE.md section 4): STFT n_fft 1024, hop 160, periodic Hann,
centred with reflect padding (librosa 0.8.1's default, the reference's pinned version), power
spectrum; Slaney mel filters with Slaney norm, 0 to 8 kHz; log(mel + float32's eps), the floor the
reference adds (`torch.finfo().eps`, 1.19e-7: digital silence is -15.94, -2.40 once normalised);
mean -5.3688107, std 4.410007, the reference's constants. A 2 s clip at 16 kHz gives (1, 80, 201).
torch computes it (batched, on the waveform's device); tests/datasets/test_log_mel_parity.py
holds it to librosa with the reference's parameters. Legend: S samples, F mel bins, T frames.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio

LOG_MEL_MEAN, LOG_MEL_STD = -5.3688107, 4.410007
EPS = float(np.finfo(np.float32).eps)  # the reference's floor, torch.finfo().eps
HOP = 160


@functools.lru_cache(maxsize=8)
def _mel(sample_rate: int, n_mels: int, f_max: float, device: str = "cpu") -> torch.nn.Module:
    """The power spectrogram in float64, the mel filters in float32.

    librosa frames and windows in float64. In float32 the rounding of the window and of each
    windowed sample puts a leakage floor under the spectrum at about 1e-7 of its peak: bands far
    from a loud tone then read up to 2 % high, 2e-4 after normalisation, twice the parity bar.
    float64 costs about twice the STFT's time (0.11 -> 0.22 s for 64 clips of 2 s on 2 CPU cores);
    the power is exact enough in float32 once computed, so the filters and the log stay float32.
    """
    scale = torchaudio.transforms.MelScale(n_mels, sample_rate, 0.0, f_max, 513, "slaney", "slaney")
    scale.fb.copy_(_slaney_filters(sample_rate, n_mels, f_max))
    return torch.nn.Sequential(_PowerSpectrogram(), _Float32(), scale).to(device)


class _PowerSpectrogram(torch.nn.Module):
    """|STFT|^2 as re^2 + im^2: n_fft 1024, hop 160, periodic Hann in float64, centred with
    reflect padding. torchaudio's `Spectrogram(power=2.0)` takes the complex magnitude (a
    square root per bin) and squares it again: 38 ms against 10 ms here for 16 clips of 1 s on
    one CPU thread, the same values to 4e-16 (relative)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(1024, dtype=torch.float64))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        shape = wave.shape
        spec = torch.stft(
            wave.reshape(-1, shape[-1]),
            n_fft=1024,
            hop_length=HOP,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        parts = torch.view_as_real(spec)
        power = parts[..., 0].square() + parts[..., 1].square()
        return power.reshape(*shape[:-1], *power.shape[-2:])


class _Float32(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()


def _slaney_filters(sample_rate: int, n_mels: int, f_max: float) -> torch.Tensor:
    """(513, F) Slaney filters computed in float64, then rounded: torchaudio builds them in the
    default dtype, and float32 filter edges sit up to 0.05 % off librosa's; in float64 the two
    agree to 1e-12."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        fb = torchaudio.functional.melscale_fbanks(
            513, 0.0, f_max, n_mels, sample_rate, norm="slaney", mel_scale="slaney"
        )
    finally:
        torch.set_default_dtype(previous)
    return fb.float()


def log_mel(wave_S: torch.Tensor, *, sample_rate: int = 16000, n_mels: int = 80) -> torch.Tensor:
    """(..., S) float waveform in [-1, 1] -> (..., 1, F, T) normalised log-mel spectrogram, on
    the waveform's device."""
    mel = _mel(sample_rate, n_mels, min(8000.0, sample_rate / 2), str(wave_S.device))
    mel = mel(wave_S.double())
    return ((mel + EPS).log().sub(LOG_MEL_MEAN).div(LOG_MEL_STD)).unsqueeze(-3)


@dataclass(frozen=True)
class AudioAugment:
    """REFERENCE.md section 4: volume jitter, masks filled with the mean, random resized crop;
    optionally SpecAugment's time warp first (`time_warp` = its window W in frames, 0 = off: off
    in pretraining, 20 in the reference's ESC-50 SVM), in the reference's order: log-mel, time
    warp, frequency masks, time masks, crop.

    Like the video augmentation, it splits in two: `draw` takes every random decision for one
    clip as a parameter vector, and `apply` turns a batch of waveforms into augmented log-mel
    spectrograms by those vectors, on the waveforms' device. Calling it does both on one clip.
    """

    volume: tuple[float, float] = (0.8, 1.2)
    freq_masks: int = 2
    freq_mask_width: int = 10  # widths drawn from [0, this)
    time_masks: int = 2
    time_mask_width: int = 20
    canvas: tuple[float, float] = (1.0, 1.5)  # (frequency, time) size of the virtual canvas
    crop_scale: tuple[float, float] = (0.6, 1.5)
    sample_rate: int = 16000
    n_mels: int = 80
    time_warp: int = 0

    def __call__(self, wave_S: torch.Tensor, g: np.random.Generator) -> torch.Tensor:
        """(S,) waveform -> (1, F, T) augmented log-mel."""
        params = self.draw(g, frames=spectrogram_frames(wave_S.shape[-1]))
        return self.apply(wave_S.unsqueeze(0), params.unsqueeze(0))[0]

    @property
    def param_count(self) -> int:
        """Length of a `draw` vector: gain, the warp (if on), two numbers per mask, the crop."""
        return 1 + (2 if self.time_warp else 0) + 2 * (self.freq_masks + self.time_masks) + 4

    def draw(self, g: np.random.Generator, *, frames: int) -> torch.Tensor:
        """Gain, the time warp's (centre, warped centre) if on, then (width, start) of each
        frequency and time mask, then the crop box (top, left, height, width) on the canvas, for
        a spectrogram of `frames` frames."""
        gain = self.volume[0] + (self.volume[1] - self.volume[0]) * g.random()
        values = [float(gain)]
        if self.time_warp:
            values += _draw_warp(g, frames, self.time_warp)
        for count, width, size in (
            (self.freq_masks, self.freq_mask_width, self.n_mels),
            (self.time_masks, self.time_mask_width, frames),
        ):
            for _ in range(count):
                w = int(g.integers(0, width))
                values += [w, int(g.integers(0, max(1, size - w)))]
        ch, cw = int(self.n_mels * self.canvas[0]), int(frames * self.canvas[1])
        scale = self.crop_scale
        draw = g.random(2) * (scale[1] - scale[0]) + scale[0]
        h = int(np.clip(int(draw[0] * self.n_mels), 1, ch))
        w = int(np.clip(int(draw[1] * frames), 1, cw))
        i = int(g.integers(0, ch - h + 1))
        j = int(g.integers(0, cw - w + 1))
        return torch.tensor([*values, i, j, h, w], dtype=torch.float32)

    def apply(self, waves_BS: torch.Tensor, params_BP: torch.Tensor) -> torch.Tensor:
        """(B, S) waveforms and (B, P) parameters -> (B, 1, F, T) augmented log-mel."""
        p = params_BP.to(device=waves_BS.device, dtype=torch.float32)
        spec = log_mel(waves_BS * p[:, :1], sample_rate=self.sample_rate, n_mels=self.n_mels)
        at = 1
        if self.time_warp:
            spec = time_warp(spec, p[:, 1], p[:, 2])
            at = 3
        for axis, count in ((2, self.freq_masks), (3, self.time_masks)):
            if count:  # none asked for: no (B, 0, 2) view of an empty slice
                spec = _masks(spec, axis, p[:, at : at + 2 * count].view(-1, count, 2))
            at += 2 * count
        return _random_resized_crop(spec, self.canvas, p[:, at : at + 4])


def spectrogram_frames(samples: int) -> int:
    """Frames of the log-mel of `samples` samples (hop 160, centred)."""
    return samples // HOP + 1


def _draw_warp(g: np.random.Generator, frames: int, window: int) -> list[float]:
    """SpecAugment's draw: a centre c in [W, T - W), moved to w in [c - W + 1, c + W]; a
    spectrogram too short for the window (T <= 2W) is left alone (c = w: the identity)."""
    if frames - window <= window:
        return [frames // 2, frames // 2]
    c = int(g.integers(window, frames - window))
    return [c, int(g.integers(c - window, c + window)) + 1]


def time_warp(spec_B1FT: torch.Tensor, c_B: torch.Tensor, w_B: torch.Tensor) -> torch.Tensor:
    """Stretch frames [0, c) of each clip onto [0, w) and [c, T) onto [w, T), bicubic as
    F.interpolate (align_corners False, A = -0.75, taps clamped to each part), as one product
    with a per-clip (T, T) matrix. Written here, not looped over F.interpolate, so that a
    batch with a different warp per clip runs as one operation on the device."""
    t = spec_B1FT.shape[-1]
    device = spec_B1FT.device
    c, w = c_B.to(device)[:, None], w_B.to(device)[:, None]  # (B, 1)
    out = torch.arange(t, device=device, dtype=torch.float32)[None, :]  # (1, T)
    left = out < w
    start = torch.where(left, 0.0, c)
    length = torch.where(left, c, t - c)
    local = torch.where(left, out, out - w)
    pos = (local + 0.5) * length / torch.where(left, w, t - w) - 0.5  # (B, T)
    base = pos.floor()
    index = base[..., None] + torch.arange(-1, 3, device=device)  # (B, T, 4)
    index = torch.minimum(index.clamp(min=0), (length - 1)[..., None]) + start[..., None]
    matrix = torch.zeros(len(c_B), t, t, device=device)
    matrix.scatter_add_(2, index.long(), _cubic_weights(pos - base))
    return spec_B1FT @ matrix.transpose(1, 2).unsqueeze(1)


def _masks(spec_B1FT: torch.Tensor, axis: int, masks_BC2: torch.Tensor) -> torch.Tensor:
    """Fill each clip's (width, start) bands along `axis` with the clip's mean before masking."""
    fill = spec_B1FT.mean(dim=(1, 2, 3), keepdim=True)
    where = torch.arange(spec_B1FT.shape[axis], device=spec_B1FT.device)  # (N,)
    width, start = masks_BC2[..., 0:1], masks_BC2[..., 1:2]  # (B, C, 1)
    inside = ((where >= start) & (where < start + width)).any(dim=1)  # (B, N)
    shape = [len(spec_B1FT), 1, 1, 1]
    shape[axis] = spec_B1FT.shape[axis]
    return torch.where(inside.view(shape), fill, spec_B1FT)


def _random_resized_crop(spec_B1FT: torch.Tensor, canvas, box_B4: torch.Tensor) -> torch.Tensor:
    """Place each image at the centre of a zero canvas, crop its box (top, left, height, width),
    resize back: bicubic with aligned corners, as F.interpolate on the crop, done for the whole
    batch as two products with per-clip interpolation matrices."""
    _, _, f, t = spec_B1FT.shape
    ch, cw = int(f * canvas[0]), int(t * canvas[1])
    y, x = (ch - f) // 2, (cw - t) // 2
    board = F.pad(spec_B1FT[:, 0], (x, cw - t - x, y, ch - f - y))  # (B, ch, cw)
    top, left, h, w = (box_B4[:, k] for k in range(4))
    rows = _cubic_matrix(f, ch, top, h)  # (B, f, ch)
    cols = _cubic_matrix(t, cw, left, w)  # (B, t, cw)
    return (rows @ board @ cols.transpose(1, 2)).unsqueeze(1)


def _cubic_matrix(out: int, size: int, start: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """(B, out, size): row o holds the bicubic weights (A = -0.75, torch's) that resample the
    span [start, start + length) of a signal of `size` to `out` points, corners aligned, taps
    clamped to the span like F.interpolate's border."""
    device = start.device
    scale = (length - 1).clamp(min=0) / max(out - 1, 1)  # (B,)
    pos = torch.arange(out, device=device)[None, :] * scale[:, None]  # (B, out), in the span
    base = pos.floor()
    frac = pos - base
    taps = torch.arange(-1, 3, device=device)  # the four neighbours
    index = base[..., None] + taps  # (B, out, 4)
    index = torch.minimum(index.clamp(min=0), (length - 1)[:, None, None]) + start[:, None, None]
    weights = _cubic_weights(frac)  # (B, out, 4)
    matrix = torch.zeros(len(start), out, size, device=device)
    return matrix.scatter_add_(2, index.long(), weights)


def _cubic_weights(t: torch.Tensor, a: float = -0.75) -> torch.Tensor:
    """Keys' cubic convolution weights of the four taps around each fractional position."""

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return torch.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], dim=-1)
