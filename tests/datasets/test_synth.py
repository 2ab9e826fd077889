"""The synthetic motion content: what carries the class, and what does not."""

from __future__ import annotations

import numpy as np
import pytest

from crisscross.datasets.synth import SynthSpec, motion, synthesize


def _segment_and_frames(class_id: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    parts = motion.segments(4.0, rng)
    frames = motion.render_video(
        class_id, parts, seconds=4.0, fps=16.0, width=64, height=48, rng=rng
    )
    audio = motion.render_audio(
        class_id, parts, seconds=4.0, sample_rate=16000, channels=1, rng=rng
    )
    return parts, frames, audio[0]


def _object_track(frames: np.ndarray, segment: motion.Segment, fps: float = 16.0):
    """(height, area) of the object's pixels in each frame well inside `segment`."""
    first, last = int(np.ceil(segment.start * fps)) + 1, int(segment.end * fps) - 1
    heights, areas = [], []
    for frame in frames[first:last]:
        mask = np.abs(frame.astype(float) - segment.object_rgb).max(axis=-1) < 12
        ys = np.nonzero(mask)[0]
        heights.append(ys.mean())
        areas.append(mask.sum())
    return np.array(heights), np.array(areas)


@pytest.mark.parametrize("class_id", range(4))
def test_the_object_moves_as_fast_and_as_its_class_says_and_keeps_its_size(class_id):
    up = motion.speed(class_id)
    parts, frames, _ = _segment_and_frames(class_id)
    segment = parts[0]
    heights, areas = _object_track(frames, segment)
    assert np.sign(heights[0] - heights[-1]) == np.sign(up)  # rows count downwards: up is less
    seconds = (len(heights) - 1) / 16.0
    travel = (heights[0] - heights[-1]) / 48 / seconds * (segment.end - segment.start)
    assert travel == pytest.approx(up * motion.TRAVEL, abs=0.08)  # frame heights a segment
    assert areas.max() - areas.min() <= 0.25 * areas.mean()  # the edge of a disc, not growth


@pytest.mark.parametrize("class_id", range(4))
def test_the_sound_glides_as_fast_and_as_its_class_says(class_id):
    up = motion.speed(class_id)
    parts, _, wave = _segment_and_frames(class_id)
    t = np.arange(len(wave)) / 16000
    pitch, level, index = motion.audio_tracks(class_id, parts, t)
    for k in range(len(parts) - 1):  # within every whole segment
        inside = index == k
        assert np.all(np.sign(np.diff(np.log(pitch[inside]))) == np.sign(up))
        assert np.all(np.diff(level[inside]) == 0)  # the loudness is the segment's nuisance
        glide = np.log2(pitch[inside][-1] / pitch[inside][0])
        assert glide == pytest.approx(up * motion.GLIDE, abs=0.01)
    # the waveform's pitch follows the track: its spectral centroid rises or falls with it
    s = parts[0]

    def centroid(at: float) -> float:
        part = wave[int(at * 16000) : int((at + 0.1) * 16000)]
        power = np.abs(np.fft.rfft(part * np.hanning(part.size))) ** 2
        hz = np.fft.rfftfreq(part.size, 1 / 16000)
        return float((power * hz).sum() / power.sum())

    assert np.sign(centroid(s.end - 0.15) - centroid(s.start + 0.05)) == np.sign(up)


def test_every_nuisance_is_redrawn_at_each_cut_on_both_tracks():
    parts, frames, _ = _segment_and_frames(0)
    assert len(parts) >= 3 and parts[0].end == parts[1].start
    first, second = parts[0], parts[1]
    assert not np.allclose(first.object_rgb, second.object_rgb)
    assert first.pitch != second.pitch and first.loudness_db != second.loudness_db
    # the picture changes at the cut: the frame after it differs far more than the one before
    cut = int(np.ceil(first.end * 16.0))
    step = np.abs(np.diff(frames.astype(float), axis=0)).mean(axis=(1, 2, 3))
    assert step[cut - 1] > 3 * np.median(step)


def test_motion_content_has_four_classes_and_says_so():
    with pytest.raises(
        ValueError, match=r"motion content has 4 classes \(up fast.*content 'style'"
    ):
        SynthSpec(classes=5)
    with pytest.raises(ValueError, match="content must be one of motion, style"):
        SynthSpec(content="shapes")
    SynthSpec(classes=12, content="style")  # the old content keeps any number


def test_synth_writes_real_files_of_either_content(tmp_path):
    for content in ("motion", "style"):
        spec = SynthSpec(classes=2, per_class=1, seconds=2.0, content=content)
        assert synthesize("esc50", tmp_path / content, spec) == 2
        assert sorted(p.name for p in (tmp_path / content / "audio").iterdir()) == [
            "1-100000-A-0.wav",
            "1-101000-A-1.wav",
        ]
