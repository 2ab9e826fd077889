"""The audio front end (log-mel, normalised) and its augmentations, from an explicit generator.

Matches the reference: STFT n_fft 1024, hop 160, Hann, centred with zero padding, power spectrum;
Slaney mel filters, 0 to 8 kHz; log(x + eps); mean -5.3688, std 4.41. A 2 s clip at 16 kHz gives
(1, 80, 201). Legend: S samples, F mel bins, T frames.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio

LOG_MEL_MEAN, LOG_MEL_STD = -5.3688, 4.4100
EPS = float(np.finfo(float).eps)


@functools.lru_cache(maxsize=8)
def _mel(sample_rate: int, n_mels: int, f_max: float) -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate,
        n_fft=1024,
        hop_length=160,
        window_fn=torch.hann_window,
        power=2.0,
        n_mels=n_mels,
        f_min=0.0,
        f_max=f_max,
        center=True,
        pad_mode="constant",
        norm="slaney",
        mel_scale="slaney",
    )


def log_mel(wave_S: torch.Tensor, *, sample_rate: int = 16000, n_mels: int = 80) -> torch.Tensor:
    """(S,) float waveform in [-1, 1] -> (1, F, T) normalised log-mel spectrogram."""
    mel = _mel(sample_rate, n_mels, min(8000.0, sample_rate / 2))(wave_S.float())
    return ((mel + EPS).log().sub(LOG_MEL_MEAN).div(LOG_MEL_STD)).unsqueeze(0)


@dataclass(frozen=True)
class AudioAugment:
    """REFERENCE.md section 4: volume jitter, masks filled with the mean, random resized crop."""

    volume: tuple[float, float] = (0.8, 1.2)
    freq_masks: int = 2
    freq_mask_width: int = 10  # widths drawn from [0, this)
    time_masks: int = 2
    time_mask_width: int = 20
    canvas: tuple[float, float] = (1.0, 1.5)  # (frequency, time) size of the virtual canvas
    crop_scale: tuple[float, float] = (0.6, 1.5)
    sample_rate: int = 16000
    n_mels: int = 80

    def __call__(self, wave_S: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """(S,) waveform -> (1, F, T) augmented log-mel."""
        gain = self.volume[0] + (self.volume[1] - self.volume[0]) * torch.rand((), generator=g)
        spec = log_mel(wave_S * gain, sample_rate=self.sample_rate, n_mels=self.n_mels)
        spec = _masks(spec, 1, self.freq_masks, self.freq_mask_width, g)
        spec = _masks(spec, 2, self.time_masks, self.time_mask_width, g)
        return _random_resized_crop(spec, self.canvas, self.crop_scale, g)


def _masks(
    spec: torch.Tensor, axis: int, count: int, width: int, g: torch.Generator
) -> torch.Tensor:
    size = spec.shape[axis]
    fill = spec.mean()
    spec = spec.clone()
    for _ in range(count):
        w = int(torch.randint(0, width, (), generator=g))
        start = int(torch.randint(0, max(1, size - w), (), generator=g))
        spec.narrow(axis, start, w).fill_(fill)
    return spec


def _random_resized_crop(spec: torch.Tensor, canvas, scale, g: torch.Generator) -> torch.Tensor:
    """Place the image at the centre of a zero canvas, crop a random box, resize back."""
    _, f, t = spec.shape
    ch, cw = int(f * canvas[0]), int(t * canvas[1])
    board = spec.new_zeros(1, ch, cw)
    y, x = (ch - f) // 2, (cw - t) // 2
    board[:, y : y + f, x : x + t] = spec
    draw = torch.rand(2, generator=g) * (scale[1] - scale[0]) + scale[0]
    h = int(np.clip(int(draw[0] * f), 1, ch))
    w = int(np.clip(int(draw[1] * t), 1, cw))
    i = int(torch.randint(0, ch - h + 1, (), generator=g))
    j = int(torch.randint(0, cw - w + 1, (), generator=g))
    crop = board[:, i : i + h, j : j + w].unsqueeze(0)
    return F.interpolate(crop, size=(f, t), mode="bicubic", align_corners=True).squeeze(0)
