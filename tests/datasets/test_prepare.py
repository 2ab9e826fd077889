"""Prepared copies: cheap-to-decode files, the same samples' shapes, resumable, failures kept."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from crisscross.datasets.decode import read_clip
from crisscross.datasets.pipeline import epoch_order, usable_rows
from crisscross.datasets.prepare import PrepareSpec, prepare_dataset
from crisscross.datasets.samples import ClipSpec, PretextSample

SPEC = ClipSpec(crop_size=48, short_side=56)


@pytest.fixture(scope="module")
def prepared(local_ray, synthetic, tmp_path_factory):
    base = tmp_path_factory.mktemp("prep")
    root = base / "ks"
    shutil.copytree(synthetic["kinetics_sound"], root)
    report = prepare_dataset(
        "kinetics_sound", str(root), str(base / "out"), spec=PrepareSpec(short_side=64)
    )
    return root, base / "out", report


def test_prepared_videos_are_small_16fps_with_frequent_keyframes(prepared):
    _, out, report = prepared
    assert (report.done, report.skipped, report.failed) == (15, 0, 0)
    row = report.manifest.usable().to_pylist()[0]
    assert row["path"].startswith(str(out)) and row["source_path"] != row["path"]
    assert (row["height"], row["fps"], row["rotation"]) == (64, 16.0, 0)
    with av.open(row["path"]) as container:
        assert not container.streams.audio
        keyframes = [
            p.pts * p.time_base
            for p in container.demux(video=0)
            if p.is_keyframe and p.pts is not None
        ]
    assert np.diff([float(k) for k in keyframes]).max() <= 0.5 + 1e-6


def test_prepared_audio_matches_the_original(prepared):
    _, _, report = prepared
    row = report.manifest.usable().to_pylist()[0]
    # the whole file decoded as the training loader would (AAC's noise substitution makes two
    # decodes that start at different frames differ above ~4 kHz, so compare like with like;
    # tests/datasets/test_decode.py checks that a span sits on this whole-file grid)
    seconds = float(row["duration"])
    _, (original,) = read_clip(row["source_path"], audio_spans=[(0.0, seconds)])
    stored = np.load(row["audio_path"]) / 32768.0
    assert stored.shape == original.shape
    assert np.abs(stored - np.clip(original, -1.0, 1.0)).max() <= 0.5 / 32768 + 1e-6


def test_samples_read_raw_or_prepared_through_one_interface(prepared):
    _, _, report = prepared
    row = epoch_order(usable_rows(report.manifest, SPEC), seed=0, epoch=0).to_pylist()[0]
    out = PretextSample(SPEC)(row, epoch=0, index=0)
    assert out["v1"].shape == (8, 3, 48, 48) and out["a1"].shape == (32000,)  # augment on device
    out = PretextSample(replace(SPEC, augment_on="decode"))(row, epoch=0, index=0)
    assert out["v1"].shape == (8, 3, 48, 48) and out["a1"].shape == (1, 80, 201)


def test_running_again_resumes(prepared, local_ray):
    root, out, _ = prepared
    victim = next(out.rglob("*.mp4"))
    victim.unlink()
    again = prepare_dataset("kinetics_sound", str(root), str(out), spec=PrepareSpec(short_side=64))
    assert (again.done, again.skipped) == (1, 14) and victim.exists()
    assert not list(out.rglob("*.partial.*"))


def test_a_file_that_breaks_during_preparation_is_reported(local_ray, synthetic, tmp_path):
    import os

    from crisscross.datasets.manifest import build_manifest

    root = tmp_path / "ks"
    shutil.copytree(synthetic["kinetics_sound"], root)
    victim = build_manifest("kinetics_sound", str(root)).manifest.usable().column("path")[0].as_py()
    stat = os.stat(victim)
    with open(
        victim, "r+b"
    ) as handle:  # damaged after probing: same size and time, so the probe stays
        handle.write(bytes(stat.st_size))
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    report = prepare_dataset(
        "kinetics_sound", str(root), str(tmp_path / "out"), spec=PrepareSpec(short_side=64)
    )
    rows = {r["source_path"] or r["path"]: r for r in report.manifest.table.to_pylist()}
    assert (report.done, report.failed) == (14, 1)
    assert rows[victim]["status"] == "unreadable" and rows[victim]["reason"].startswith("prepare: ")


@pytest.fixture(scope="module")
def prepared_frames(local_ray, synthetic, tmp_path_factory):
    base = tmp_path_factory.mktemp("frames")
    spec = PrepareSpec(short_side=64, video_format="frames")
    report = prepare_dataset(
        "kinetics_sound", str(synthetic["kinetics_sound"]), str(base / "out"), spec=spec
    )
    return base / "out", report, spec


def test_frames_copy_holds_the_decoded_frames_and_reads_them_back(prepared_frames):
    from crisscross.datasets.decode import read_frames
    from crisscross.datasets.prepare import frames_bytes
    from crisscross.datasets.probe import open_media

    out, report, spec = prepared_frames
    assert (report.done, report.failed) == (15, 0)
    row = report.manifest.usable().to_pylist()[0]
    assert row["path"].endswith(".16fps.frames.npy") and row["path"].startswith(str(out))
    stored = np.load(row["path"], mmap_mode="r")
    assert stored.dtype == np.uint8 and stored.shape[1:] == (64, 85, 3)
    assert (row["frames"], row["height"], row["width"], row["fps"]) == (len(stored), 64, 85, 16.0)
    # on the 16 fps grid the copy gives exactly the source's frames at that short side
    times = [0.0, 0.0625, 1.5, 1.5625, 3.0]
    frames, audio = read_clip(row["path"], frame_times=times)
    with open_media(row["source_path"]) as container:
        assert np.array_equal(frames, read_frames(container, times, short_side=64))
    assert audio == []
    # between grid points, the frame at or before the time
    between, _ = read_clip(row["path"], frame_times=[1.55, 0.07, 99.0])
    assert np.array_equal(between[0], stored[24]) and np.array_equal(between[1], stored[1])
    assert np.array_equal(between[2], stored[-1])  # past the end: the last frame
    rows = report.manifest.usable().to_pylist()
    on_disk = sum(os.path.getsize(r["path"]) for r in rows)
    assert abs(frames_bytes(rows, spec) - on_disk) <= 128 * len(rows)  # .npy headers apart
    sample = PretextSample(SPEC)(
        epoch_order(usable_rows(report.manifest, SPEC), seed=0, epoch=0).to_pylist()[0],
        epoch=0,
        index=0,
    )
    assert sample["v1"].shape == (8, 3, 48, 48) and sample["a1"].shape == (32000,)


def test_damaged_frames_file_is_a_decode_error_naming_it(prepared_frames, tmp_path):
    from crisscross.datasets.decode import DecodeError

    _, report, _ = prepared_frames
    source = report.manifest.usable().column("path")[0].as_py()
    victim = tmp_path / "v.16fps.frames.npy"
    victim.write_bytes(Path(source).read_bytes()[:5000])
    with pytest.raises(DecodeError, match=r"v\.16fps\.frames\.npy: truncated frames file"):
        read_clip(str(victim), frame_times=[5.0])
    np.save(victim, np.zeros((4, 3), np.float32))
    with pytest.raises(DecodeError, match="not a prepared frames file"):
        read_clip(str(victim), frame_times=[0.0])


def test_frames_copy_that_does_not_fit_is_refused_before_any_work(
    local_ray, synthetic, tmp_path, monkeypatch
):
    import collections

    from crisscross.datasets import prepare as P

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(P.shutil, "disk_usage", lambda _: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(P.NotEnoughSpaceError, match=r"needs about .* GiB .* free; free some"):
        prepare_dataset(
            "kinetics_sound",
            str(synthetic["kinetics_sound"]),
            str(tmp_path / "out"),
            spec=PrepareSpec(video_format="frames"),
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("video_format", ["frames", "h264"])
def test_a_long_video_is_prepared_without_holding_its_frames(tmp_path, video_format):
    """`prepare` hands each decoded frame on as it comes: numpy's peak while preparing a video
    of 320 frames stays under a tenth of those frames' bytes (holding them, as a whole-video
    read does, costs at least all of them)."""
    import tracemalloc

    from crisscross.datasets.decode import read_frames
    from crisscross.datasets.media import write_av
    from crisscross.datasets.prepare import prepare_file
    from crisscross.datasets.probe import open_media, probe

    rng = np.random.default_rng(0)
    source = tmp_path / "long.mp4"
    steps = np.linspace(0, 255, 320, dtype=np.uint8)[:, None, None, None]
    frames = (rng.integers(0, 64, (1, 96, 128, 3), dtype=np.uint8) + steps // 2).astype(np.uint8)
    write_av(source, frames, fps=16.0)
    facts = probe(str(source))
    row = {"path": str(source), "rel": "long.mp4", "has_video": True, "has_audio": False} | {
        "duration": facts["duration"]
    }
    spec = PrepareSpec(short_side=64, video_format=video_format)
    times = np.arange(0.0, float(row["duration"]), 1.0 / spec.fps)
    held = len(times) * 64 * 85 * 3  # every frame at the prepared size

    tracemalloc.start()
    try:
        new = prepare_file(row, str(tmp_path / "out"), spec)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert new.get("status") != "unreadable", new.get("reason")
    assert len(times) == 320 and new["frames"] == 320
    assert peak < held / 10, f"numpy peak {peak} bytes against {held} for the frames"
    if video_format == "frames":  # the same frames as one whole-video read gives
        with open_media(str(source)) as container:
            whole = read_frames(container, times, short_side=64)
        assert np.array_equal(np.load(new["path"]), whole)
    else:
        assert (new["height"], new["width"], new["fps"]) == (64, 84, 16.0)
