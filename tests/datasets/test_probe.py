"""Probing: a frame-size cap judged without decoding a frame; verifying finds truncated and
corrupt files whose header looks whole."""

from __future__ import annotations

import contextlib

import av
import numpy as np
import pytest

from crisscross.datasets import probe as probing
from crisscross.datasets.layouts.base import Requirements
from crisscross.datasets.probe import FACTS, judge, probe

NEEDS = Requirements(video=True, audio=False, min_seconds=0.5)


def write_video(path, width: int, height: int, frames: int = 25) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        black = np.zeros((height, width, 3), np.uint8)
        for _ in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(black, format="rgb24")))
        container.mux(stream.encode())


class _Counting:
    """An open container whose decode calls are counted in `decoded`."""

    def __init__(self, container, decoded: list) -> None:
        self._container, self._decoded = container, decoded

    def __getattr__(self, name):
        return getattr(self._container, name)

    def decode(self, *args, **kwargs):
        self._decoded.append(args)
        return self._container.decode(*args, **kwargs)


def test_frames_over_the_pixel_cap_are_unreadable_and_not_decoded(tmp_path, monkeypatch):
    path = tmp_path / "huge.mp4"
    write_video(path, 4608, 4608, frames=13)
    decoded: list = []
    real_open = probing.open_media

    @contextlib.contextmanager
    def counting_open(uri):  # the probe must not decode a 21 Mpx frame to judge the file
        with real_open(uri) as container:
            yield _Counting(container, decoded)

    monkeypatch.setattr(probing, "open_media", counting_open)
    facts = probe(str(path))
    assert (facts["width"], facts["height"], facts["error"]) == (4608, 4608, None)
    assert decoded == []
    assert judge(facts, NEEDS) == (
        "unreadable",
        "video frames of 4608x4608 (21.2 Mpx) are larger than the cap of 16.8 Mpx (4096x4096)",
    )


@pytest.mark.parametrize(
    ("width", "height", "status"),
    [(4096, 4096, "ok"), (3840, 2160, "ok"), (8192, 8192, "unreadable")],
)
def test_the_cap_judges_cached_facts_too(width, height, status):
    facts = dict(FACTS) | {"has_video": True, "width": width, "height": height, "duration": 4.0}
    assert judge(facts, NEEDS)[0] == status
    audio_only = Requirements(video=False, audio=True, min_seconds=0.5)
    assert judge(facts | {"has_audio": True}, audio_only)[0] == "ok"  # its video is not decoded


def test_a_small_video_is_still_proved_by_decoding_a_frame(tmp_path):
    path = tmp_path / "small.mp4"
    write_video(path, 64, 48)
    facts = probe(str(path))
    assert (facts["rotation"], judge(facts, NEEDS)) == (0, ("ok", ""))


