"""`crisscross prepare`: a one-time copy of a dataset that is cheap to decode.

Videos are re-encoded upright at a small short side, at the sampling frame rate, with a keyframe
every `keyframe_every` seconds (so a seek lands near the window), or with `video_format="frames"`
stored as the decoded frames themselves (uint8 .npy, read by range reads with no decoding: the
fastest reading, at many times the disk space of the H.264 copy); audio is stored as 16 kHz mono
int16 .npy, read by a range read with no decoding. A video's frames are decoded in one pass and
written one at a time (to the encoder, or after the .npy header), so a long video is never whole
in memory. Files are written under temporary names and renamed when complete, so an interrupted
run resumes where it stopped. Work runs as Ray tasks.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import ray
from tqdm import tqdm

from crisscross.datasets.decode import iter_frames, read_audio
from crisscross.datasets.fs import NO_SPACE, naming_target
from crisscross.datasets.manifest import Manifest, build_manifest, write_manifest
from crisscross.datasets.media import write_av
from crisscross.datasets.probe import open_media, probe
from crisscross.datasets.ray_map import chunked_on_ray

log = logging.getLogger(__name__)


VIDEO_FORMATS = ("h264", "frames")


@dataclass(frozen=True)
class PrepareSpec:
    short_side: int = 128
    fps: float = 16.0
    keyframe_every: float = 0.5
    sample_rate: int = 16000
    video_format: str = "h264"  # or "frames": decoded uint8 frames, no decoding when read

    def __post_init__(self) -> None:
        if self.video_format not in VIDEO_FORMATS:
            raise ValueError(
                f"video_format must be one of {VIDEO_FORMATS}, not {self.video_format!r}"
            )


@dataclass(frozen=True)
class PrepareReport:
    manifest: Manifest
    path: str
    done: int
    skipped: int
    failed: int
    seconds: float


def prepared_paths(out: str, rel: str, spec: PrepareSpec = PrepareSpec()) -> tuple[str, str]:
    """(video, audio) paths of a file's prepared copy."""
    stem = str(Path(out) / rel).rsplit(".", 1)[0]
    video = f"{stem}.{spec.fps:g}fps.frames.npy" if spec.video_format == "frames" else f"{stem}.mp4"
    return video, f"{stem}.audio.npy"


