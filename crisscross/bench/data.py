"""`crisscross bench data`: pretraining-sample throughput of each way of reading, side by side.

On a synthetic Kinetics-like corpus (10 s clips, 340x256, 25 fps H.264 with a keyframe every 2 s,
44.1 kHz stereo AAC), in one run, samples per second of:
  decode_limit  PyAV decoding exactly the packets the samples need, nothing else, one process;
  (decode_convert, a diagnostic: the same, plus RGB conversion and 16 kHz mono resampling, as
   read_clip does it: the gap to sample_fn is the augmentation and log-mel, one process);
  sample_fn     our full per-sample function, one process, as the pipeline runs it (by default
                augmentation on the training device: decode, crop, flip, draw the parameters);
  ray_data      the Ray Data pipeline with N decode actors;
  dataloader    a torch DataLoader with N workers over the same function;
  naive         decode the whole file, then slice, then the same per-sample work, one process;
  prepared      the full per-sample function on the prepared copy (H.264), one process;
  prepared_frames  the same on the prepared copy that stores decoded frames.
Diagnostics: sample_fn_augment_on_decode (the function with every augmentation in the decode
worker, `data.augment_on: decode`) and device_augment_cpu (samples/s of finishing sample_fn's
batches, `DeviceAugment`, on this CPU with one thread: the work the device takes over).
The single-process figures are measured interleaved, one sample of each in turn. Multi-worker
figures are timed from the first batch to the last (actor and worker start-up apart).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from crisscross.datasets.decode import AUDIO_PREROLL, _to_rgb, read_clip, set_decoder_threads
from crisscross.datasets.epochs import (
    DecodeResources,
    PretextTorchDataset,
    collate_skipping_failures,
    epoch_order,
    usable_rows,
)
from crisscross.datasets.manifest import build_manifest
from crisscross.datasets.samples import ClipSpec, DeviceAugment, PretextSample, sample_generators
from crisscross.datasets.sampling import Windows, frame_times, pretext_windows
from crisscross.datasets.synth import SynthSpec, synthesize

log = logging.getLogger(__name__)
GOALS = {
    "sample_vs_limit": 0.7,
    "ray_vs_dataloader": 0.9,
    "sample_vs_naive": 3.0,
    "prepared_vs_raw": 10.0,
    "prepared_frames_vs_raw": 10.0,  # the same goal, for the frames copy
}
RSS_GOAL_MIB = 1024.0


@dataclass(frozen=True)
class DataBenchSpec:
    clips: int = 8
    seconds: float = 10.0
    width: int = 340
    height: int = 256
    fps: float = 25.0
    keyframe_every: float = 2.0
    preset: str = "veryfast"  # CABAC, B-frames, deblocking: decodes like web video
    sample_rate: int = 44100
    channels: int = 2
    samples: int = 48  # per single-process figure
    naive_samples: int = 12
    workers: int = 2
    batch_size: int = 8
    rows_per_task: int = 8  # samples per Ray Data decode task (the pipeline's default)
    seed: int = 0


def run_data_benchmark(
    spec: DataBenchSpec, workdir: str | Path, *, clip: ClipSpec | None = None
) -> dict[str, Any]:
    """Make the corpus, measure every figure in one run, return the results (see module doc)."""
    import ray  # here, not at the top: the corpus maker below also serves Ray-free benchmarks

    clip = clip or ClipSpec()
    torch.set_num_threads(1)  # one process, one core: the single-process figures compare fairly
    workdir = Path(workdir)
    corpus, rows = kinetics_like_corpus(spec, workdir)
    if not ray.is_initialized():
        ray.init(num_cpus=max(spec.workers, 1), configure_logging=False, log_to_driver=False)
    copies = _prepared_copies(corpus, workdir, clip, spec.seed)
    sample = PretextSample(clip, seed=spec.seed)
    on_decode = PretextSample(replace(clip, augment_on="decode"), seed=spec.seed)
    finish = DeviceAugment(clip)
    batches = _device_batches(sample, rows, spec)
    figures = _side_by_side(
        {
            "decode_limit": (rows, spec.samples, lambda r, i: _decode_limit(r, i, clip, spec.seed)),
            "decode_convert": (
                rows,
                spec.samples,
                lambda r, i: _decode_convert(r, i, clip, spec.seed),
            ),
            "sample_fn": (rows, spec.samples, lambda r, i: sample(r, epoch=0, index=i)),
            "sample_fn_augment_on_decode": (
                rows,
                spec.samples,
                lambda r, i: on_decode(r, epoch=0, index=i),
            ),
            "naive": (rows, spec.naive_samples, lambda r, i: _naive(r, i, sample)),
            "prepared": (copies["h264"], spec.samples, lambda r, i: sample(r, epoch=0, index=i)),
            "prepared_frames": (
                copies["frames"],
                spec.samples,
                lambda r, i: sample(r, epoch=0, index=i),
            ),
        }
    )
    if batches:  # samples/s of finishing sample_fn's batches on this CPU, one thread
        figures["device_augment_cpu"] = _batch_rate(batches, finish)
    figures["ray_data"], peak_rss = _ray_data(corpus, spec, clip)
    figures["dataloader"] = _dataloader(rows, spec, sample)
    ratios = _ratios(figures)
    return {
        **figures,
        "ratios": ratios,
        "goals": GOALS | {"peak_rss_mib_per_worker": RSS_GOAL_MIB},
        "peak_rss_mib_per_worker": peak_rss,
        "corpus": asdict(spec),
        "clip": asdict(clip),
        "machine": _machine(),
    }


def _ratios(figures: dict[str, float]) -> dict[str, float]:
    """The goals' ratios (GOALS) of the measured figures."""
    return {
        "sample_vs_limit": figures["sample_fn"] / figures["decode_limit"],
        "ray_vs_dataloader": figures["ray_data"] / figures["dataloader"],
        "sample_vs_naive": figures["sample_fn"] / figures["naive"],
        "prepared_vs_raw": figures["prepared"] / figures["sample_fn"],
        "prepared_frames_vs_raw": figures["prepared_frames"] / figures["sample_fn"],
    }


