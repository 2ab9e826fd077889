"""Decode exactly what a sample needs: frames at given times, audio over a given span.

Video: seek to the keyframe before each group of nearby times, decode forward, keep for each time
the latest frame at or before it (so any source rate becomes the target rate, variable rates
included), and convert only the kept frames, resized by swscale while converting to RGB. Frames are
turned upright by the stream's display rotation. Audio: seek, decode, average to mono, resample
to the target rate (vectorised, once per span), then trim or zero-pad to the exact length.
Containers are always closed. A sample's decode may be given a time limit (`time_limit`):
the loops that demux and decode check it between frames, so a pathological file costs at most
that much; a read blocked inside the operating system is not interrupted (an object store's
client has its own timeouts).
Legend: N frames, H/W pixels, S audio samples.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence

import av
import numpy as np
import torch
import torchaudio
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


class DecodeTimeoutError(DecodeError):
    """A sample's decode that ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Decoding in this thread inside the block raises DecodeTimeoutError once `seconds` have passed
    (None: no limit). A thread-local deadline rather than a parameter, so that every loop of
    this module checks it without each signature carrying it; blocks may nest (the innermost
    deadline counts until it ends)."""
    outer = getattr(_local, "deadline", None), getattr(_local, "limit", None)
    _local.deadline = None if seconds is None else time.monotonic() + seconds
    _local.limit = seconds
    try:
        yield
    finally:
        _local.deadline, _local.limit = outer


def _on_time() -> None:
    deadline = getattr(_local, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise DecodeTimeoutError(f"decoding took over the time limit of {_local.limit:g} s")


def read_frames(
    container: av.container.InputContainer,
    times: Sequence[float],
    *,
    short_side: int | None = None,
    threads: int = 1,
) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB frames at `times` (seconds from the start), upright."""
    stream = container.streams.video[0]
    set_decoder_threads(stream, threads)
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


def set_decoder_threads(stream: av.video.stream.VideoStream, threads: int) -> None:
    """Decode with `threads` threads (PyAV's default is one per core: many decode workers on
    one machine would oversubscribe it)."""
    stream.codec_context.thread_count = threads
    stream.thread_type = "SLICE" if threads > 1 else "NONE"


def _decode_group(container, stream, times, group, chosen, offset) -> None:
    for index, frame in _picked(container, stream, times, group, offset):
        chosen[index] = frame


def _picked(container, stream, times, group, offset) -> Iterator[tuple[int, av.VideoFrame]]:
    """(index, frame) for each index of `group` (ascending times), in that order: the latest
    frame at or before its time (the first frame before it; the last one past the end). Decodes
    forward from a seek to the first time and holds only the frame before the current one."""
    first = times[group[0]]
    container.seek(int((first + offset) / stream.time_base), stream=stream, backward=True)
    previous, k = None, 0
    for frame in container.decode(stream):
        _on_time()
        if frame.time is None:
            continue
        t = frame.time - offset
        while k < len(group) and t > times[group[k]] + 1e-6:
            yield group[k], previous if previous is not None else frame
            k += 1
        previous = frame
        if k == len(group):
            return
    if previous is None:
        raise DecodeError(f"no video frame at or after {first:.2f} s")
    for index in group[k:]:  # past the end: hold the last frame
        yield index, previous


