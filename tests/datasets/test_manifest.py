"""Manifests: every bad file lands with a reason, real media probe correctly, probes are cached."""

from __future__ import annotations

import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crisscross.datasets.manifest import build_manifest, read_manifest, summary
from tests.datasets.conftest import require_shared_media


@pytest.fixture(scope="module")
def bad_manifest(bad_kinetics, tmp_path_factory):
    root, files = bad_kinetics
    out = tmp_path_factory.mktemp("manifest") / "m.parquet"
    report = build_manifest("kinetics_sound", str(root), out=str(out))
    rows = {row["rel"]: row for row in report.manifest.table.to_pylist()}
    return report, {name: rows[rel] for name, rel in files.items()}, rows


@pytest.mark.parametrize(
    ("name", "status", "reason"),
    [
        ("zero", "unreadable", "empty file (0 bytes)"),
        ("random", "unreadable", "InvalidDataError: Invalid data found when processing input"),
        ("truncated", "unreadable", "InvalidDataError"),
        ("no_audio", "no_audio", "no audio stream"),
        ("short", "too_short", "1.00 s, needs at least 1.10 s"),
        ("listed_missing", "missing_on_disk", "listed in annotations/train.csv but not on disk"),
        ("fifo", "unreadable", "not a regular file (a FIFO, socket or device): not opened"),
        ("video_0.mov", "too_short", "0.10 s, needs at least 1.10 s; no audio stream"),
        ("video_90.mov", "too_short", "0.10 s, needs at least 1.10 s; no audio stream"),
    ],
)
def test_bad_files_land_with_a_reason(bad_manifest, name, status, reason):
    if name.endswith(".mov"):
        require_shared_media()
    _, rows, _ = bad_manifest
    assert rows[name]["status"] == status
    assert reason in rows[name]["reason"]


def test_duration_is_the_span_inside_both_streams(bad_manifest):
    """The reference keeps windows inside the shorter stream: a 4 s video whose audio stops at
    1.5 s is 1.5 s long for pretraining, and no 3 s overlapped span is drawn from it."""
    _, rows, _ = bad_manifest
    row = rows["short_audio"]
    assert row["status"] == "ok"
    assert row["video_seconds"] == pytest.approx(4.0, abs=0.05)
    assert row["audio_seconds"] == pytest.approx(1.5, abs=0.05)
    assert row["duration"] == row["audio_seconds"]
    both = rows["rotated"]  # both streams 4 s
    assert both["duration"] == pytest.approx(4.0, abs=0.05)


def test_short_audio_is_left_out_of_the_overlapped_windows(bad_manifest):
    from crisscross.datasets.epochs import usable_rows
    from crisscross.datasets.samples import ClipSpec

    report, rows, _ = bad_manifest
    kept = set(usable_rows(report.manifest, ClipSpec()).column("path").to_pylist())
    assert rows["rotated"]["path"] in kept and rows["short_audio"]["path"] not in kept
    reference = ClipSpec(short_videos="reference")
    assert rows["short_audio"]["path"] in set(
        usable_rows(report.manifest, reference).column("path").to_pylist()
    )


@pytest.mark.parametrize(
    ("name", "rate", "channels"),
    [("mono_8k", 8000, 1), ("stereo_44k", 44100, 2), ("surround_48k", 48000, 6)],
)
def test_audio_formats_are_probed(bad_manifest, name, rate, channels):
    _, rows, _ = bad_manifest
    row = rows[name]
    assert (row["status"], row["sample_rate"], row["channels"], row["audio_codec"]) == (
        "ok",
        rate,
        channels,
        "aac",
    )


def test_rotation_and_variable_frame_rate(bad_manifest):
    _, rows, _ = bad_manifest
    assert rows["rotated"]["rotation"] == 90 and rows["rotated"]["status"] == "ok"
    vfr = rows["vfr"]
    assert vfr["status"] == "ok" and vfr["frames"] == 100
    assert 15 < vfr["fps"] < 40 and vfr["fps"] != 25.0


def test_real_media_from_shared(bad_manifest):
    require_shared_media()
    _, rows, _ = bad_manifest
    pancake = rows["flipping_a_pancake.mkv"]
    assert pancake["status"] == "ok"
    assert (
        pancake["video_codec"],
        pancake["audio_codec"],
        pancake["width"],
        pancake["height"],
    ) == ("h264", "opus", 426, 240)
    assert pancake["sample_rate"] == 48000 and pancake["channels"] == 1
    assert pancake["duration"] == pytest.approx(10.38, abs=0.05)
    assert rows["video_90.mov"]["rotation"] == -90 and rows["video_0.mov"]["rotation"] == 0


