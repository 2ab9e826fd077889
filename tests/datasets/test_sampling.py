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
    for duration in (10.0, 4.0, 3.2):
        check_inside(mode, duration)


def check_inside(mode, duration):
    if duration < required_seconds(mode, audio_seconds=A, video_seconds=V):
        return
    for w in draw(mode, duration):
        d = duration + 1e-9
        assert w.a1 >= 0 and w.a1 + A <= d and w.a2 >= 0 and w.a2 + A <= d
        assert w.v1 >= 0 and w.v1 + V <= d and w.v2 >= 0 and w.v2 + V <= d


def test_overlapped_geometry():
    for w in draw("overlapped", 10.0):
        assert w.a2 - w.a1 == pytest.approx(1.0)  # last 2 s of a 3 s span
        assert w.v2 - w.v1 == pytest.approx(0.25)  # last 8 of 12 frames
        assert w.a1 <= w.v1 and w.v2 + V <= w.a1 + 3.0 + 1e-9  # video span inside audio span


def test_other_modes_geometry():
    assert all((w.v1, w.a1) == (w.v2, w.a2) for w in draw("same_timestamp", 10.0))
    for w in draw("adjacent", 10.0):  # 4 s of audio, 1 s of video inside it, back to back
        assert w.a2 - w.a1 == pytest.approx(A) and w.v2 - w.v1 == pytest.approx(V)
        assert w.a1 <= w.v1 and w.v2 + V <= w.a1 + 2 * A + 1e-9
    for w in draw("far_apart", 10.0):  # a gap of 10 / 2 - 2 s, video at the audio's start
        assert w.a2 - w.a1 == pytest.approx(3.0) and (w.v1, w.v2) == (w.a1, w.a2)
    gaps = [abs(w.a2 - w.a1) for w in draw("random", 10.0)]
    assert min(gaps) < 1.0 and max(gaps) > 5.0


class FixedDraws:
    """A generator whose uniform draws are given fractions of their range, in order."""

    def __init__(self, *fractions: float) -> None:
        self.fractions = list(fractions)

    def uniform(self, low: float, high: float) -> float:
        return low + self.fractions.pop(0) * (high - low)


def windows(mode, duration, *fractions, short_videos="skip"):
    rng = FixedDraws(*fractions)
    w = pretext_windows(
        mode, duration, audio_seconds=A, video_seconds=V, rng=rng, short_videos=short_videos
    )
    assert rng.fractions == [], "every fixed draw is used"
    return (w.v1, w.v2, w.a1, w.a2)


def test_window_positions_for_fixed_draws():
    """By hand, from the reference loader's rules, for a 10 s video."""
    approx = pytest.approx
    # overlapped: audio span [0, 7) * 0.5 = 3.5, video span 3.5 + [0, 2.25) * 0.2 = 3.95
    assert windows("overlapped", 10.0, 0.5, 0.2) == approx((3.95, 4.2, 3.5, 4.5))
    # same_timestamp: audio 8 * 0.25 = 2, video 2 + 1.5 * 1.0 = 3.5
    assert windows("same_timestamp", 10.0, 0.25, 1.0) == approx((3.5, 3.5, 2.0, 2.0))
    # adjacent: audio span 6 * 0.5 = 3 (to 7), video span 3 + 3 * 0.5 = 4.5 (to 5.5)
    assert windows("adjacent", 10.0, 0.5, 0.5) == approx((4.5, 5.0, 3.0, 5.0))
    # random: two independent one-window draws
    assert windows("random", 10.0, 0.0, 1.0, 1.0, 0.0) == approx((1.5, 8.0, 0.0, 8.0))
    # far_apart: gap 3, first window 3 * 0.5 = 1.5
    assert windows("far_apart", 10.0, 0.5) == approx((1.5, 4.5, 1.5, 4.5))


def test_far_apart_falls_back_under_twice_the_audio_window():
    """3 s: audio at 0 and at the end (1 s), video half the video apart, from [0, 1)."""
    assert windows("far_apart", 3.0, 0.5) == pytest.approx((0.5, 2.0, 0.0, 1.0))
    assert windows("far_apart", 2.0, 0.0) == pytest.approx((0.0, 1.0, 0.0, 0.0))


def test_the_reference_short_video_rule():
    """Above 1.1 s in both streams: spans start at 0 and read past the end when too long."""
    assert required_seconds("overlapped", audio_seconds=A, video_seconds=V) == 3.0
    assert (
        required_seconds("overlapped", audio_seconds=A, video_seconds=V, short_videos="reference")
        == 1.1
    )
    # 1.5 s: the 3 s audio span starts at 0; the 0.75 s video span in [0, 0.75) * 0.4 = 0.3
    assert windows("overlapped", 1.5, 0.7, 0.4, short_videos="reference") == pytest.approx(
        (0.3, 0.55, 0.0, 1.0)
    )
    # 1.2 s, far apart: the fallback, audio windows both at 0, video 0.6 apart from [0, 0.1)
    assert windows("far_apart", 1.2, 1.0, short_videos="reference") == pytest.approx(
        (0.1, 0.7, 0.0, 0.0)
    )
    with pytest.raises(ValueError, match=r"1\.00 s is shorter than the 1\.10 s"):
        windows("overlapped", 1.0, 0.5, 0.5, short_videos="reference")
    with pytest.raises(ValueError, match=r"unknown short_videos 'pad'; one of skip, reference"):
        windows("overlapped", 5.0, short_videos="pad")


def test_required_seconds_and_too_short():
    assert [required_seconds(m, audio_seconds=A, video_seconds=V) for m in MODES] == [
        2.0,
        3.0,
        4.0,
        2.0,
        2.0,
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