def _prepared_copies(
    corpus: Path, workdir: Path, clip: ClipSpec, seed: int
) -> dict[str, list[dict[str, Any]]]:
    """Epoch 0's rows of the corpus' prepared copy in each video format."""
    from crisscross.datasets.prepare import VIDEO_FORMATS, PrepareSpec, prepare_dataset

    copies = {}
    for video_format in VIDEO_FORMATS:
        prepared = prepare_dataset(
            "kinetics400",
            str(corpus),
            str(workdir / f"prepared-{video_format}"),
            spec=PrepareSpec(short_side=clip.short_side, fps=clip.fps, video_format=video_format),
        )
        rows = usable_rows(prepared.manifest, clip)
        copies[video_format] = epoch_order(rows, seed=seed, epoch=0).to_pylist()
    return copies


def _machine() -> dict[str, Any]:
    import ray

    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "av": av.__version__,
    }


def _side_by_side(
    work: dict[str, tuple[list[dict[str, Any]], int, Callable[[dict[str, Any], int], Any]]],
) -> dict[str, float]:
    """Samples/s of each single-process reader, measured interleaved (one sample of each in
    turn), so that a noisy neighbour slows them all alike instead of whichever ran then."""
    spent = dict.fromkeys(work, 0.0)
    for rows, _, fn in work.values():
        fn(rows[0], 0)  # warm-up: imports, codec and filter-bank set-up
    for i in range(max(count for _, count, _ in work.values())):
        for name, (rows, count, fn) in work.items():
            if i < count:
                start = time.perf_counter()
                fn(rows[i % len(rows)], i)
                spent[name] += time.perf_counter() - start
    return {name: work[name][1] / spent[name] for name in work}


def _device_batches(
    sample: PretextSample, rows: list[dict[str, Any]], spec: DataBenchSpec
) -> list[dict[str, torch.Tensor]]:
    """A few batches of sample_fn's output (when it leaves augmentation to the device)."""
    if sample.spec.augment_on != "device":
        return []
    items = [sample(rows[i % len(rows)], epoch=0, index=i) for i in range(2 * spec.batch_size)]
    return [
        {k: torch.from_numpy(np.stack([item[k] for item in chunk])) for k in chunk[0]}
        for chunk in (items[: spec.batch_size], items[spec.batch_size :])
    ]