def iter_frames(
    container: av.container.InputContainer,
    times: Sequence[float],
    *,
    short_side: int | None = None,
) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 RGB frames at ascending `times`, one at a time, as `read_frames` gives
    them for times a second or less apart: a whole video's frames (`prepare`) pass through
    without being held together. Decodes in one pass from the first time; a generator, so
    times out of order raise ValueError at the first frame asked for."""
    if len(times) and np.any(np.diff(times) < 0):
        raise ValueError("iter_frames needs ascending times")
    if not len(times):
        return
    stream = container.streams.video[0]
    set_decoder_threads(stream, 1)
    offset = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
    last, rgb = None, None
    for _, frame in _picked(container, stream, times, range(len(times)), offset):
        if frame is not last:  # a frame held for several times is converted once
            last, rgb = frame, _to_rgb(frame, short_side)
        yield rgb


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
    """(S,) float32 mono in [-1, 1], S = round(seconds * sample_rate), zero-padded past the ends.

    Frames are decoded at the source rate, averaged to mono, and resampled once, vectorised:
    swresample through PyAV costs several times more (its per-frame filter graph and filter).
    """
    stream = container.streams.audio[0]
    offset = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
    want = round(seconds * sample_rate)
    seek_to = max(start - AUDIO_PREROLL, 0.0) + offset
    container.seek(int(seek_to / stream.time_base), stream=stream, backward=True)
    chunks: list[np.ndarray] = []
    first_time, rate, have = None, 0, 0
    for frame in container.decode(stream):
        _on_time()
        if first_time is None:
            first_time = (frame.time if frame.time is not None else offset) - offset
            rate = frame.sample_rate
        elif frame.sample_rate != rate:
            raise DecodeError(f"audio sample rate changes from {rate} to {frame.sample_rate} Hz")
        chunks.append(_mono(frame))
        have += chunks[-1].size
        # a little past the end, so the resampling filter sees real samples there
        if have >= round((start - first_time + seconds + POSTROLL) * rate):
            break
    if first_time is None:
        raise DecodeError("no audio frame")
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    first = round((start - first_time) * rate)
    rate = kernel_rate(rate, sample_rate)  # the same rate, or one within 0.2 % (see there)
    audio, skip = _aligned(audio, first, rate, sample_rate)
    return _fit(resample(audio, rate, sample_rate), skip, want)


MAX_PHASES = 1000  # output phases of one resampling period; every common rate needs at most 640
RATE_TOLERANCE = 0.002  # how far an odd rate may be taken for a nearby one


def kernel_rate(rate: int, target: int) -> int:
    """The source rate the resampling kernel is built for: `rate` itself when its period is
    short, else the nearest rate within 0.2 % whose period is. A rate prime to the target
    (8001 Hz to 16 kHz: 16,000 phases over an 8,001-sample period) builds a dense kernel of
    hundreds of MB in seconds; read as 8000 Hz instead, the sound is 0.0125 % slower, which no
    feature sees. The common rates (8 to 96 kHz, 11.025 and 22.05 kHz) are all kept exactly."""
    if target // math.gcd(rate, target) <= MAX_PHASES:
        return rate
    reach = max(1, int(rate * RATE_TOLERANCE))
    for distance in range(1, reach + 1):
        for near in (rate - distance, rate + distance):
            if near > 0 and target // math.gcd(near, target) <= MAX_PHASES:
                return near
    return rate  # a target with no short period nearby: exact, whatever it costs


def _aligned(audio: np.ndarray, first: int, rate: int, target: int) -> tuple[np.ndarray, int]:
    """The decoded samples cut so that the resampled grid starts on the span's first source
    sample, and the output samples to skip before it. Resampling from the decoded frame's start
    and skipping round(seconds * target) samples put the span up to half an output sample
    (31 us at 16 kHz) off the grid a whole-file decode has, which decorrelates the top octave.
    Cutting whole resampling periods (441 source samples = 160 output samples from 44.1 kHz)
    before `first` keeps the filter's context and lands the grid on `first` exactly."""
    if first <= 0 or rate == target:
        return audio, round(first * target / rate)
    gcd = math.gcd(rate, target)
    period, phases = rate // gcd, target // gcd
    keep = min(first // period, math.ceil(POSTROLL * rate / period))  # the filter's reach
    cut = first - keep * period
    return audio[cut:], keep * phases


POSTROLL = 0.01  # seconds decoded past a span's end: the resampling filter's reach
_FULL_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 2.0**63}


