"""Where in a video the two windows of a pretraining sample go (REFERENCE.md section 3).

Times are seconds from the start. Audio windows are `audio_seconds` long; video windows hold
`frames` frames at `fps`. Modes, from the least to the most relaxed synchronicity:
- same_timestamp: one window, used twice (the two views differ only by augmentation);
- overlapped (default): a span 1.5x long; the first and the last window in it, for each modality,
  with the video span placed uniformly inside the audio span;
- adjacent: two back-to-back audio windows, each video window at one offset in its audio window;
- random: two independent windows;
- far_apart: windows half the video apart.
Fine-tuning and ESC-50 clips: one random clip to train, evenly spaced clips to test.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("same_timestamp", "overlapped", "adjacent", "random", "far_apart")
SPAN = 1.5  # the overlapped span, in window lengths


@dataclass(frozen=True)
class Windows:
    """Start times of the four views of a pretraining sample."""

    v1: float
    v2: float
    a1: float
    a2: float


def required_seconds(mode: str, *, audio_seconds: float, video_seconds: float) -> float:
    """The shortest video a mode can sample from."""
    longest = max(audio_seconds, video_seconds)
    return {
        "same_timestamp": longest,
        "overlapped": SPAN * longest,
        "adjacent": 2 * longest,
        "random": longest,
        "far_apart": 2 * longest,
    }[mode]


def pretext_windows(
    mode: str,
    duration: float,
    *,
    audio_seconds: float,
    video_seconds: float,
    rng: np.random.Generator,
) -> Windows:
    """Draw the windows of one sample; ValueError if the video is shorter than the mode needs."""
    need = required_seconds(mode, audio_seconds=audio_seconds, video_seconds=video_seconds)
    if duration + 1e-6 < need:
        raise ValueError(f"{duration:.2f} s is shorter than the {need:.2f} s that '{mode}' needs")
    a, v = audio_seconds, video_seconds
    slack = max(a - v, 0.0)

    def offset() -> float:  # a video window's place inside its audio window
        return float(rng.uniform(0, slack))

    if mode == "overlapped":
        audio_span, video_span = SPAN * a, SPAN * v
        a1 = float(rng.uniform(0, max(duration - audio_span, 0)))
        v1 = a1 + float(rng.uniform(0, max(audio_span - video_span, 0)))
        return Windows(v1, v1 + video_span - v, a1, a1 + audio_span - a)
    if mode == "same_timestamp":
        a1 = float(rng.uniform(0, duration - a if duration > a else 0))
        v1 = a1 + offset()
        return Windows(v1, v1, a1, a1)
    if mode == "adjacent":
        a1 = float(rng.uniform(0, max(duration - 2 * a, 0)))
        shift = offset()
        return Windows(a1 + shift, a1 + a + shift, a1, a1 + a)
    if mode == "random":
        a1, a2 = (float(rng.uniform(0, max(duration - a, 0))) for _ in range(2))
        return Windows(a1 + offset(), a2 + offset(), a1, a2)
    if mode == "far_apart":
        a1 = float(rng.uniform(0, max(duration / 2 - a, 0)))
        a2 = a1 + duration / 2
        return Windows(a1 + offset(), a2 + offset(), a1, a2)
    raise ValueError(f"unknown sampling mode {mode!r}; one of {', '.join(MODES)}")


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