def prepare_file(row: dict[str, Any], out: str, spec: PrepareSpec) -> dict[str, Any]:
    """Prepare one manifest row; returns its prepared copy's row (unreadable on failure)."""
    video_out, audio_out = prepared_paths(out, row["rel"], spec)
    new = dict(row) | {
        "source_path": row["path"],
        "path": video_out if row["has_video"] else row["path"],
    }
    try:
        if row["has_video"] and not os.path.exists(video_out):
            store = _store_frames if spec.video_format == "frames" else _transcode_video
            store(row, video_out, spec)
        if row["has_audio"]:
            if not os.path.exists(audio_out):
                _store_audio(row, audio_out, spec)
            new["audio_path"] = audio_out
    except (av.FFmpegError, OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            raise  # the disk, not the file: the command stops (prepare_dataset)
        return new | {
            "status": "unreadable",
            "reason": f"prepare: {type(exc).__name__}: {exc}"[:300],
        }
    if row["has_video"] and spec.video_format == "frames":
        frames, height, width = _frames_shape(video_out)
        new |= {
            "width": width,
            "height": height,
            "fps": spec.fps,
            "frames": frames,
            "video_codec": "rawvideo (uint8 .npy)",
            "rotation": 0,
        }
    elif row["has_video"]:
        facts = probe(video_out)
        new |= {
            k: facts[k] for k in ("width", "height", "fps", "frames", "video_codec", "rotation")
        }
    return new


def _frames_shape(path: str) -> tuple[int, int, int]:
    shape = np.load(path, mmap_mode="r").shape  # reads the header only
    return int(shape[0]), int(shape[1]), int(shape[2])


def _transcode_video(row: dict[str, Any], target: str, spec: PrepareSpec) -> None:
    with _source_frames(row, spec) as (_, frames):
        _atomic(
            target,
            lambda tmp: write_av(
                tmp, map(_even, frames), fps=spec.fps, keyframe_every=spec.keyframe_every
            ),
        )


def _store_frames(row: dict[str, Any], target: str, spec: PrepareSpec) -> None:
    with _source_frames(row, spec) as (count, frames):
        _atomic(target, lambda tmp: _save_npy(tmp, frames, count))


@contextlib.contextmanager
def _source_frames(row: dict[str, Any], spec: PrepareSpec) -> Iterator[tuple[int, Iterator]]:
    """(count, frames): the source's frames on the `spec.fps` grid at its short side, decoded in
    one pass and handed on one at a time (a long video is never whole in memory)."""
    times = np.arange(0.0, float(row["duration"]), 1.0 / spec.fps)
    with open_media(row["path"]) as container:
        frames = iter_frames(container, times, short_side=spec.short_side)
        with contextlib.closing(frames):
            yield len(times), frames


def _save_npy(path: str, frames: Iterator[np.ndarray], count: int) -> None:
    """`count` frames of one size as one uint8 .npy (N, H, W, 3), written frame by frame: the
    header first (its shape from the first frame), then each frame's bytes."""
    first = next(frames, None)
    if first is None:
        raise ValueError("no video frame to store")
    shape = (count, *first.shape)
    with open(path, "wb") as handle:
        header = {"descr": "|u1", "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(handle, header)
        written = 0
        for index, rgb in enumerate(itertools.chain([first], frames)):
            if rgb.shape != first.shape:
                raise ValueError(f"frame {index} is {rgb.shape}, the first {first.shape}")
            handle.write(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
            written += 1
    if written != count:
        raise ValueError(f"{written} frames decoded for the {count} the header holds")


def _store_audio(row: dict[str, Any], target: str, spec: PrepareSpec) -> None:
    with open_media(row["path"]) as container:
        wave = read_audio(container, 0.0, float(row["duration"]), sample_rate=spec.sample_rate)
    # the readers divide by 32768: round to the nearest step of that scale, not truncate
    pcm = np.clip(np.rint(wave * 32768.0), -32768, 32767).astype(np.int16)

    def save(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, pcm)

    _atomic(target, save)


def _even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides."""
    return frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2]


def _atomic(target: str, write) -> None:
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    suffix = Path(target).name.split(".", 1)[1]
    tmp = f"{target}.partial.{os.getpid()}.{suffix}"
    try:
        write(tmp)
        os.replace(tmp, target)
    except OSError as exc:
        if named := naming_target(exc, tmp, target):
            raise named from exc
        raise
    finally:
        Path(tmp).unlink(missing_ok=True)


def _prepare_chunk(rows: list[dict[str, Any]], out: str, spec: PrepareSpec) -> list[dict[str, Any]]:
    """One Ray task: `prepare_file` of each row, in order."""
    return [prepare_file(row, out, spec) for row in rows]


def prepare_dataset(
    dataset: str,
    root: str,
    out: str,
    *,
    spec: PrepareSpec = PrepareSpec(),
    progress: bool = False,
    **manifest_options: Any,
) -> PrepareReport:
    """Prepare every usable file of `dataset` at `root` into `out`; resumable (files already
    there are kept), as Ray tasks (two per CPU in flight). `progress`: a bar on stderr with
    files/s, the ETA and the counts per status so far."""
    start = time.perf_counter()
    source = build_manifest(dataset, root, progress=progress, **manifest_options).manifest
    rows = source.table.to_pylist()
    todo = [row for row in rows if row["status"] == "ok"]
    skipped = sum(all(os.path.exists(p) for p in _wanted(row, out, spec)) for row in todo)
    if spec.video_format == "frames":
        _check_space(out, frames_bytes(todo, spec))
    if not ray.is_initialized():
        ray.init(configure_logging=False, log_to_driver=False)
    results: dict[str, dict[str, Any]] = {}
    counts: Counter[str] = Counter()
    bar = tqdm(total=len(todo), unit="file", desc="preparing", disable=not progress,
               dynamic_ncols=True, smoothing=0.05)  # fmt: skip
    try:
        for _, result in _on_ray(todo, out, spec):
            results[result["rel"]] = result
            counts[result["status"]] += 1
            bar.update(1)
            bar.set_postfix_str(
                " ".join(f"{k} {n}" for k, n in counts.most_common()), refresh=False
            )
    finally:
        bar.close()
    prepared_rows = [results.get(row["rel"], row) for row in rows]
    table = pa.Table.from_pylist(prepared_rows, schema=source.table.schema)
    manifest = Manifest(table, dataset, out, source.classes, source.min_seconds)
    path = str(Path(out) / f"crisscross_manifest_{dataset}.parquet")
    write_manifest(manifest, path)
    failed = sum(r["status"] != "ok" for r in results.values())
    return PrepareReport(
        manifest, path, len(todo) - skipped - failed, skipped, failed, time.perf_counter() - start
    )


def _on_ray(todo: list[dict[str, Any]], out: str, spec: PrepareSpec) -> Iterator[tuple]:
    """chunked_on_ray of prepare_file over `todo`; a full disk in a task is raised here as
    the OSError it was (naming the file), not as Ray's wrapper of it."""
    try:
        yield from chunked_on_ray(_prepare_chunk, todo, chunk=1, args=(out, spec))
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, OSError) and cause.errno in NO_SPACE:
            raise OSError(cause.errno, os.strerror(cause.errno), cause.filename) from None
        raise


class NotEnoughSpaceError(OSError):
    """The prepared copy would not fit on the disk holding the output folder."""


def frames_bytes(rows: list[dict[str, Any]], spec: PrepareSpec) -> int:
    """Disk space of the frames copy of `rows`: frames x height x width x 3 bytes each."""
    total = 0
    for row in rows:
        if row.get("has_video") and row.get("width") and row.get("height"):
            small, large = sorted((int(row["width"]), int(row["height"])))
            scale = spec.short_side / small
            pixels = spec.short_side * round(large * scale)
            total += int(np.ceil(float(row["duration"]) * spec.fps)) * pixels * 3
    return total


def _check_space(out: str, needed: int) -> None:
    folder = Path(out)
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise NotEnoughSpaceError(
            f"{out}: the frames copy needs about {needed / 2**30:.1f} GiB and {folder} has "
            f"{free / 2**30:.1f} GiB free; free some space, choose another --out, or use "
            "--video-format h264 (many times smaller, slower to read)"
        )


def _wanted(row: dict[str, Any], out: str, spec: PrepareSpec) -> list[str]:
    video, audio = prepared_paths(out, row["rel"], spec)
    return ([video] if row["has_video"] else []) + ([audio] if row["has_audio"] else [])
