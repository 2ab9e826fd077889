"""Decode exactly what a sample needs: frames at given times, audio over a given span.

Video: seek to the keyframe before each group of nearby times, decode forward, keep for each time
the latest frame at or before it (so any source rate becomes the target rate, variable rates
included), and convert only the kept frames, resized by swscale while converting to RGB. Frames are
turned upright by the stream's display rotation. Audio: seek, decode, resample to mono at the
target rate, then trim or zero-pad to the exact length. Containers are always closed.
Legend: N frames, H/W pixels, S audio samples.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from crisscross.datasets.fs import resolve
from crisscross.datasets.probe import open_media

REGROUP_SECONDS = 1.0  # a gap longer than this between needed times is crossed by a seek
# Audio decoding starts this much before a window and drops it: after a seek, transform codecs
# (AAC, Opus) need a frame of history before their output is whole.
AUDIO_PREROLL = 0.2


# PyAV builds a new swscale context for every frame unless one reformatter is reused: reusing it
# makes RGB conversion about 15x cheaper. A reformatter is not thread-safe: one per thread. One
# inherited through fork() (DataLoader workers) must never be used or freed in the child, since
# both wait on threads that did not survive the fork: the parent drops its own before forking,
# and a child keeps any other inherited one alive, untouched.
_local = threading.local()
_inherited: list[VideoReformatter] = []


def _reformatter() -> VideoReformatter:
    if getattr(_local, "pid", None) != os.getpid():
        if hasattr(_local, "reformatter"):
            _inherited.append(_local.reformatter)
        _local.reformatter, _local.pid = VideoReformatter(), os.getpid()
    return _local.reformatter


def _drop_reformatter() -> None:
    _local.__dict__.pop("reformatter", None)
    _local.__dict__.pop("pid", None)


os.register_at_fork(before=_drop_reformatter)


class DecodeError(RuntimeError):
    """A file or window that could not be decoded; the message names the file and the reason."""


def read_frames(
    container: av.container.InputContainer,
    times: Sequence[float],
    *,
    short_side: int | None = None,
    threads: int = 1,
) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB frames at `times` (seconds from the start), upright."""
    stream = container.streams.video[0]
    stream.codec_context.thread_count = threads
    stream.thread_type = "SLICE" if threads > 1 else "NONE"
    offset = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
    order = np.argsort(times)
    chosen: list[av.VideoFrame | None] = [None] * len(times)
    group: list[int] = []
    for i in order:
        if group and times[i] - times[group[-1]] > REGROUP_SECONDS:
            _decode_group(container, stream, times, group, chosen, offset)
            group = []
        group.append(int(i))
    if group:
        _decode_group(container, stream, times, group, chosen, offset)
    converted: dict[int, np.ndarray] = {}
    for frame in chosen:
        if frame is not None and id(frame) not in converted:
            converted[id(frame)] = _to_rgb(frame, short_side)
    return np.stack([converted[id(frame)] for frame in chosen])


def _decode_group(container, stream, times, group, chosen, offset) -> None:
    first = times[group[0]]
    container.seek(int((first + offset) / stream.time_base), stream=stream, backward=True)
    previous, k = None, 0
    for frame in container.decode(stream):
        if frame.time is None:
            continue
        t = frame.time - offset
        while k < len(group) and t > times[group[k]] + 1e-6:
            chosen[group[k]] = previous if previous is not None else frame
            k += 1
        previous = frame
        if k == len(group):
            return
    if previous is None:
        raise DecodeError(f"no video frame at or after {first:.2f} s")
    for index in group[k:]:  # past the end: hold the last frame
        chosen[index] = previous


def _to_rgb(frame: av.VideoFrame, short_side: int | None) -> np.ndarray:
    width, height = frame.width, frame.height
    if short_side is not None:
        scale = short_side / min(width, height)
        width, height = max(2, round(width * scale)), max(2, round(height * scale))
    # area averaging when shrinking (swscale's default filter costs twice as much)
    interpolation = "AREA" if width < frame.width else "BILINEAR"
    rgb = (
        _reformatter()
        .reformat(frame, width=width, height=height, format="rgb24", interpolation=interpolation)
        .to_ndarray()
    )
    turns = int(frame.rotation or 0) // 90  # display matrix: counter-clockwise degrees
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns % 4 else rgb


