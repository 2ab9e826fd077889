"""Where in a video the two windows of a pretraining sample go (REFERENCE.md section 3).

Times are seconds from the start; `duration` is the span inside both streams (the manifest's
`duration`). Audio windows are `audio_seconds` long (a); video windows hold `frames` frames at
`fps` (v). Each mode places an audio span and a video span, and cuts the two windows from them,
as the reference code samples them (pritamqu/CrissCross, train/datasets/loader/backend_pretext):
the audio span starts uniformly in the video, the video span uniformly inside the audio span.
- same_timestamp: spans of one window; the two views differ only by augmentation;
- overlapped (default): spans 1.5x long; the first and the last window of each;
- adjacent: spans 2x long (4 s of audio, 1 s of video); back-to-back windows of each, so the
  video windows are v apart and the audio windows a apart;
- random: two independent one-window draws;
- far_apart: a gap of g = duration / 2 - a between the two windows of both modalities, each
  video window at the start of its audio window. Under 2a (4 s) the reference falls back: audio
  windows at 0 and at the end, video windows half the video apart.

Short videos (`short_videos`): "skip" (default) leaves out videos shorter than the mode's spans
(`required_seconds`). "reference" keeps every video above REFERENCE_MIN_SECONDS (1.1 s) in both
streams, as the reference's loader does: a span longer than the video starts at 0 and reads past
the end, where the audio is zero-padded and the last frame repeats.
Fine-tuning and ESC-50 clips: one random clip to train, evenly spaced clips to test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("same_timestamp", "overlapped", "adjacent", "random", "far_apart")
SHORT_VIDEOS = ("skip", "reference")
REFERENCE_MIN_SECONDS = 1.1  # the reference keeps videos whose both streams are longer
SPAN = {"same_timestamp": 1.0, "overlapped": 1.5, "adjacent": 2.0, "random": 1.0, "far_apart": 1.0}


@dataclass(frozen=True)
class Windows:
    """Start times of the four views of a pretraining sample."""

    v1: float
    v2: float
    a1: float
    a2: float


def required_seconds(
    mode: str, *, audio_seconds: float, video_seconds: float, short_videos: str = "skip"
) -> float:
    """The shortest video a mode can sample from."""
    _check(mode, short_videos)
    if short_videos == "reference":
        return REFERENCE_MIN_SECONDS
    return SPAN[mode] * max(audio_seconds, video_seconds)


def pretext_windows(
    mode: str,
    duration: float,
    *,
    audio_seconds: float,
    video_seconds: float,
    rng: np.random.Generator,
    short_videos: str = "skip",
) -> Windows:
    """Draw the windows of one sample; ValueError if the video is shorter than the mode needs."""
    need = required_seconds(
        mode, audio_seconds=audio_seconds, video_seconds=video_seconds, short_videos=short_videos
    )
    if duration + 1e-6 < need:
        raise ValueError(f"{duration:.2f} s is shorter than the {need:.2f} s that '{mode}' needs")
    a, v = audio_seconds, video_seconds
    if mode == "far_apart":
        return _far_apart(duration, a, v, rng)
    if mode == "random":
        a1, v1 = _spans(duration, a, v, rng)
        a2, v2 = _spans(duration, a, v, rng)
        return Windows(v1, v2, a1, a2)
    span = SPAN[mode]
    a1, v1 = _spans(duration, span * a, span * v, rng)
    # the first and the last window of each span (the same one when the span is one window)
    return Windows(v1, v1 + (span - 1) * v, a1, a1 + (span - 1) * a)


def _spans(d: float, audio: float, video: float, rng: np.random.Generator) -> tuple[float, float]:
    """Starts of an audio span and a video span: the audio span uniform in the video, the video
    span uniform inside it; a span longer than the video starts at 0."""
    a1 = float(rng.uniform(0, max(d - audio, 0)))
    room = min(a1 + audio, d) - video - a1 if d >= video else 0.0
    return a1, a1 + float(rng.uniform(0, max(room, 0)))


def _far_apart(d: float, a: float, v: float, rng: np.random.Generator) -> Windows:
    gap = min(d / 2 - a, max(d / 2 - v, 0))
    if gap > 0:
        a1 = float(rng.uniform(0, gap))
        return Windows(a1, a1 + gap, a1, a1 + gap)
    # the reference's fallback: audio at 0 and at the end, video half the video apart
    a2 = max(0.0, d - a)
    if v > d / 2:
        return Windows(0.0, max(0.0, d - v), 0.0, a2)
    v1 = float(rng.uniform(0, max(d / 2 - v, 0)))
    return Windows(v1, v1 + d / 2, 0.0, a2)


def _check(mode: str, short_videos: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown sampling mode {mode!r}; one of {', '.join(MODES)}")
    if short_videos not in SHORT_VIDEOS:
        raise ValueError(f"unknown short_videos {short_videos!r}; one of {', '.join(SHORT_VIDEOS)}")


def frame_times(start: float, frames: int, fps: float) -> list[float]:
    return [start + k / fps for k in range(frames)]


def train_clip_start(duration: float, seconds: float, rng: np.random.Generator) -> float:
    """One random clip of `seconds` inside the video (at 0 when the video is shorter)."""
    return float(rng.uniform(0, max(duration - seconds, 0.0)))


def eval_clip_starts(duration: float, seconds: float, clips: int = 10) -> list[float]:
    """`clips` evenly spaced clip starts covering the video from its start to its end."""
    return np.linspace(0, max(duration - seconds, 0.0), clips).tolist()


def clip_starts(
    duration: float, seconds: float, *, train: bool, clips: int, rng: np.random.Generator
) -> list[float]:
    """One random clip start to train, or `clips` evenly spaced starts to test."""
    if train:
        return [train_clip_start(duration, seconds, rng)]
    return eval_clip_starts(duration, seconds, clips)
