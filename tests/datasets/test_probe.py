"""Probing: a frame-size cap judged without decoding a frame."""

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