def read_audio(
    container: av.container.InputContainer, start: float, seconds: float, *, sample_rate: int
) -> np.ndarray:
    """(S,) float32 mono in [-1, 1], S = round(seconds * sample_rate), zero-padded past the ends."""
    stream = container.streams.audio[0]
    offset = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
    want = round(seconds * sample_rate)
    seek_to = max(start - AUDIO_PREROLL, 0.0) + offset
    container.seek(int(seek_to / stream.time_base), stream=stream, backward=True)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    chunks: list[np.ndarray] = []
    first_time, have = None, 0
    for frame in container.decode(stream):
        if first_time is None:
            first_time = (frame.time if frame.time is not None else offset) - offset
        for out in resampler.resample(frame):
            chunks.append(out.to_ndarray().reshape(-1))
            have += chunks[-1].size
        if first_time is not None and have >= round((start - first_time) * sample_rate) + want:
            break
    else:
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    if first_time is None:
        raise DecodeError("no audio frame")
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    skip = round((start - first_time) * sample_rate)
    return _fit(audio, skip, want)


def _read_spans(
    container, spans: Sequence[tuple[float, float]], sample_rate: int
) -> list[np.ndarray]:
    """Audio of each (start, seconds) span; overlapping or close spans are decoded once together."""
    order = sorted(range(len(spans)), key=lambda i: spans[i][0])
    out: list[np.ndarray] = [np.zeros(0, np.float32)] * len(spans)
    group: list[int] = []

    def group_end() -> float:
        return max(spans[j][0] + spans[j][1] for j in group)

    def flush() -> None:
        start = spans[group[0]][0]
        audio = read_audio(container, start, group_end() - start, sample_rate=sample_rate)
        for i in group:
            first = round((spans[i][0] - start) * sample_rate)
            out[i] = audio[first : first + round(spans[i][1] * sample_rate)]

    for i in order:
        if group and spans[i][0] > group_end() + REGROUP_SECONDS:
            flush()
            group = []
        group.append(i)
    if group:
        flush()
    return out


def _fit(audio: np.ndarray, skip: int, want: int) -> np.ndarray:
    out = np.zeros(want, np.float32)
    src = audio[max(skip, 0) : max(skip, 0) + want - max(-skip, 0)]
    out[max(-skip, 0) : max(-skip, 0) + src.size] = src
    return out


def read_npy_audio(uri: str, start: float, seconds: float, *, sample_rate: int) -> np.ndarray:
    """Like `read_audio`, from a prepared int16 .npy at `sample_rate`, by a range read only."""
    fs, path = resolve(uri)
    want = round(seconds * sample_rate)
    skip = round(start * sample_rate)
    with fs.open_input_file(path) as handle:
        version = np.lib.format.read_magic(handle)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(
            version, np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(handle)
        total, base = shape[0], handle.tell()
        first = min(max(skip, 0), total)
        count = max(0, min(total, skip + want) - first)
        handle.seek(base + first * dtype.itemsize)
        raw = np.frombuffer(handle.read(count * dtype.itemsize), dtype=dtype)
    audio = raw.astype(np.float32) / 32768.0
    return _fit(audio, min(skip, 0), want)


def read_clip(
    uri: str,
    *,
    frame_times: Sequence[float] = (),
    audio_spans: Sequence[tuple[float, float]] = (),
    short_side: int | None = None,
    sample_rate: int = 16000,
    threads: int = 1,
) -> tuple[np.ndarray | None, list[np.ndarray]]:
    """Frames at `frame_times` and audio over each (start, seconds) span, from one open of `uri`."""
    try:
        with open_media(uri) as container:
            frames = None
            if len(frame_times):
                if not container.streams.video:
                    raise DecodeError("no video stream")
                frames = read_frames(container, frame_times, short_side=short_side, threads=threads)
            if audio_spans and not container.streams.audio:
                raise DecodeError("no audio stream")
            return frames, _read_spans(container, audio_spans, sample_rate)
    except DecodeError as exc:
        raise DecodeError(f"{uri}: {exc}") from None
    except (av.FFmpegError, OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, av.FFmpegError) else str(exc)
        raise DecodeError(f"{uri}: {type(exc).__name__}: {reason}") from exc
