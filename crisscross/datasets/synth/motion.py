"""Synthetic content whose class only the shared motion carries (`content: motion`, the default).

A class is two directions, the same in both modalities: the object moves up or down while it
grows or shrinks, and its sound glides up or down in pitch while it gets louder or softer, in
step with it (class c: up if c is even, grows if c < 2). A clip is a run of segments of 0.5 to
0.9 s; at every cut, on both tracks at once, a new object and background (grey levels with a
light tint), position, base pitch, timbre, loudness and noise floor begin. So everything but the
class changes within a clip: random features cannot find the class (kNN near chance, measured),
and since a segment is shorter than an audio window, two windows of a clip share little but the
class, which is what self-supervision then learns (docs/learning.md: with segments of 1 to 1.6 s
the encoders learned the segments' own look and sound instead).
Written for this project (no library makes paired synthetic media). Legend: T frames, H/W
pixels, N audio samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES = 4  # 2 vertical directions x 2 size changes
SEGMENT_SECONDS = (0.5, 0.9)  # shorter than an audio window: two views rarely share one
TRAVEL = 0.6  # vertical travel over a segment, in frame heights
GROWTH = 1.4  # radius from (1 - GROWTH / 2) to (1 + GROWTH / 2) times its middle value
GLIDE = 0.75  # pitch glide over a segment, in octaves
SWELL_DB = 9.0  # loudness change over a segment
TINT = 30.0  # std of the colour tint around each grey level
MIN_CONTRAST = 60.0  # grey levels of object and background differ by at least this


@dataclass(frozen=True)
class Segment:
    """What one segment draws: every nuisance of the object and its sound."""

    start: float
    end: float
    object_rgb: np.ndarray  # (3,)
    background_rgb: np.ndarray  # (2, 3): the two ends of a linear gradient
    gradient_angle: float
    radius: float  # middle radius, fraction of the short side
    across: float  # horizontal place, fraction of the width
    pitch: float  # Hz at the middle of the segment
    harmonics: np.ndarray  # (4,) relative amplitudes
    loudness_db: float  # at the middle of the segment
    noise_db: float


def directions(class_id: int) -> tuple[int, int]:
    """(vertical, size) of a class, each +1 or -1: (up, grows) for class 0."""
    if not 0 <= class_id < CLASSES:
        raise ValueError(
            f"motion content has {CLASSES} classes (up or down x growing or shrinking); "
            f"class {class_id} asked for: use at most {CLASSES} classes, or content 'style'"
        )
    return (1 if class_id % 2 == 0 else -1), (1 if class_id < 2 else -1)


def segments(seconds: float, rng: np.random.Generator) -> list[Segment]:
    """The clip's segments, covering [0, seconds)."""
    out: list[Segment] = []
    start = 0.0
    while start < seconds:
        end = start + float(rng.uniform(*SEGMENT_SECONDS))
        grey_object, grey_background = _grey_pair(rng)
        background = _tinted(rng, grey_background)
        out.append(
            Segment(
                start=start,
                end=end,
                object_rgb=_tinted(rng, grey_object),
                background_rgb=np.stack(
                    [background, np.clip(background + rng.uniform(-30, 30), 0, 255)]
                ),
                gradient_angle=float(rng.uniform(0, 2 * np.pi)),
                radius=float(rng.uniform(0.15, 0.22)),
                across=float(rng.uniform(0.3, 0.7)),
                pitch=float(np.exp(rng.uniform(np.log(300), np.log(1200)))),
                harmonics=rng.dirichlet(np.full(4, 0.7)),
                loudness_db=float(rng.uniform(-24, 0)),
                noise_db=float(rng.uniform(-45, -25)),
            )
        )
        start = end
    return out


def render_video(
    class_id: int,
    parts: list[Segment],
    *,
    seconds: float,
    fps: float,
    width: int,
    height: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of the object moving and changing size as its class says."""
    up, grow = directions(class_id)
    frames = max(1, round(seconds * fps))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    short = min(width, height)
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        now = t / fps
        s = _at(parts, now)
        u = (now - s.start) / (s.end - s.start) - 0.5  # -0.5 .. 0.5 through the segment
        c, si = np.cos(s.gradient_angle), np.sin(s.gradient_angle)
        along = (((xx - width / 2) * c + (yy - height / 2) * si) / width + 0.5)[..., None]
        frame = s.background_rgb[0] * (1 - along) + s.background_rgb[1] * along
        y = (0.5 - up * TRAVEL * u) * height
        radius = s.radius * (1 + grow * GROWTH * u) * short
        frame[(xx - s.across * width) ** 2 + (yy - y) ** 2 < radius**2] = s.object_rgb
        frame += rng.normal(0, 3, size=frame.shape)  # sensor noise
        out[t] = np.clip(frame, 0, 255)
    return out


def render_audio(
    class_id: int,
    parts: list[Segment],
    *,
    seconds: float,
    sample_rate: int,
    channels: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """(channels, N) float32 in [-1, 1]: each segment's tone gliding and swelling as the class
    says, 10 ms fades at the cuts, over its noise floor."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    pitch, loud, index = audio_tracks(class_id, parts, t)
    start, end = (np.array([getattr(s, k) for s in parts])[index] for k in ("start", "end"))
    phase = np.cumsum(2 * np.pi * pitch / sample_rate)
    harmonics = np.stack([s.harmonics for s in parts])[index]  # (N, 4)
    tone = sum(harmonics[:, k] * np.sin((k + 1) * phase) for k in range(4))
    fade = np.clip(np.minimum(t - start, end - t) / 0.01, 0, 1)
    noise_db = np.array([s.noise_db for s in parts])[index]
    mono = 0.5 * 10 ** (loud / 20) * fade * tone + 10 ** (noise_db / 20) * rng.normal(size=t.size)
    gains = rng.uniform(0.8, 1.0, size=(channels, 1))
    return np.clip(gains * mono[None, :], -1, 1).astype(np.float32)


def audio_tracks(
    class_id: int, parts: list[Segment], t: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """At times `t`: (fundamental in Hz, tone level in dB, index of the segment)."""
    up, grow = directions(class_id)
    starts = np.array([s.start for s in parts])
    index = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(parts) - 1)
    start, end = starts[index], np.array([s.end for s in parts])[index]
    u = (t - start) / (end - start) - 0.5
    pitch = np.array([s.pitch for s in parts])[index] * 2 ** (up * GLIDE * u)
    loud = np.array([s.loudness_db for s in parts])[index] + grow * SWELL_DB * u
    return pitch, loud, index


def _at(parts: list[Segment], now: float) -> Segment:
    for segment in parts:
        if now < segment.end:
            return segment
    return parts[-1]


def _grey_pair(rng: np.random.Generator) -> tuple[float, float]:
    while True:
        a, b = rng.uniform(20, 235, size=2)
        if abs(a - b) > MIN_CONTRAST:
            return float(a), float(b)


def _tinted(rng: np.random.Generator, grey: float) -> np.ndarray:
    return np.clip(grey + rng.normal(0, TINT, size=3), 0, 255)
