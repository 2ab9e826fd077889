"""Synthetic content whose class only the shared motion carries (`content: motion`, the default).

A class is a vertical velocity, the same in both modalities: the object moves up fast, up
slowly, down slowly or down fast (SPEEDS), and its sound glides up or down in pitch by the same
share of GLIDE octaves, in step with it. One factor with four values, not two binary ones: with
classes "up or down x growing or shrinking" (and a sound that swelled or faded), both encoders
learned the first factor perfectly and the second not at all in 1,000 steps (docs/learning.md),
so kNN stopped at half. A clip is a run of segments of 0.5 to 0.9 s; at every cut, on both
tracks at once, a new object and background (grey levels with a light tint), position,
horizontal drift (DRIFT: how much moves must not tell the class, or a random network sees the
fast classes: video kNN 0.458 at random init without it, 0.250 with it), base pitch, timbre,
loudness and noise floor begin. So everything but the class changes within a clip: random
features cannot find the class (kNN near chance, measured), and since a segment is shorter than
an audio window, two windows of a clip share little but the class, which is what
self-supervision then learns (docs/learning.md: with segments of 1 to 1.6 s the encoders learned
the segments' own look and sound instead).
Written for this project (no library makes paired synthetic media). Legend: T frames, H/W
pixels, N audio samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPEEDS = (1.0, 0.4, -0.4, -1.0)  # class c's share of TRAVEL and GLIDE per segment (+ is up)
CLASSES = len(SPEEDS)
SEGMENT_SECONDS = (0.5, 0.9)  # shorter than an audio window: two views rarely share one
TRAVEL = 0.6  # vertical travel over a segment at full speed, in frame heights
GLIDE = 0.75  # pitch glide over a segment at full speed, in octaves
DRIFT = 0.6  # at most this horizontal travel over a segment, in frame widths, either way
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
    across: float  # horizontal place at the middle of the segment, fraction of the width
    drift: float  # horizontal travel over the segment, frame widths (a nuisance)
    pitch: float  # Hz at the middle of the segment
    harmonics: np.ndarray  # (4,) relative amplitudes
    loudness_db: float  # at the middle of the segment
    noise_db: float


def speed(class_id: int) -> float:
    """The class's vertical speed as a share of TRAVEL and GLIDE: + up, - down."""
    if not 0 <= class_id < CLASSES:
        raise ValueError(
            f"motion content has {CLASSES} classes (up fast, up slowly, down slowly, down "
            f"fast); class {class_id} asked for: use at most {CLASSES} classes, or content 'style'"
        )
    return SPEEDS[class_id]


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
                drift=float(rng.uniform(-1, 1)) * DRIFT,
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
    """(T, H, W, 3) uint8 frames of the object moving up or down as fast as its class says."""
    up = speed(class_id)
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
        radius = s.radius * short
        x = (s.across + s.drift * u) * width
        frame[(xx - x) ** 2 + (yy - y) ** 2 < radius**2] = s.object_rgb
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
    """(channels, N) float32 in [-1, 1]: each segment's tone gliding as the class says, at the
    segment's loudness, 10 ms fades at the cuts, over its noise floor."""
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
    up = speed(class_id)
    starts = np.array([s.start for s in parts])
    index = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, len(parts) - 1)
    start, end = starts[index], np.array([s.end for s in parts])[index]
    u = (t - start) / (end - start) - 0.5
    pitch = np.array([s.pitch for s in parts])[index] * 2 ** (up * GLIDE * u)
    loud = np.array([s.loudness_db for s in parts])[index]
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
