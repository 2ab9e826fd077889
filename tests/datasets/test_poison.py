"""A poison corpus through the manifest and the pipeline, as a crawl brings them: every bad file
is reported with its reason (a manifest status, or a skipped sample), nothing crashes or hangs,
and the decode actors stay within a memory bound. The per-kind checks live beside the code
that handles each kind (test_probe, test_decode, test_manifest, test_pipeline); this one runs
them all together through the path a pretraining takes."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from crisscross.datasets.manifest import build_manifest
from crisscross.datasets.media import write_av
from crisscross.datasets.pipeline import (
    DecodeResources,
    FailureLogRef,
    epoch_dataset,
    epoch_order,
    iter_batches,
    usable_rows,
)
from crisscross.datasets.samples import ClipSpec
from tests.datasets.conftest import audio_for, clip

SPEC = ClipSpec(crop_size=48, short_side=56, time_limit=30.0)
RATES = (8001, 44101, 96001)
# what the manifest must say of each file it refuses (status, words of the reason)
AT_THE_MANIFEST = {
    "zero": ("unreadable", "empty file"),
    "garbage": ("unreadable", "InvalidDataError"),
    "truncated_moov": ("unreadable", "InvalidDataError"),  # the index cut: it does not open
    "no_frame": ("unreadable", "InvalidDataError"),  # it opens; its first frame does not decode
    "huge": ("unreadable", "8192x8192 (67.1 Mpx) are larger than the cap"),
    "bogus_duration": ("unreadable", "cannot hold the 36000 s its header claims"),
    "fifo": ("unreadable", "not a regular file (a FIFO, socket or device)"),
    "truncated_avi": ("unreadable", "truncated: demuxing found"),
}
DECODE_MIB = 2048  # a decode actor's peak RSS bound (an 8001 Hz stream once cost +4 GB)
SECONDS = 240  # a hang's bound, not a speed goal: the epoch took 10 s here alone


def _mp4(path, seconds=4.0, **kwargs):
    video, style, events, rng = clip(seconds)
    audio = audio_for(style, events, rng, seconds, 16000, 1)
    return write_av(path, video, audio_CN=audio, sample_rate=16000, **kwargs)


def _zero_mdat(data: bytes) -> bytes:
    """The file with its media data zeroed: the header is whole, no packet decodes."""
    at = data.index(b"mdat")
    size = int.from_bytes(data[at - 4 : at], "big")
    return data[: at + 4] + bytes(size - 8) + data[at - 4 + size :]


@pytest.fixture(scope="module")
def corpus(synthetic, tmp_path_factory):
    """A Kinetics-Sound root: the 15 good synthetic files and one file of each poison kind.
    Returns (root, {kind: path}); the manifest is built with `verify="demux"`."""
    root = tmp_path_factory.mktemp("poison") / "ks"
    shutil.copytree(synthetic["kinetics_sound"], root)
    folder = next(p for p in (root / "train").iterdir() if p.is_dir())
    paths = {}

    def add(kind: str, ext: str = "mp4"):
        paths[kind] = folder / f"{kind}_000000_000010.{ext}"
        return paths[kind]

    good = _mp4(tmp_path_factory.mktemp("poison-source") / "good.mp4").read_bytes()
    add("zero").write_bytes(b"")
    add("garbage").write_bytes(np.random.default_rng(0).bytes(50_000))
    add("truncated_moov").write_bytes(good[:-512])  # the mp4 muxer writes the index last
    add("no_frame").write_bytes(_zero_mdat(good))
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(5 * 16000) / 16000)[None, :]
    write_av(add("huge"), np.zeros((2, 8192, 8192, 3), np.uint8), fps=0.4, audio_CN=tone,
             sample_rate=16000)  # fmt: skip
    video, style, events, rng = clip(4.0)
    times = np.r_[np.arange(len(video) - 1) / 25.0, 36_000.0]  # a last frame ten hours in
    write_av(add("bogus_duration"), video, frame_times=times,
             audio_CN=audio_for(style, events, rng, 4.0, 16000, 1), sample_rate=16000)  # fmt: skip
    os.mkfifo(add("fifo"))  # opening it would block for ever
    avi = _mp4(add("truncated_avi", "avi")).read_bytes()
    add("truncated_avi", "avi").write_bytes(avi[: len(avi) // 3])
    corrupt = bytearray(_mp4(add("corrupt")).read_bytes())
    middle = len(corrupt) // 2
    corrupt[middle : middle + 2000] = np.random.default_rng(1).bytes(2000)
    add("corrupt").write_bytes(bytes(corrupt))
    for rate in RATES:  # odd rates: FLAC in Matroska takes any
        sound = 0.3 * np.sin(2 * np.pi * 440 * np.arange(4 * rate) / rate)[None, :]
        write_av(add(f"rate_{rate}", "mkv"), video, audio_CN=sound, sample_rate=rate,
                 audio_codec="flac")  # fmt: skip
    return root, {kind: str(path) for kind, path in paths.items()}


@pytest.fixture(scope="module")
def through(corpus, local_ray, tmp_path_factory):
    """The manifest (verify demux) and one epoch of the pipeline over its usable rows, one of
    which names a prepared audio copy that is not there."""
    root, paths = corpus
    out = tmp_path_factory.mktemp("poison-manifest") / "m.parquet"
    manifest = build_manifest("kinetics_sound", str(root), out=str(out), verify="demux").manifest
    rows = epoch_order(usable_rows(manifest, SPEC), seed=0, epoch=0)
    listed = rows.to_pylist()
    victim = next(r for r in listed if "/train/" in r["path"] and r["path"] not in paths.values())
    victim["audio_path"] = str(out.parent / "gone.audio.npy")  # a prepared copy gone missing
    rows = pa.Table.from_pylist(listed, schema=rows.schema)
    log = FailureLogRef.create()
    start = time.monotonic()
    data = epoch_dataset(
        rows,
        spec=SPEC,
        failure_log=log,
        resources=DecodeResources(workers=2, rows_per_task=2),
        keep_failed=True,
    )
    batches = list(iter_batches(data, 4, drop_last=False))
    seconds = time.monotonic() - start
    return {
        "built": manifest,
        "manifest": {r["path"]: r for r in manifest.table.to_pylist()},
        "rows": rows,
        "victim": victim["path"],
        "batches": batches,
        "failures": {f.path: f.reason for f in log.drain()},
        "rss": log.peak_rss_mib(),
        "seconds": seconds,
    }


def test_each_poison_file_is_reported_at_the_manifest_or_by_the_pipeline(corpus, through):
    _, paths = corpus
    manifest, failures = through["manifest"], through["failures"]
    report = {}
    for kind, path in paths.items():
        row = manifest[path]
        report[kind] = (row["status"], row["reason"] or failures.get(path, "decoded"))
    print("\n".join(f"{kind}: {status}: {how}" for kind, (status, how) in report.items()))
    for kind, (status, words) in AT_THE_MANIFEST.items():
        assert report[kind][0] == status and words in report[kind][1], (kind, report[kind])
        assert paths[kind] not in through["rows"].column("path").to_pylist()
    for rate in RATES:  # valid files, decoded within the bounds below
        assert report[f"rate_{rate}"] == ("ok", "decoded"), report[f"rate_{rate}"]
    # every packet of the corrupt mp4 is there, so it passes a demuxing manifest (only
    # `--verify decode` refuses it); its window decodes, or is skipped with the decoder's reason
    assert report["corrupt"][0] == "ok"
    assert "FileNotFoundError" in failures[through["victim"]]
    assert "gone.audio.npy" in failures[through["victim"]]


def test_the_epoch_ends_with_every_row_decoded_or_skipped_within_its_bounds(through):
    rows, batches, failures = through["rows"], through["batches"], through["failures"]
    decoded = sum(int(b["ok"].sum()) for b in batches)
    skipped = sum(int((~b["ok"].bool()).sum()) for b in batches)
    assert decoded + skipped == rows.num_rows  # no row lost, none twice
    assert skipped == len(failures) >= 1
    peak = max(through["rss"].values())
    print(f"{rows.num_rows} rows: {decoded} decoded, {skipped} skipped in "
          f"{through['seconds']:.1f} s; decode actors' peak RSS {peak:.0f} MiB")  # fmt: skip
    assert peak < DECODE_MIB, through["rss"]
    assert through["seconds"] < SECONDS


def test_a_sample_past_its_time_limit_is_skipped_with_the_limit_named(through):
    """The per-sample limit holds in the decode actors too: with a limit no decode can meet,
    every sample is skipped, each with the limit in its reason, and the epoch ends."""
    spec = replace(SPEC, time_limit=1e-6)
    rows = epoch_order(usable_rows(through["built"], spec), seed=0, epoch=0).slice(0, 4)
    log = FailureLogRef.create()
    data = epoch_dataset(rows, spec=spec, failure_log=log, keep_failed=True,
                         resources=DecodeResources(workers=1, rows_per_task=2))  # fmt: skip
    batches = list(iter_batches(data, 4, drop_last=False))
    assert sum(int((~b["ok"].bool()).sum()) for b in batches) == 4
    reasons = [f.reason for f in log.drain()]
    assert len(reasons) == 4 and all("time limit of 1e-06 s" in r for r in reasons), reasons


def _within(seconds: float, fn):
    """fn()'s outcome ("ok", value) or ("raised", exception), or ("hung", None) after `seconds`
    (a daemon thread: a FIFO opened for reading would block it for ever)."""
    import threading

    out: list = [("hung", None)]

    def run() -> None:
        try:
            out[0] = ("ok", fn())
        except Exception as exc:  # the outcome under test
            out[0] = ("raised", exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return out[0]


@pytest.mark.parametrize(
    ("dataset", "meta"), [("esc50", "meta/esc50.csv"), ("kinetics_sound", "annotations/train.csv")]
)
def test_a_fifo_in_a_metadata_files_place_is_named_not_opened(synthetic, tmp_path, dataset, meta):
    root = tmp_path / dataset
    shutil.copytree(synthetic[dataset], root, ignore=shutil.ignore_patterns(Path(meta).name))
    (root / meta).parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(root / meta)
    outcome, value = _within(
        60, lambda: build_manifest(dataset, str(root), out=str(tmp_path / "m"))
    )
    assert outcome == "raised", (outcome, value)
    assert meta in str(value)
    if dataset == "esc50":  # required: the layout says it is missing
        assert f"{meta} (" in str(value) and "not in the" in str(value)
    else:  # optional, so read: a clear error naming it
        assert "not a regular file (a FIFO, socket or device)" in str(value)