def _damaged(tmp_path):
    """A 3 s clip as AVI cut to a third of its bytes, and as mp4 with 2 KB of noise in the
    middle: both keep a header that promises 3 s."""
    from crisscross.datasets.media import write_av

    rng = np.random.default_rng(0)
    video = (rng.random((75, 48, 64, 3)) * 255).astype(np.uint8)
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * 16000) / 16000)[None, :]
    paths = {}
    for ext in ("avi", "mp4"):
        whole = tmp_path / f"whole.{ext}"
        write_av(whole, video, fps=25, audio_CN=tone, sample_rate=16000)
        data = bytearray(whole.read_bytes())
        if ext == "avi":
            data = data[: len(data) // 3]
        else:
            middle = len(data) // 2
            data[middle : middle + 2000] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
        paths[ext] = tmp_path / f"damaged.{ext}"
        paths[ext].write_bytes(bytes(data))
        paths[f"whole_{ext}"] = whole
    return paths


def test_verify_finds_a_truncated_avi_and_a_corrupt_mp4_the_header_calls_ok(tmp_path):
    paths = _damaged(tmp_path)
    for whole in ("whole_avi", "whole_mp4"):
        assert [probe(str(paths[whole]), verify=v)["error"] for v in probing.VERIFY] == [None] * 3
    avi = [probe(str(paths["avi"]), verify=v)["error"] for v in probing.VERIFY]
    assert avi[0] is None  # the header still says 77 frames
    assert avi[1] == "truncated: demuxing found 23 of 77 video frames"
    assert avi[2] == "truncated: decoding found 23 of 77 video frames"
    mp4 = [probe(str(paths["mp4"]), verify=v)["error"] for v in probing.VERIFY]
    assert mp4[:2] == [None, None]  # every packet is there; its contents are not
    assert mp4[2].startswith("corrupt: decoding failed after 39 of 75 video frames")
    with pytest.raises(ValueError, match="verify is one of header, demux, decode, not 'all'"):
        probe(str(paths["avi"]), verify="all")


def test_a_verifying_manifest_marks_them_unreadable_and_probes_again(tmp_path):
    import shutil

    from crisscross.datasets.manifest import build_manifest
    from crisscross.datasets.synth import SynthSpec, synthesize

    root = tmp_path / "ucf"
    synthesize("ucf101", root, SynthSpec(classes=2, per_class=2, seconds=3.0, width=64, height=48))
    target = sorted(root.rglob("*.avi"))[0]
    shutil.copyfile(_damaged(tmp_path)["avi"], target)
    header = build_manifest("ucf101", str(root)).manifest.table.to_pylist()
    assert {r["status"] for r in header} == {"ok"}
    report = build_manifest("ucf101", str(root), verify="demux")
    assert report.probed == len(header)  # the header-only probes were not trusted
    rows = {r["path"]: r for r in report.manifest.table.to_pylist()}
    assert rows[str(target)]["status"] == "unreadable"
    assert "23 of 77 video frames" in rows[str(target)]["reason"]
    assert sum(r["status"] == "ok" for r in rows.values()) == len(rows) - 1


def _with_duration(path, out, seconds: float) -> None:
    """`path` (a Matroska file) with its Segment's Duration element (0x4489, an 8-byte float in
    milliseconds) set to `seconds`: a header that claims what the file does not hold."""
    import struct

    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89\x88")
    assert at != -1
    data[at + 3 : at + 11] = struct.pack(">d", seconds * 1000)
    out.write_bytes(bytes(data))


def test_a_duration_no_file_of_that_size_can_hold_is_unreadable(tmp_path):
    """A bogus duration header: the file probes and decodes its first frame, but the length it
    claims is over the cap (a week), or far more than its bytes can hold (an hour in 1 KB)."""
    whole = tmp_path / "whole.mkv"
    write_video(whole, 64, 48)
    assert judge(probe(str(whole)) | {"size_bytes": whole.stat().st_size}, NEEDS) == ("ok", "")
    week, hour = tmp_path / "week.mkv", tmp_path / "hour.mkv"
    _with_duration(whole, week, 7 * 86400.0)
    _with_duration(whole, hour, 3600.0)
    facts = probe(str(week))
    assert facts["error"] is None and facts["duration"] == 7 * 86400.0
    assert judge(facts | {"size_bytes": week.stat().st_size}, NEEDS) == (
        "unreadable",
        "a duration of 168.0 h is over the cap of 24 h (a bogus header?)",
    )
    size = hour.stat().st_size
    assert judge(probe(str(hour)) | {"size_bytes": size}, NEEDS) == (
        "unreadable",
        f"{size} bytes cannot hold the 3600 s its header claims ({size / 3600:.1f} bytes a "
        "second, under 64): a bogus header",
    )
    still = dict(FACTS) | {"has_video": True, "width": 64, "height": 48, "duration": 3600.0}
    assert judge(still | {"size_bytes": 400_000}, NEEDS)[0] == "ok"  # a still picture's rate
    assert judge(still | {"size_bytes": 20_000}, NEEDS)[0] == "unreadable"
    assert judge(still, NEEDS)[0] == "ok"  # no size known: only the cap applies
