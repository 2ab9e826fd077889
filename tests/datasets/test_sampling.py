"""Window sampling: each mode's geometry, bounds and the shortest usable video."""

from __future__ import annotations

import numpy as np
import pytest

from crisscross.datasets.sampling import (
    MODES,
    eval_clip_starts,
    pretext_windows,
    required_seconds,
    train_clip_start,
)

A, V = 2.0, 0.5  # audio window, video window (8 frames at 16 fps)


def draw(mode, duration, n=200):
    rng = np.random.default_rng(0)
    return [
        pretext_windows(mode, duration, audio_seconds=A, video_seconds=V, rng=rng) for _ in range(n)
    ]


@pytest.mark.parametrize("mode", MODES)
def test_windows_stay_inside_the_video(mode):
    for w in draw(mode, 10.0):
        assert w.a1 >= 0 and w.a1 + A <= 10.0 + 1e-9 and w.a2 >= 0 and w.a2 + A <= 10.0 + 1e-9
        assert w.v1 >= 0 and w.v1 + V <= 10.0 + 1e-9 and w.v2 >= 0 and w.v2 + V <= 10.0 + 1e-9


def test_overlapped_geometry():
    for w in draw("overlapped", 10.0):
        assert w.a2 - w.a1 == pytest.approx(1.0)  # last 2 s of a 3 s span
        assert w.v2 - w.v1 == pytest.approx(0.25)  # last 8 of 12 frames
        assert w.a1 <= w.v1 and w.v2 + V <= w.a1 + 3.0 + 1e-9  # video span inside audio span


def test_other_modes_geometry():
    assert all((w.v1, w.a1) == (w.v2, w.a2) for w in draw("same_timestamp", 10.0))
    assert all(
        w.a2 - w.a1 == pytest.approx(A) and w.v2 - w.v1 == pytest.approx(A)
        for w in draw("adjacent", 10.0)
    )
    assert all(w.a2 - w.a1 == pytest.approx(5.0) for w in draw("far_apart", 10.0))
    gaps = [abs(w.a2 - w.a1) for w in draw("random", 10.0)]
    assert min(gaps) < 1.0 and max(gaps) > 5.0


def test_required_seconds_and_too_short():
    assert [required_seconds(m, audio_seconds=A, video_seconds=V) for m in MODES] == [
        2.0,
        3.0,
        4.0,
        2.0,
        4.0,
    ]
    with pytest.raises(
        ValueError, match=r"2.50 s is shorter than the 3.00 s that 'overlapped' needs"
    ):
        pretext_windows(
            "overlapped", 2.5, audio_seconds=A, video_seconds=V, rng=np.random.default_rng()
        )


def test_fine_tuning_clips():
    assert eval_clip_starts(10.0, 2.0) == pytest.approx(np.linspace(0, 8, 10).tolist())
    assert eval_clip_starts(1.0, 2.0) == [0.0] * 10
    rng = np.random.default_rng(0)
    starts = [train_clip_start(10.0, 0.5, rng) for _ in range(100)]
    assert min(starts) >= 0 and max(starts) <= 9.5 and np.std(starts) > 1
