"""Per-sample functions: a manifest row in, model-ready arrays out, reproducible per sample.

A sample is fixed by (seed, epoch, index). The same functions serve the Ray Data pipeline, the
torch Dataset and the benchmark. Video comes out as uint8 (T, 3, H, W) per clip (normalised on
the training device), audio as a float32 (1, F, T) log-mel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from crisscross.datasets.decode import read_clip, read_npy_audio
from crisscross.datasets.sampling import frame_times, pretext_windows
from crisscross.datasets.transforms import AudioAugment, VideoAugment, eval_clip, log_mel


@dataclass(frozen=True)
class ClipSpec:
    """Shapes and decoding of a sample (REFERENCE.md section 3 defaults)."""

    frames: int = 8
    fps: float = 16.0
    crop_size: int = 112
    audio_seconds: float = 2.0
    sample_rate: int = 16000
    n_mels: int = 80
    sampling: str = "overlapped"
    short_side: int = 128  # decode-time resize: the crop's canvas
    decode_threads: int = 1

    @property
    def video_seconds(self) -> float:
        return self.frames / self.fps


def sample_generators(
    seed: int, epoch: int, index: int
) -> tuple[np.random.Generator, torch.Generator]:
    """Independent numpy (window) and torch (augmentation) generators for one sample."""
    rng = np.random.default_rng([seed, epoch, index])
    g = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return rng, g


@dataclass
class PretextSample:
    """Decode the four views of one pretraining sample and augment each independently."""

    spec: ClipSpec = field(default_factory=ClipSpec)
    augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        self.video_aug = VideoAugment(size=self.spec.crop_size)
        self.audio_aug = AudioAugment(sample_rate=self.spec.sample_rate, n_mels=self.spec.n_mels)

    def __call__(self, row: Mapping[str, Any], *, epoch: int, index: int) -> dict[str, np.ndarray]:
        spec = self.spec
        rng, g = sample_generators(self.seed, epoch, index)
        w = pretext_windows(
            spec.sampling,
            float(row["duration"]),
            audio_seconds=spec.audio_seconds,
            video_seconds=spec.video_seconds,
            rng=rng,
        )
        times = frame_times(w.v1, spec.frames, spec.fps) + frame_times(w.v2, spec.frames, spec.fps)
        spans = [(w.a1, spec.audio_seconds), (w.a2, spec.audio_seconds)]
        audio_path = row.get("audio_path")
        frames, audio = read_clip(
            row["path"],
            frame_times=times,
            audio_spans=[] if audio_path else spans,
            short_side=spec.short_side,
            sample_rate=spec.sample_rate,
            threads=spec.decode_threads,
        )
        if audio_path:
            audio = [
                read_npy_audio(audio_path, s, n, sample_rate=spec.sample_rate) for s, n in spans
            ]
        clips = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (2T, 3, H, W)
        views = {}
        for name, clip in (("v1", clips[: spec.frames]), ("v2", clips[spec.frames :])):
            views[name] = (
                self.video_aug(clip, g) if self.augment else eval_clip(clip, spec.crop_size)
            ).numpy()
        for name, wave in (("a1", audio[0]), ("a2", audio[1])):
            wave_t = torch.from_numpy(wave)
            spec_img = (
                self.audio_aug(wave_t, g)
                if self.augment
                else log_mel(wave_t, sample_rate=spec.sample_rate, n_mels=spec.n_mels)
            )
            views[name] = spec_img.numpy()
        return views