def test_good_files_are_ok_and_labelled(bad_manifest, synthetic):
    report, _, rows = bad_manifest
    good = [
        p.relative_to(synthetic["kinetics_sound"]).as_posix()
        for p in synthetic["kinetics_sound"].rglob("*.mp4")
    ]
    assert len(good) == 15 and all(rows[rel]["status"] == "ok" for rel in good)
    assert all(report.manifest.classes[r["label"]] == r["label_name"] for r in rows.values())


def test_parquet_file_and_summary(bad_manifest):
    report, _, rows = bad_manifest
    table = pq.read_table(report.path)
    assert table.num_rows == len(rows)
    assert {
        "path",
        "label",
        "split",
        "duration",
        "fps",
        "frames",
        "rotation",
        "has_audio",
        "sample_rate",
        "channels",
        "size_bytes",
        "video_codec",
        "status",
        "reason",
    } <= set(table.column_names)
    again = read_manifest(report.path)
    assert again.dataset == "kinetics_sound" and again.counts() == report.manifest.counts()
    text = summary(report.manifest)
    counts = report.manifest.counts()
    assert text.splitlines()[0].split() == ["status", "train", "val", "total"]
    for status, count in counts.items():
        line = next(line for line in text.splitlines() if line.startswith(status))
        assert int(line.split()[-1]) == count


def test_cached_probes_are_reused_until_a_file_changes(synthetic, tmp_path):
    out = str(tmp_path / "m.parquet")
    first = build_manifest("esc50", str(synthetic["esc50"]), out=out)
    assert (first.probed, first.reused) == (15, 0)
    second = build_manifest("esc50", str(synthetic["esc50"]), out=out)
    assert (second.probed, second.reused) == (0, 15)
    assert second.manifest.table.equals(first.manifest.table)
    victim = next((synthetic["esc50"] / "audio").glob("*.wav"))
    stat = victim.stat()
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = build_manifest("esc50", str(synthetic["esc50"]), out=out)
    assert (third.probed, third.reused) == (1, 14)


def test_min_seconds_changes_the_verdict_without_reprobing(synthetic, tmp_path):
    out = str(tmp_path / "m.parquet")
    build_manifest("ucf101", str(synthetic["ucf101"]), out=out)
    strict = build_manifest("ucf101", str(synthetic["ucf101"]), out=out, min_seconds=10)
    assert strict.probed == 0 and strict.manifest.counts() == {"too_short": 15}


def test_a_filesystem_uri_root(synthetic, tmp_path):
    report = build_manifest(
        "esc50", f"file://{synthetic['esc50']}", out=str(tmp_path / "m.parquet")
    )
    assert report.manifest.counts() == {"ok": 15}
    assert all(
        path.startswith("file://") for path in report.manifest.table.column("path").to_pylist()
    )


def test_not_a_manifest(tmp_path):
    pq.write_table(__import__("pyarrow").table({"a": [1]}), tmp_path / "x.parquet")
    with pytest.raises(ValueError, match="not a crisscross manifest"):
        read_manifest(str(tmp_path / "x.parquet"))


@pytest.mark.parametrize("where", ["mid-write", "fsync"])
def test_a_crash_while_writing_keeps_the_previous_manifest(synthetic, tmp_path, monkeypatch, where):
    out = tmp_path / "m.parquet"
    first = build_manifest("esc50", str(synthetic["esc50"]), out=str(out))
    before = out.read_bytes()
    write_table = pq.write_table

    def disk_full(*_args):
        raise OSError(28, "No space left on device")

    def half_then_disk_full(table, where, *args, **kwargs):
        sink = pa.BufferOutputStream()
        write_table(table, sink)
        half = sink.getvalue().to_pybytes()[:100]
        if isinstance(where, str):  # a path: written in place
            with open(where, "wb") as stream:
                stream.write(half)
        else:
            where.write(half)
        disk_full()

    if where == "fsync":
        monkeypatch.setattr(os, "fsync", disk_full)
    else:
        monkeypatch.setattr(pq, "write_table", half_then_disk_full)
    with pytest.raises(OSError, match="No space left"):
        build_manifest("esc50", str(synthetic["esc50"]), out=str(out), min_seconds=10)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.parquet"]  # no temporary left
    assert read_manifest(str(out)).table.equals(first.manifest.table)


@pytest.mark.parametrize("content", [b"", b"PAR1\x00\x00"], ids=["empty", "cut short"])
def test_an_empty_or_cut_manifest_is_named_in_a_clear_error(tmp_path, content):
    path = tmp_path / "m.parquet"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: not a readable manifest"):
        read_manifest(str(path))


def test_damaged_manifest_metadata_is_named_in_a_clear_error(tmp_path):
    table = pa.table({"a": [1]}).replace_schema_metadata({"crisscross": '{"dataset": "x"'})
    pq.write_table(table, tmp_path / "m.parquet")
    with pytest.raises(ValueError, match=r"m\.parquet: a Parquet file with damaged crisscross"):
        read_manifest(str(tmp_path / "m.parquet"))