def _mono(frame: av.AudioFrame) -> np.ndarray:
    """One decoded frame as float32 mono at its own rate: the mean of its channels."""
    if frame.format.name == "fltp":  # AAC, Opus, Vorbis: read the planes in place
        planes = [np.frombuffer(plane, np.float32, frame.samples) for plane in frame.planes]
        if len(planes) == 1:
            return planes[0].copy()
        total = planes[0] + planes[1]  # ufuncs on views: np.mean costs ~10x more per frame
        for plane in planes[2:]:
            total += plane
        total *= np.float32(1 / len(planes))
        return total
    samples = frame.to_ndarray()
    if not frame.format.is_planar:  # interleaved: (1, n * channels)
        samples = samples.reshape(-1, len(frame.layout.channels)).T
    kind = frame.format.name.removesuffix("p")
    if kind in _FULL_SCALE:
        centre = 128.0 if kind == "u8" else 0.0
        samples = (samples.astype(np.float32) - centre) / _FULL_SCALE[kind]
    return samples.mean(axis=0, dtype=np.float32)


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """float32 mono from `rate` to `target` Hz: torchaudio's windowed-sinc resampling, exactly."""
    if rate == target or audio.size == 0:
        return audio.astype(np.float32, copy=False)
    return _Resampler.get(int(rate), int(target))(audio)


class _Resampler:
    """torchaudio's `Resample` without its wasted work. It computes every output phase as a dot
    product with a kernel as wide as a whole input period (441 samples from 44.1 to 16 kHz),
    though each phase's filter covers only a few dozen of them. Here the phases are split into
    groups and each group multiplies only the columns its filters touch: the same sums, about
    5x fewer operations."""

    GROUPS = 8

    def __init__(self, rate: int, target: int) -> None:
        module = torchaudio.transforms.Resample(rate, target)
        gcd = math.gcd(rate, target)
        self.period, self.phases = rate // gcd, target // gcd
        self.width = int(module.width)
        dense = module.kernel[:, 0, :].T.contiguous()  # (kernel length, phases)
        self.blocks: list[tuple[int, int, slice, torch.Tensor]] = []
        bounds = np.linspace(0, self.phases, min(self.GROUPS, self.phases) + 1).astype(int)
        for start, stop in itertools.pairwise(bounds):
            columns = dense[:, start:stop]
            used = torch.nonzero(columns.abs().sum(dim=1)).flatten()
            lo, hi = (int(used[0]), int(used[-1]) + 1) if len(used) else (0, 1)
            self.blocks.append((lo, hi, slice(start, stop), columns[lo:hi].contiguous()))
        self.reach = max(hi for _, hi, _, _ in self.blocks)  # input samples one period reads

    @classmethod
    @functools.lru_cache(maxsize=16)
    def get(cls, rate: int, target: int) -> _Resampler:
        return cls(rate, target)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        length = audio.size
        x = torch.nn.functional.pad(
            torch.from_numpy(np.ascontiguousarray(audio, np.float32)),
            (self.width, self.width + self.period),
        )
        count = (x.numel() - self.reach) // self.period + 1
        out = torch.empty(count, self.phases)
        for lo, hi, phases, block in self.blocks:
            frames = x[lo:].as_strided((count, hi - lo), (self.period, 1))
            out[:, phases] = frames @ block
        wanted = math.ceil(self.phases * length / self.period)
        return out.reshape(-1)[:wanted].numpy()


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


