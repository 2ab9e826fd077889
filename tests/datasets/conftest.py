"""Synthetic datasets in real layouts, made once per test session, and a corpus of bad media."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from crisscross.datasets.media import write_av
from crisscross.datasets.synth.content import class_style, event_times, render_audio, render_video
from tests.conftest import REPO

SHARED_MEDIA = REPO.parent / "shared" / "media"


def require_shared_media() -> None:
    """Skip outside the project layout (no ../shared), but never in CI, where it is always there."""
    if SHARED_MEDIA.is_dir():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{SHARED_MEDIA} is missing: CI runs with ../shared beside the clone")
    pytest.skip(f"{SHARED_MEDIA} not found: the real media files live in ../shared/media")


def clip(seconds: float, *, fps: float = 25.0, size=(96, 72), class_id: int = 0, seed: int = 0):
    rng = np.random.default_rng(seed)
    style = class_style(class_id)
    events = event_times(style, seconds, rng)
    video = render_video(
        style, events, seconds=seconds, fps=fps, width=size[0], height=size[1], rng=rng
    )
    return video, style, events, rng


def audio_for(style, events, rng, seconds, rate, channels):
    return render_audio(
        style, events, seconds=seconds, sample_rate=rate, channels=channels, rng=rng
    )


@pytest.fixture(scope="session")
def bad_kinetics(tmp_path_factory, synthetic):
    """A Kinetics-Sound root holding every kind of problem file beside good ones.

    Returns (root, {name: relative path}).
    """
    root = tmp_path_factory.mktemp("bad") / "ks"
    shutil.copytree(synthetic["kinetics_sound"], root)
    folder = root / "train" / "bowling"
    files = {}

    def add(name: str) -> Path:
        files[name] = f"train/bowling/{name}_000000_000010.mp4"
        return root / files[name]

    good = next(iter(sorted(folder.glob("*.mp4"))))
    data = good.read_bytes()
    add("zero").write_bytes(b"")
    add("random").write_bytes(np.random.default_rng(0).bytes(20_000))
    add("truncated").write_bytes(data[: len(data) // 2])
    video, style, events, rng = clip(4.0)
    write_av(add("no_audio"), video)
    short, s_style, s_events, s_rng = clip(1.0, seed=1)
    write_av(
        add("short"),
        short,
        audio_CN=audio_for(s_style, s_events, s_rng, 1.0, 16000, 1),
        sample_rate=16000,
    )
    write_av(  # the audio stops at 1.5 s, the video goes on to 4 s
        add("short_audio"),
        video,
        audio_CN=audio_for(style, events, rng, 1.5, 16000, 1),
        sample_rate=16000,
    )
    write_av(
        add("rotated"),
        video,
        rotation=90,
        audio_CN=audio_for(style, events, rng, 4.0, 16000, 1),
        sample_rate=16000,
    )
    times = np.cumsum(np.r_[0.0, np.random.default_rng(2).uniform(0.02, 0.07, len(video) - 1)])
    write_av(
        add("vfr"),
        video,
        frame_times=times,
        audio_CN=audio_for(style, events, rng, 4.0, 16000, 1),
        sample_rate=16000,
    )
    for name, rate, channels in (
        ("mono_8k", 8000, 1),
        ("stereo_44k", 44100, 2),
        ("surround_48k", 48000, 6),
    ):
        write_av(
            add(name),
            video,
            audio_CN=audio_for(style, events, rng, 4.0, rate, channels),
            sample_rate=rate,
        )
    for media in sorted(SHARED_MEDIA.iterdir()) if SHARED_MEDIA.is_dir() else []:
        target = folder / media.name
        shutil.copy(media, target)
        files[media.name] = f"train/bowling/{media.name}"
    # a file the official CSV lists that is not on disk
    with (root / "annotations" / "train.csv").open("a") as handle:
        handle.write("bowling,ABCDEFGHIJK,10,20,train\n")
        handle.write("bowling,FIFOFIFOFIF,10,20,train\n")
    files["listed_missing"] = "train/bowling/ABCDEFGHIJK_000010_000020.mp4"
    # a FIFO in a video's place: opening it would block the probe for ever
    files["fifo"] = "train/bowling/FIFOFIFOFIF_000010_000020.mp4"
    os.mkfifo(root / files["fifo"])
    return root, files
