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
from crisscross.datasets.sampling import clip_starts, frame_times, pretext_windows
from crisscross.datasets.transforms import (
    AudioAugment,
    AugmentStrength,
    VideoAugment,
    eval_clip,
    log_mel,
)


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
    augment: AugmentStrength = field(default_factory=AugmentStrength)  # augmentation knobs

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
        self.video_aug = self.spec.augment.video(self.spec.crop_size)
        self.audio_aug = self.spec.augment.audio(
            sample_rate=self.spec.sample_rate, n_mels=self.spec.n_mels
        )

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


@dataclass
class VideoClipSample:
    """Fine-tuning clips (REFERENCE.md section 6): one random augmented clip to train (pretraining
    augmentations without blur), or `test_clips` evenly spaced centre-cropped clips to test.

    Returns {"video": uint8 (clips, T, 3, size, size), "label": int64 ()}; clips is 1 to train.
    """

    frames: int = 8
    fps: float = 16.0
    size: int = 224
    train: bool = True
    test_clips: int = 10
    seed: int = 0
    decode_threads: int = 1

    def __post_init__(self) -> None:
        self.augment = VideoAugment(size=self.size, blur_p=0.0)
        self.short_side = round(self.size / 0.875)  # test: resize short side to 256 for 224

    def __call__(self, row: Mapping[str, Any], *, epoch: int, index: int) -> dict[str, np.ndarray]:
        rng, g = sample_generators(self.seed, epoch, index)
        seconds, duration = self.frames / self.fps, float(row["duration"])
        starts = clip_starts(duration, seconds, train=self.train, clips=self.test_clips, rng=rng)
        times = [t for start in starts for t in frame_times(start, self.frames, self.fps)]
        frames, _ = read_clip(
            row["path"], frame_times=times, short_side=self.short_side, threads=self.decode_threads
        )
        clips = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (clips * T, 3, H, W)
        clips = clips.reshape(len(starts), self.frames, *clips.shape[1:])
        views = [
            self.augment(clip, g) if self.train else eval_clip(clip, self.size) for clip in clips
        ]
        return {"video": torch.stack(views).numpy(), "label": np.int64(row["label"])}


@dataclass
class AudioClipSample:
    """ESC-50 crops: one random augmented crop to train, or `test_clips` evenly spaced crops.

    Returns {"audio": float32 (clips, 1, F, T), "label": int64 ()}.
    """

    seconds: float = 2.0
    sample_rate: int = 16000
    n_mels: int = 80
    train: bool = True
    test_clips: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        self.augment = AudioAugment(sample_rate=self.sample_rate, n_mels=self.n_mels)

    def __call__(self, row: Mapping[str, Any], *, epoch: int, index: int) -> dict[str, np.ndarray]:
        rng, g = sample_generators(self.seed, epoch, index)
        duration = float(row["duration"])
        starts = clip_starts(
            duration, self.seconds, train=self.train, clips=self.test_clips, rng=rng
        )
        spans = [(start, self.seconds) for start in starts]
        if row.get("audio_path"):
            waves = [
                read_npy_audio(row["audio_path"], s, n, sample_rate=self.sample_rate)
                for s, n in spans
            ]
        else:
            _, waves = read_clip(row["path"], audio_spans=spans, sample_rate=self.sample_rate)
        images = []
        for wave in waves:
            wave_t = torch.from_numpy(wave)
            images.append(
                self.augment(wave_t, g)
                if self.train
                else log_mel(wave_t, sample_rate=self.sample_rate, n_mels=self.n_mels)
            )
        return {"audio": torch.stack(images).numpy(), "label": np.int64(row["label"])}