def _batch_rate(batches: list[dict[str, torch.Tensor]], finish: DeviceAugment) -> float:
    cpu = torch.device("cpu")
    finish(batches[0], cpu)  # warm-up
    start, count = time.perf_counter(), 0
    for _ in range(3):
        for batch in batches:
            finish(batch, cpu)
            count += len(batch["v1"])
    return count / (time.perf_counter() - start)


def kinetics_like_corpus(spec: DataBenchSpec, workdir: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The synthetic corpus `spec` describes, under `workdir`/corpus (made once, then reused),
    and its usable rows in epoch 0's order."""
    root = workdir / "corpus"
    synth = SynthSpec(
        classes=2,
        per_class=max(1, spec.clips // 2),
        seconds=spec.seconds,
        seed=spec.seed,
        width=spec.width,
        height=spec.height,
        fps=spec.fps,
        sample_rate=spec.sample_rate,
        channels=spec.channels,
        keyframe_every=spec.keyframe_every,
        preset=spec.preset,
        content="style",  # textured clips: the codec work of real video, not learnability
    )
    if not (root / "annotations").exists():
        synthesize("kinetics400", root, synth)
    manifest = build_manifest("kinetics400", str(root)).manifest
    rows = epoch_order(usable_rows(manifest, ClipSpec()), seed=spec.seed, epoch=0).to_pylist()
    if not rows:
        raise RuntimeError(f"{root}: the benchmark corpus has no usable clip")
    return root, rows


def _windows(row: dict[str, Any], index: int, clip: ClipSpec, seed: int) -> Windows:
    rng, _ = sample_generators(seed, 0, index)
    return pretext_windows(
        clip.sampling,
        float(row["duration"]),
        audio_seconds=clip.audio_seconds,
        video_seconds=clip.video_seconds,
        rng=rng,
        short_videos=clip.short_videos,
    )


def _decode_limit(row: dict[str, Any], index: int, clip: ClipSpec, seed: int) -> None:
    """Decode exactly the packets the sample's windows need: no conversion, no resampling."""
    w = _windows(row, index, clip, seed)
    video_end = max(w.v1, w.v2) + clip.video_seconds
    audio_end = max(w.a1, w.a2) + clip.audio_seconds
    with av.open(row["path"]) as container:
        stream = container.streams.video[0]
        set_decoder_threads(stream, clip.decode_threads)  # as ours: one core
        container.seek(int(min(w.v1, w.v2) / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= video_end:
                break
        stream = container.streams.audio[0]
        start = max(min(w.a1, w.a2) - AUDIO_PREROLL, 0.0)
        container.seek(int(start / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            if frame.time is not None and frame.time >= audio_end:
                break


def _decode_convert(row: dict[str, Any], index: int, clip: ClipSpec, seed: int) -> None:
    """The sample's frames in RGB at decode size and its audio at 16 kHz mono, not augmented."""
    w = _windows(row, index, clip, seed)
    times = frame_times(w.v1, clip.frames, clip.fps) + frame_times(w.v2, clip.frames, clip.fps)
    read_clip(
        row["path"],
        frame_times=times,
        audio_spans=[(w.a1, clip.audio_seconds), (w.a2, clip.audio_seconds)],
        short_side=clip.short_side,
        sample_rate=clip.sample_rate,
    )


def _naive(row: dict[str, Any], index: int, sample: PretextSample) -> dict[str, np.ndarray]:
    """Decode the whole file (every frame to RGB, all audio to 16 kHz), slice, then the same
    per-sample work as sample_fn on the slices."""
    clip = sample.spec
    with av.open(row["path"]) as container:
        set_decoder_threads(container.streams.video[0], clip.decode_threads)
        frames = [(f.time, _to_rgb(f, clip.short_side)) for f in container.decode(video=0)]
        container.seek(0)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=clip.sample_rate)
        chunks = [
            o.to_ndarray().reshape(-1)
            for f in container.decode(audio=0)
            for o in resampler.resample(f)
        ]
    wave = np.concatenate(chunks)
    times = np.array([t for t, _ in frames])
    w = _windows(row, index, clip, sample.seed)
    _, g = sample_generators(sample.seed, 0, index)
    picks = [
        max(int(np.searchsorted(times, t + 1e-6)) - 1, 0)
        for start in (w.v1, w.v2)
        for t in frame_times(start, clip.frames, clip.fps)
    ]
    length = round(clip.audio_seconds * clip.sample_rate)
    waves = [
        np.ascontiguousarray(wave[round(s * clip.sample_rate) :][:length]) for s in (w.a1, w.a2)
    ]
    return sample.views(np.stack([frames[i][1] for i in picks]), waves, g)


def _ray_data(corpus: Path, spec: DataBenchSpec, clip: ClipSpec) -> tuple[float, float]:
    from crisscross.datasets.pipeline import FailureLogRef, iter_batches, pretext_epoch

    manifest = build_manifest("kinetics400", str(corpus)).manifest
    repeats = max(
        1, -(-3 * spec.samples * spec.workers // max(1, usable_rows(manifest, clip).num_rows))
    )
    failure_log = FailureLogRef.create()
    data = pretext_epoch(
        manifest,
        spec=clip,
        epoch=0,
        seed=spec.seed,
        repeats=repeats,
        resources=DecodeResources(workers=spec.workers, rows_per_task=spec.rows_per_task),
        failure_log=failure_log,
    )
    rate = _steady_rate(iter_batches(data, spec.batch_size, drop_last=False))
    peaks = failure_log.peak_rss_mib()
    return rate, max(peaks.values()) if peaks else float("nan")


def _dataloader(rows: list[dict[str, Any]], spec: DataBenchSpec, sample: PretextSample) -> float:
    import pyarrow as pa

    repeats = max(1, -(-3 * spec.samples * spec.workers // len(rows)))
    table = pa.Table.from_pylist(rows)
    ordered = epoch_order(
        table.drop_columns(["index", "epoch"]), seed=spec.seed, epoch=0, repeats=repeats
    )
    loader = torch.utils.data.DataLoader(
        PretextTorchDataset(ordered, sample),
        batch_size=spec.batch_size,
        num_workers=spec.workers,
        collate_fn=collate_skipping_failures,
        worker_init_fn=lambda _: torch.set_num_threads(1),
    )
    return _steady_rate(iter(loader))


def _steady_rate(batches) -> float:
    """Samples per second from the first batch's arrival to the last's."""
    next(batches)
    start, count = time.perf_counter(), 0
    for batch in batches:
        count += batch["v1"].shape[0]
    if not count:
        raise RuntimeError("one batch only: too few samples to time; raise the sample count")
    return count / (time.perf_counter() - start)


def report(results: dict[str, Any]) -> str:
    """A readable table of the figures and the ratios against their goals."""
    lines = [f"{'reader':<28}{'samples/s':>12}"]
    for name in (
        "decode_limit",
        "decode_convert",
        "sample_fn",
        "ray_data",
        "dataloader",
        "naive",
        "prepared",
        "prepared_frames",
        "sample_fn_augment_on_decode",
        "device_augment_cpu",
    ):
        if name in results:
            lines.append(f"{name:<28}{results[name]:>12.1f}")
    lines.append("")
    lines.append(f"{'ratio':<30}{'measured':>10}{'goal':>8}  met")
    for name, value in results["ratios"].items():
        goal = GOALS[name]
        lines.append(f"{name:<30}{value:>10.2f}{goal:>8.1f}  {'yes' if value >= goal else 'NO'}")
    rss = results["peak_rss_mib_per_worker"]
    met = "yes" if rss <= RSS_GOAL_MIB else "NO"
    lines.append(f"{'peak RSS/worker MiB':<30}{rss:>10.0f}{RSS_GOAL_MIB:>8.0f}  {met}  (at most)")
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(results, indent=2) + "\n")
