"""Per-sample functions: a manifest row in, model-ready arrays out, reproducible per sample.

A sample is fixed by (seed, epoch, index). The same functions serve the Ray Data pipeline, the
torch Dataset and the benchmark. Video comes out as uint8 (T, 3, H, W) per clip (normalised on
the training device), audio as a float32 (1, F, T) log-mel.

Pretraining augments where `ClipSpec.augment_on` says. "decode": the decode worker does it all.
"device" (the default): the decode worker does only what fixes the shapes (crop, resize, flip) and
draws every other decision into a parameter vector per view (`<view>_aug`), the audio views stay
16 kHz waveforms, and `DeviceAugment` finishes the batch on the training device. Both draw the
same numbers in the same order from the same generator, so they give the same sample.
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
from crisscross.datasets.transforms.audio import HOP, spectrogram_frames
from crisscross.datasets.transforms.video import CUT_BOX, PHOTO, to_model_input

AUGMENT_ON = ("decode", "device")


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
    short_videos: str = "skip"  # or "reference": every video above 1.1 s, spans padded
    short_side: int = 128  # decode-time resize: the crop's canvas
    decode_threads: int = 1
    time_limit: float | None = None  # seconds a sample's decode may take (decode.time_limit)
    augment: AugmentStrength = field(default_factory=AugmentStrength)  # augmentation knobs
    augment_on: str = "device"  # "decode" or "device": where colour, blur, cutout, log-mel run

    def __post_init__(self) -> None:
        if self.augment_on not in AUGMENT_ON:
            raise ValueError(f"augment_on must be one of {AUGMENT_ON}, not {self.augment_on!r}")

    @property
    def video_seconds(self) -> float:
        return self.frames / self.fps


def sample_generators(
    seed: int, epoch: int, index: int
) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for one sample: windows and clips, augmentation. numpy's: a draw
    costs about a tenth of a torch generator's, and a sample makes some 40 of them."""
    rng = np.random.default_rng([seed, epoch, index])
    return rng, np.random.default_rng(rng.integers(2**62))


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
            short_videos=spec.short_videos,
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
            limit=spec.time_limit,
        )
        if audio_path:
            audio = [
                read_npy_audio(audio_path, s, n, sample_rate=spec.sample_rate) for s, n in spans
            ]
        return self.views(frames, audio, g)

    def views(
        self, frames: np.ndarray, audio: list[np.ndarray], g: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """The four views from the decoded frames (2T, H, W, 3) of both windows and the two
        waveforms, drawing from `g` (after the windows were drawn)."""
        spec = self.spec
        clips = torch.from_numpy(frames).permute(0, 3, 1, 2)  # (2T, 3, H, W)
        views = {}
        deferred = self.augment and spec.augment_on == "device"
        for name, clip in (("v1", clips[: spec.frames]), ("v2", clips[spec.frames :])):
            if deferred:
                views[name] = self.video_aug.geometry(clip, g).numpy()
                views[f"{name}_aug"] = self.video_aug.draw(g).numpy()
            elif self.augment:
                view, params = self.video_aug.augment(clip, g)
                views[name] = view.numpy()
                if self.video_aug.cutout_after_normalize:  # the reference's, on model input
                    views[f"{name}_cutout"] = params[CUT_BOX].numpy()
            else:
                views[name] = eval_clip(clip, spec.crop_size).numpy()
        for name, wave in (("a1", audio[0]), ("a2", audio[1])):
            wave_t = torch.from_numpy(wave)
            if deferred:
                views[name] = wave
                views[f"{name}_aug"] = self.audio_aug.draw(
                    g, frames=spectrogram_frames(len(wave))
                ).numpy()
            elif self.augment:
                views[name] = self.audio_aug(wave_t, g).numpy()
            else:
                views[name] = log_mel(
                    wave_t, sample_rate=spec.sample_rate, n_mels=spec.n_mels
                ).numpy()
        return views

    def empty(self) -> dict[str, np.ndarray]:
        """Zero samples of every array `__call__` returns, with their shapes and dtypes."""
        spec = self.spec
        video = np.zeros((0, spec.frames, 3, spec.crop_size, spec.crop_size), np.uint8)
        samples = round(spec.audio_seconds * spec.sample_rate)
        if self.augment and spec.augment_on == "device":
            views = {
                "v1": video,
                "v1_aug": np.zeros((0, len(PHOTO)), np.float32),
                "v2": video,
                "v2_aug": np.zeros((0, len(PHOTO)), np.float32),
                "a1": np.zeros((0, samples), np.float32),
                "a1_aug": np.zeros((0, self.audio_aug.param_count), np.float32),
            }
            return views | {"a2": views["a1"], "a2_aug": views["a1_aug"]}
        audio = np.zeros((0, 1, spec.n_mels, spectrogram_frames(samples)), np.float32)
        views = {"v1": video, "v2": video, "a1": audio, "a2": audio}
        if self.augment and self.video_aug.cutout_after_normalize:
            views |= {f"{v}_cutout": np.zeros((0, 3), np.float32) for v in ("v1", "v2")}
        return views


@dataclass
class DeviceAugment:
    """Finish a batch of samples made with `augment_on: device`, on the training device:
    colour jitter, grayscale, blur, cutout and normalisation of the video views, log-mel,
    volume, masks and random resized crop of the audio views, each by its sample's draws."""

    spec: ClipSpec = field(default_factory=ClipSpec)

    def __post_init__(self) -> None:
        self.audio_aug = self.spec.augment.audio(
            sample_rate=self.spec.sample_rate, n_mels=self.spec.n_mels
        )

    def __call__(
        self, batch: Mapping[str, torch.Tensor], device: torch.device
    ) -> tuple[torch.Tensor, ...]:
        """Model inputs (v1, v2, a1, a2): video (B, 3, T, H, W), audio (B, 1, F, S) float."""
        video = [
            to_model_input(batch[k].to(device, non_blocking=True), batch[f"{k}_aug"].to(device))
            for k in ("v1", "v2")
        ]
        audio = [
            self.audio_aug.apply(
                batch[k].to(device, non_blocking=True).float(), batch[f"{k}_aug"].to(device)
            )
            for k in ("a1", "a2")
        ]
        return video[0], video[1], audio[0], audio[1]


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
        # the clean cutout and colour: fine-tuning's config has no augmentation modes yet, and
        # the reference cutout would need the trainer's normalisation to apply it
        self.augment = VideoAugment(
            size=self.size, blur_p=0.0, cutout_mode="fill", colour_mode="fast"
        )
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

    `protocol` "reference" is the reference code's ESC-50 SVM: training crops also time-warped
    (window 20); test clips from the file trimmed to its first `seconds`, whose log-mel of
    seconds x 100 + 1 frames gives `test_clips` windows of seconds x 100 frames at the integer
    parts of evenly spaced starts in [0, 1]: nine at frame 0 and one at frame 1 for 10 clips.
    Returns {"audio": float32 (clips, 1, F, T), "label": int64 ()}.
    """

    seconds: float = 2.0
    sample_rate: int = 16000
    n_mels: int = 80
    train: bool = True
    test_clips: int = 10
    seed: int = 0
    protocol: str = "clean"  # or "reference"

    def __post_init__(self) -> None:
        self.augment = AudioAugment(
            sample_rate=self.sample_rate,
            n_mels=self.n_mels,
            time_warp=20 if self.protocol == "reference" else 0,
        )

    def __call__(self, row: Mapping[str, Any], *, epoch: int, index: int) -> dict[str, np.ndarray]:
        rng, g = sample_generators(self.seed, epoch, index)
        duration = float(row["duration"])
        starts = clip_starts(
            duration, self.seconds, train=self.train, clips=self.test_clips, rng=rng
        )
        if self.protocol == "reference" and not self.train:
            starts = [0.0]  # the file trimmed to its first `seconds`, cut into windows below
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
        if self.protocol == "reference" and not self.train:
            whole = images[0]
            size = round(self.seconds * self.sample_rate) // HOP  # frames of a window
            starts = np.linspace(0, max(whole.shape[-1] - size, 1), self.test_clips).astype(int)
            images = [whole[..., s : s + size] for s in starts]
        return {"audio": torch.stack(images).numpy(), "label": np.int64(row["label"])}
