"""Prepared copies: cheap-to-decode files, the same samples' shapes, resumable, failures kept."""

from __future__ import annotations

import shutil

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
    _, (original,) = read_clip(row["source_path"], audio_spans=[(1.0, 2.0)], sample_rate=16000)
    stored = np.load(row["audio_path"])[16000:48000] / 32768.0
    assert np.corrcoef(original, stored)[0, 1] > 0.99


def test_samples_read_raw_or_prepared_through_one_interface(prepared):
    _, _, report = prepared
    row = epoch_order(usable_rows(report.manifest, SPEC), seed=0, epoch=0).to_pylist()[0]
    out = PretextSample(SPEC)(row, epoch=0, index=0)
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
