"""Probe one media file: what it holds (streams, duration, rate, rotation) and whether it decodes.

`judge` turns those facts into a status against a dataset's requirements, so a cached probe can be
judged again under other requirements without reopening the file. `duration` is the longest of the
container's and the streams' durations; `video_seconds` and `audio_seconds` say where each stream
ends, and `usable_seconds` is how long every stream a dataset needs lasts: a window must lie inside
all of them (the reference keeps windows inside the shorter stream). Frames larger than
MAX_PIXELS are `unreadable`: a few KB of such a file cost gigabytes to decode. So is a file
whose duration cannot be right: over MAX_SECONDS, or fewer than MIN_BYTES_PER_SECOND of file a
second of it (a bogus header: windows drawn in time the file does not hold all fail to decode).

A header can promise more than the file holds (a truncated AVI keeps its frame count; a damaged
mp4 demuxes whole and stops decoding half-way). `verify` reads further: "demux" reads every
packet and finds how far each stream really goes; "decode" also decodes every packet. A file
that holds less than VERIFY_SHARE of what its header says, or stops decoding, is `unreadable`,
with the frames (or seconds) found against those claimed.
"""

from __future__ import annotations

import contextlib
from typing import Any

import av

from crisscross.datasets.fs import resolve
from crisscross.datasets.layouts.base import Requirements

# 4096 x 4096, 16.8 Mpx: every 4K and DCI-4K frame fits; a decoded frame above it is over 50 MB
# in RGB and a sample decodes several (8192 x 8192: 200 MB each)
MAX_PIXELS = 4096 * 4096
# a day: longer than any video of the datasets we know (AudioSet, Kinetics, VGGSound: 10 s)
MAX_SECONDS = 24 * 3600.0
# 8 kb/s mono AAC alone is 1,000 B/s, a still picture's H.264 a few hundred: 64 is no real file
MIN_BYTES_PER_SECOND = 64
VERIFY = ("header", "demux", "decode")
VERIFY_SHARE = 0.9  # a stream holding less than this share of what its header claims is cut

FACTS: dict[str, Any] = {  # every probed column and its value when unknown
    "duration": None,
    "video_seconds": None,
    "audio_seconds": None,
    "video_codec": None,
    "width": None,
    "height": None,
    "fps": None,
    "frames": None,
    "rotation": None,
    "has_video": False,
    "has_audio": False,
    "audio_codec": None,
    "sample_rate": None,
    "channels": None,
    "error": None,
}


@contextlib.contextmanager
def open_media(uri: str):
    """av.open on a local path, or on a seekable range-reading file of a filesystem URI."""
    if "://" in uri and not uri.startswith("file://"):
        fs, path = resolve(uri)
        with fs.open_input_file(path) as handle, av.open(handle) as container:
            yield container
    else:
        with av.open(uri.removeprefix("file://")) as container:
            yield container


