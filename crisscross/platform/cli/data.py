"""Data commands: `synth`, `manifest` and `prepare` (`bench data` is in crisscross/bench/cli.py).

The data modules (PyAV, Ray, torch) are imported inside the commands, so that `--help` starts
fast; the choices they own are read when a command needs them (LazyChoice).
"""

from __future__ import annotations

import os
import time

import click

from crisscross.platform.cli.common import BadInput, LazyChoice, raise_if_no_space


def _layouts() -> list[str]:
    from crisscross.datasets.layouts import LAYOUTS

    return LAYOUTS.names()


def _contents() -> tuple[str, ...]:
    from crisscross.datasets.synth import CONTENTS

    return CONTENTS


def _video_formats() -> tuple[str, ...]:
    from crisscross.datasets.prepare import VIDEO_FORMATS

    return VIDEO_FORMATS


DATASET = LazyChoice(_layouts)


@click.command()
@click.argument("dataset", type=DATASET)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--classes", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--per-class", default=6, show_default=True, type=click.IntRange(min=1))
@click.option("--seconds", type=click.FloatRange(min=0.1), help="Clip length [4; ESC-50: 5].")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--content",
    type=LazyChoice(_contents),
    default="motion",
    show_default=True,
    help="motion: only the motion and the sound in step with it carry the class (at most 4 "
    "classes; random features score near chance); style: each class has its own look and sound.",
)
def synth(
    dataset: str,
    out: str,
    classes: int,
    per_class: int,
    seconds: float | None,
    seed: int,
    content: str,
) -> None:
    """Write a small synthetic DATASET of real encoded files in its on-disk layout under OUT."""
    from crisscross.datasets.synth import SynthSpec, synthesize

    seconds = seconds or (5.0 if dataset == "esc50" else 4.0)
    start = time.perf_counter()
    try:
        spec = SynthSpec(
            classes=classes, per_class=per_class, seconds=seconds, seed=seed, content=content
        )
        count = synthesize(dataset, out, spec)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    click.echo(f"{out}: {count} {dataset} files in {time.perf_counter() - start:.1f} s")


@click.command()
@click.argument("dataset", type=DATASET)
@click.option("--root", required=True, help="Dataset root: a folder or a filesystem URI.")
@click.option("--out", help="Manifest file [ROOT/crisscross_manifest_DATASET.parquet].")
@click.option("--min-seconds", type=click.FloatRange(min=0), help="Shortest usable file.")
@click.option("--classes-file", type=click.Path(dir_okay=False), help="Kinetics-Sound classes.")
@click.option("--workers", type=click.IntRange(min=1), help="Parallel probes (local threads).")
@click.option(
    "--on",
    "place",
    type=click.Choice(["auto", "local", "ray"]),
    default="auto",
    show_default=True,
    help="Where the probes run: ray (tasks on $RAY_ADDRESS's cluster, or a local Ray), local "
    "(threads here); auto is ray when RAY_ADDRESS is set.",
)
@click.option(
    "--verify",
    type=click.Choice(["header", "demux", "decode"]),
    default="header",
    show_default=True,
    help="How far to read each file: its header; every packet (finds truncated files, about "
    "2x a header probe); every packet decoded (finds corrupt ones, about 20x).",
)
def manifest(
    dataset: str,
    root: str,
    out: str | None,
    min_seconds: float | None,
    classes_file: str | None,
    workers: int | None,
    place: str,
    verify: str,
) -> None:
    """Probe every file of DATASET under ROOT and write its manifest (Parquet).

    Files whose size and modification time did not change keep their earlier probe. A bar on
    stderr shows files/s, the ETA and the counts per status; probes are saved as they come in
    OUT.parts/, so the same command after an interruption probes only the rest. On a cluster
    (RAY_ADDRESS set) the probes are Ray tasks; every node must reach ROOT.
    """
    from crisscross.datasets.layouts import LayoutError
    from crisscross.datasets.manifest import build_manifest, summary

    start = time.perf_counter()
    on = "ray" if place == "ray" or (place == "auto" and os.environ.get("RAY_ADDRESS")) else "local"
    if on == "ray":
        from crisscross.platform.pretrain.job import announce_ray

        local = announce_ray(click.echo)
        click.echo(f"probing as Ray tasks on {'a local Ray' if local else 'the cluster'}")
    try:
        report = build_manifest(
            dataset,
            root,
            out=out,
            min_seconds=min_seconds,
            classes_file=classes_file,
            workers=workers,
            progress=True,
            on=on,
            verify=verify,
        )
    except (LayoutError, FileNotFoundError, NotADirectoryError) as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:  # parts written before it are kept: a rerun goes on from them
        raise_if_no_space(exc)
        raise
    for note in report.notes:
        click.echo(f"note: {note}")
    click.echo(summary(report.manifest))
    click.echo(
        f"{report.path}: {report.manifest.table.num_rows} files ({report.probed} probed, "
        f"{report.reused} unchanged) in {time.perf_counter() - start:.1f} s"
    )


@click.command()
@click.argument("dataset", type=DATASET)
@click.option("--root", required=True, help="Dataset root: a folder or a filesystem URI.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--short-side", default=128, show_default=True, type=click.IntRange(min=16))
@click.option("--fps", default=16.0, show_default=True, type=click.FloatRange(min=1))
@click.option("--keyframe-every", default=0.5, show_default=True, type=click.FloatRange(min=0.04))
@click.option(
    "--video-format",
    type=LazyChoice(_video_formats),
    default="h264",
    show_default=True,
    help="h264: small files to decode; frames: decoded uint8 frames, no decoding when read "
    "(fastest; 10 MB per 10 s at short side 128, many times the h264 copy).",
)
@click.option("--min-seconds", type=click.FloatRange(min=0), help="Shortest usable file.")
@click.option("--classes-file", type=click.Path(dir_okay=False), help="Kinetics-Sound classes.")
def prepare(
    dataset: str,
    root: str,
    out: str,
    short_side: int,
    fps: float,
    keyframe_every: float,
    video_format: str,
    min_seconds: float | None,
    classes_file: str | None,
) -> None:
    """Write a copy of DATASET that is cheap to decode, and its manifest, under OUT.

    Videos: upright, SHORT_SIDE pixels, FPS frames per second, as H.264 with a keyframe every
    KEYFRAME_EVERY seconds or as decoded frames (--video-format frames); audio: 16 kHz mono
    int16 .npy. Runs as Ray tasks; run it again to resume.
    """
    from crisscross.datasets.layouts import LayoutError
    from crisscross.datasets.manifest import summary
    from crisscross.datasets.prepare import NotEnoughSpaceError, PrepareSpec, prepare_dataset

    spec = PrepareSpec(
        short_side=short_side, fps=fps, keyframe_every=keyframe_every, video_format=video_format
    )
    try:
        report = prepare_dataset(
            dataset,
            root,
            out,
            spec=spec,
            progress=True,
            min_seconds=min_seconds,
            classes_file=classes_file,
        )
    except (LayoutError, FileNotFoundError, NotADirectoryError, NotEnoughSpaceError) as exc:
        raise BadInput(str(exc)) from None
    except OSError as exc:  # parts written before it are kept: a rerun goes on from them
        raise_if_no_space(exc)
        raise
    click.echo(summary(report.manifest))
    click.echo(
        f"{report.path}: {report.done} prepared, {report.skipped} already done, "
        f"{report.failed} failed, in {report.seconds:.1f} s"
    )