def _open_npy(handle, uri: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and data offset of the .npy file `uri`, open in `handle`. Headers are kept
    by (uri, size): parsing one costs about as much as reading a sample's audio."""
    key = (uri, handle.size())
    if key not in _NPY_HEADERS:
        version = np.lib.format.read_magic(handle)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(
            version, np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(handle)
        if len(_NPY_HEADERS) >= 4096:
            _NPY_HEADERS.clear()
        _NPY_HEADERS[key] = (shape, dtype, handle.tell())
    return _NPY_HEADERS[key]


_NPY_HEADERS: dict[tuple[str, int], tuple[tuple[int, ...], np.dtype, int]] = {}


def read_npy_audio(uri: str, start: float, seconds: float, *, sample_rate: int) -> np.ndarray:
    """Like `read_audio`, from a prepared int16 .npy at `sample_rate`, by a range read only;
    DecodeError (the file and the reason) for a missing or unreadable file, as for media."""
    fs, path = resolve(uri)
    want = round(seconds * sample_rate)
    skip = round(start * sample_rate)
    try:
        with fs.open_input_file(path) as handle:
            shape, dtype, base = _open_npy(handle, uri)
            total = shape[0]
            first = min(max(skip, 0), total)
            count = max(0, min(total, skip + want) - first)
            handle.seek(base + first * dtype.itemsize)
            raw = np.frombuffer(handle.read(count * dtype.itemsize), dtype=dtype)
    except (OSError, ValueError, IndexError) as exc:  # missing, cut short, not an array file
        raise DecodeError(f"{uri}: {type(exc).__name__}: {exc}") from exc
    audio = raw.astype(np.float32) / 32768.0
    return _fit(audio, min(skip, 0), want)


FRAMES_SUFFIX = re.compile(r"\.(\d+(?:\.\d+)?)fps\.frames\.npy$")
FRAME_RUN_GAP = 8  # needed frames closer than this are read in one range read


def frames_fps(uri: str) -> float | None:
    """The frame rate of a prepared frames file (`<stem>.<fps>fps.frames.npy`), else None."""
    match = FRAMES_SUFFIX.search(uri)
    return float(match.group(1)) if match else None


def read_npy_frames(uri: str, times: Sequence[float], *, fps: float) -> np.ndarray:
    """(N, H, W, 3) uint8 frames at `times` from a prepared (frames, H, W, 3) uint8 .npy stored
    at `fps`: the latest frame at or before each time, by range reads of the needed frames only."""
    fs, path = resolve(uri)
    with fs.open_input_file(path) as handle:
        shape, dtype, base = _open_npy(handle, uri)
        if len(shape) != 4 or shape[3] != 3 or dtype != np.uint8 or shape[0] == 0:
            raise DecodeError(f"not a prepared frames file: {dtype} array of shape {shape}")
        size = int(np.prod(shape[1:]))
        wanted = np.clip(np.floor(np.asarray(times) * fps + 1e-6).astype(int), 0, shape[0] - 1)
        unique = np.unique(wanted)
        runs = np.split(unique, np.flatnonzero(np.diff(unique) > FRAME_RUN_GAP) + 1)
        frames: dict[int, np.ndarray] = {}
        for run in runs:
            first, count = int(run[0]), int(run[-1] - run[0] + 1)
            handle.seek(base + first * size)
            raw = handle.read(count * size)
            if len(raw) != count * size:
                raise DecodeError(f"truncated frames file: frame {first + count - 1} is missing")
            block = np.frombuffer(raw, np.uint8).reshape(count, *shape[1:])
            frames |= {int(i): block[i - first] for i in run}
    return np.stack([frames[int(i)] for i in wanted])


def read_clip(
    uri: str,
    *,
    frame_times: Sequence[float] = (),
    audio_spans: Sequence[tuple[float, float]] = (),
    short_side: int | None = None,
    sample_rate: int = 16000,
    threads: int = 1,
    limit: float | None = None,
) -> tuple[np.ndarray | None, list[np.ndarray]]:
    """Frames at `frame_times` and audio over each (start, seconds) span, from one open of `uri`;
    DecodeTimeoutError past `limit` seconds (None: no limit)."""
    fps = frames_fps(uri)
    if fps is not None:  # a prepared frames copy: no container, no decoding
        if audio_spans:
            raise DecodeError(f"{uri}: a frames file holds no audio (read its .audio.npy)")
        try:
            return read_npy_frames(uri, frame_times, fps=fps), []
        except DecodeError as exc:
            raise DecodeError(f"{uri}: {exc}") from None
        except (OSError, ValueError) as exc:
            raise DecodeError(f"{uri}: {type(exc).__name__}: {exc}") from exc
    try:
        with time_limit(limit), open_media(uri) as container:
            frames = None
            if len(frame_times):
                if not container.streams.video:
                    raise DecodeError("no video stream")
                frames = read_frames(container, frame_times, short_side=short_side, threads=threads)
            if audio_spans and not container.streams.audio:
                raise DecodeError("no audio stream")
            return frames, _read_spans(container, audio_spans, sample_rate)
    except DecodeError as exc:  # DecodeTimeoutError stays one
        raise type(exc)(f"{uri}: {exc}") from None
    except (av.FFmpegError, OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, av.FFmpegError) else str(exc)
        raise DecodeError(f"{uri}: {type(exc).__name__}: {reason}") from exc