def probe(uri: str, size: int | None = None, verify: str = "header") -> dict[str, Any]:
    """Media facts of a file (keys of FACTS); `error` says why it could not be read, if so.
    `verify`: how far to read (VERIFY; the module's docstring)."""
    if verify not in VERIFY:
        raise ValueError(f"verify is one of {', '.join(VERIFY)}, not {verify!r}")
    facts = dict(FACTS)
    if size == 0:
        facts["error"] = "empty file (0 bytes)"
        return facts
    try:
        with open_media(uri) as container:
            _read_streams(container, facts)
            if verify != "header" and not _oversized(facts):
                container.seek(0)
                facts["error"] = _verified(container, facts, decode=verify == "decode")
    except av.FFmpegError as exc:  # its str() repeats the errno and the path
        facts["error"] = f"{type(exc).__name__}: {exc.strerror}"
    except (OSError, ValueError, IndexError) as exc:
        facts["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    return facts


def _read_streams(container: av.container.InputContainer, facts: dict[str, Any]) -> None:
    durations = []
    if container.duration:
        durations.append(container.duration / av.time_base)
    if container.streams.video:
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        rate = stream.average_rate or stream.guessed_rate
        facts |= {
            "has_video": True,
            "video_codec": stream.codec_context.name,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "fps": float(rate) if rate else None,
        }
        facts["video_seconds"] = _stream_end(stream)
        if not _oversized(facts):  # an oversized frame is judged without decoding one
            first = next(container.decode(stream), None)  # proves the stream decodes
            if first is None:
                raise ValueError("the video stream has no decodable frame")
            facts["rotation"] = int(first.rotation or 0)
            container.seek(0)
    if container.streams.audio:
        stream = container.streams.audio[0]
        facts |= {
            "has_audio": True,
            "audio_codec": stream.codec_context.name,
            "sample_rate": stream.codec_context.sample_rate,
            "channels": stream.codec_context.layout.nb_channels,
        }
        facts["audio_seconds"] = _stream_end(stream)
        if next(container.decode(stream), None) is None:
            raise ValueError("the audio stream has no decodable frame")
    durations += [facts[k] for k in ("video_seconds", "audio_seconds") if facts[k] is not None]
    facts["duration"] = max(durations) if durations else None
    if facts["fps"] and facts["duration"]:
        frames = container.streams.video[0].frames
        facts["frames"] = int(frames) if frames else round(facts["duration"] * facts["fps"])


def _verified(container: av.container.InputContainer, facts: dict[str, Any], *, decode: bool):
    """None when every packet demuxes (and decodes) and each stream reaches VERIFY_SHARE of its
    claimed end (and the video of its claimed frames); else why not, with the counts."""
    streams = [s for s in (*container.streams.video[:1], *container.streams.audio[:1])]
    ends = {s.index: 0.0 for s in streams}
    frames = 0
    kind = "decoding" if decode else "demuxing"
    try:
        for packet in container.demux(streams):
            if packet.size == 0:
                continue
            stream = packet.stream
            if packet.pts is not None and stream.time_base:
                end = (packet.pts + (packet.duration or 0)) * stream.time_base
                ends[stream.index] = max(ends[stream.index], float(end))
            if stream.type == "video":
                frames += 1
            if decode:
                packet.decode()
    except (av.FFmpegError, ValueError) as exc:
        claimed = facts["frames"]
        return f"corrupt: {kind} failed after {frames} of {claimed} video frames ({exc})"[:300]
    problems = []
    claimed = facts["frames"]
    if container.streams.video and claimed and frames < VERIFY_SHARE * claimed:
        problems.append(f"{frames} of {claimed} video frames")
    for stream in streams:
        said = facts[f"{stream.type}_seconds"] or facts["duration"]
        start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        found = ends[stream.index] - max(start, 0.0)
        if said and found < VERIFY_SHARE * (said - max(start, 0.0)):
            problems.append(f"{stream.type} to {found:.2f} s of {said:.2f} s")
    return f"truncated: {kind} found {', '.join(problems)}" if problems else None


def _oversized(facts: dict[str, Any]) -> str:
    """Why the video's frames are over MAX_PIXELS, or "" when they are not (or unknown)."""
    width, height = facts.get("width") or 0, facts.get("height") or 0
    if width * height <= MAX_PIXELS:
        return ""
    return (
        f"video frames of {width}x{height} ({width * height / 1e6:.1f} Mpx) are larger than "
        f"the cap of {MAX_PIXELS / 1e6:.1f} Mpx (4096x4096)"
    )


def _implausible_duration(facts: dict[str, Any]) -> str:
    """Why the file's duration cannot be right, or "" (`size_bytes` when the facts have it)."""
    seconds = facts.get("duration") or 0.0
    if seconds > MAX_SECONDS:
        return (
            f"a duration of {seconds / 3600:.1f} h is over the cap of {MAX_SECONDS / 3600:.0f} h "
            "(a bogus header?)"
        )
    size = facts.get("size_bytes")
    if size and seconds and size / seconds < MIN_BYTES_PER_SECOND:
        return (
            f"{size} bytes cannot hold the {seconds:.0f} s its header claims "
            f"({size / seconds:.1f} bytes a second, under {MIN_BYTES_PER_SECOND}): a bogus header"
        )
    return ""


def _stream_end(stream: av.stream.Stream) -> float | None:
    """Where a stream ends on the file's timeline (its start plus its duration), if it says."""
    if not (stream.duration and stream.time_base):
        return None
    start = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
    return max(start, 0.0) + float(stream.duration * stream.time_base)


def usable_seconds(facts: dict[str, Any], needs: Requirements) -> float | None:
    """Seconds that every stream the dataset needs covers: the shorter of video and audio for
    pretraining; a stream without a duration of its own counts as the file's."""
    ends = [
        facts[f"{kind}_seconds"] if facts.get(f"{kind}_seconds") is not None else facts["duration"]
        for kind, wanted in (("video", needs.video), ("audio", needs.audio))
        if wanted and facts[f"has_{kind}"]
    ]
    ends = [end for end in ends if end is not None]
    return min(ends) if ends else facts["duration"]


def judge(facts: dict[str, Any], needs: Requirements) -> tuple[str, str]:
    """(status, reason) of probed facts for a dataset with these requirements."""
    if facts["error"]:
        return "unreadable", facts["error"]
    if needs.video and not facts["has_video"]:
        return "unreadable", "no video stream"
    if needs.video and _oversized(facts):
        return "unreadable", _oversized(facts)
    if _implausible_duration(facts):
        return "unreadable", _implausible_duration(facts)
    problems = []
    duration = usable_seconds(facts, needs) or 0.0
    if duration < needs.min_seconds:
        problems.append(
            ("too_short", f"{duration:.2f} s, needs at least {needs.min_seconds:.2f} s")
        )
    if needs.audio and not facts["has_audio"]:
        problems.append(("no_audio", "no audio stream"))
    if not problems:
        return "ok", ""
    return problems[0][0], "; ".join(reason for _, reason in problems)
