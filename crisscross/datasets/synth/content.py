"""Synthetic audio-visual content with a learnable structure.

Each class fixes a look (a textured background, an object's colour, size and orbit) and a sound
(a pitch and a timbre). In every clip, random "events" make the object flash and, at the same
instants, the sound burst: what moves and what sounds share a cause, so audio-visual
synchronisation carries signal, and a classifier has something to find in either modality.
Legend: T frames, H/W pixels, N audio samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TEXTURE_CELLS = 12  # coarse noise cells across the texture


@dataclass(frozen=True)
class ClassStyle:
    palette: np.ndarray  # (2, 3) background colours
    grating_angle: float
    grating_freq: float  # cycles across the frame
    object_rgb: np.ndarray  # (3,)
    object_radius: float  # fraction of the short side
    orbit_speed: float  # revolutions per second
    event_rate: float  # events per second
    pitch: float  # Hz
    harmonics: np.ndarray  # (4,) relative amplitudes


def class_style(class_id: int) -> ClassStyle:
    """The fixed look and sound of a class (deterministic in the class id)."""
    rng = np.random.default_rng(10_007 + class_id)
    return ClassStyle(
        palette=rng.uniform(30, 225, size=(2, 3)),
        grating_angle=float(rng.uniform(0, np.pi)),
        grating_freq=float(rng.uniform(2, 8)),
        object_rgb=rng.uniform(0, 255, size=3),
        object_radius=float(rng.uniform(0.08, 0.2)),
        orbit_speed=float(rng.uniform(0.2, 1.2) * rng.choice([-1, 1])),
        event_rate=float(rng.uniform(1.0, 3.0)),
        pitch=float(150 * 2 ** (class_id * 0.37 % 4)),
        harmonics=rng.dirichlet(np.ones(4)),
    )


def event_times(style: ClassStyle, seconds: float, rng: np.random.Generator) -> np.ndarray:
    count = rng.poisson(style.event_rate * seconds) + 1
    return np.sort(rng.uniform(0, seconds, size=count))


def envelope(times: np.ndarray, events: np.ndarray, decay: float) -> np.ndarray:
    """exp(-(t - last event) / decay), 0 before the first event."""
    index = np.searchsorted(events, times, side="right") - 1
    since = times - events[np.clip(index, 0, None)]
    return np.where(index >= 0, np.exp(-since / decay), 0.0)


def render_video(
    style: ClassStyle,
    events: np.ndarray,
    *,
    seconds: float,
    fps: float,
    width: int,
    height: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """(T, H, W, 3) uint8 frames: panning texture, orbiting object that flashes at each event."""
    frames = max(1, round(seconds * fps))
    texture = _texture(style, width * 2, height * 2, rng)
    pan = rng.uniform(-0.15, 0.15, size=2) * np.array([width, height])  # pixels per second
    phase, short = rng.uniform(0, 2 * np.pi), min(width, height)
    cx, cy = width * rng.uniform(0.4, 0.6), height * rng.uniform(0.4, 0.6)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    flash = envelope(np.arange(frames) / fps, events, decay=0.12)
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        ox, oy = (np.array([width, height]) // 2 + pan * t / fps).astype(int) % [width, height]
        frame = texture[oy : oy + height, ox : ox + width].copy()
        angle = phase + 2 * np.pi * style.orbit_speed * t / fps
        px, py = cx + 0.3 * short * np.cos(angle), cy + 0.3 * short * np.sin(angle)
        radius = style.object_radius * short * (1 + 0.6 * flash[t])
        mask = (xx - px) ** 2 + (yy - py) ** 2 < radius**2
        frame[mask] = np.clip(style.object_rgb * (1 + 0.8 * flash[t]), 0, 255)
        frame += rng.normal(0, 3, size=frame.shape).astype(np.float32)  # sensor noise
        out[t] = np.clip(frame, 0, 255)
    return out


def render_audio(
    style: ClassStyle,
    events: np.ndarray,
    *,
    seconds: float,
    sample_rate: int,
    channels: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """(channels, N) float32 in [-1, 1]: the class's tone, bursting at each event, plus noise."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    tone = sum(
        a * np.sin(2 * np.pi * (k + 1) * style.pitch * t + rng.uniform(0, 6.3))
        for k, a in enumerate(style.harmonics)
    )
    loud = 0.15 + 0.85 * envelope(t, events, decay=0.08)
    mono = 0.5 * loud * tone + rng.normal(0, 0.02, size=t.shape)
    gains = rng.uniform(0.7, 1.0, size=(channels, 1))
    return np.clip(gains * mono[None, :], -1, 1).astype(np.float32)


def _texture(style: ClassStyle, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    cells = rng.random((TEXTURE_CELLS, TEXTURE_CELLS))
    ys = np.linspace(0, TEXTURE_CELLS - 1, height).astype(int)
    xs = np.linspace(0, TEXTURE_CELLS - 1, width).astype(int)
    noise = cells[np.ix_(ys, xs)]
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    along = xx * np.cos(style.grating_angle) + yy * np.sin(style.grating_angle)
    grating = 0.5 + 0.5 * np.sin(2 * np.pi * style.grating_freq * along * 2)
    mix = (0.6 * grating + 0.4 * noise)[..., None]
    fine = rng.normal(0, 12, size=(height, width, 1))  # fine detail the codec must spend bits on
    return (style.palette[0] * mix + style.palette[1] * (1 - mix) + fine).astype(np.float32)
