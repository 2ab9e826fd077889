"""Decoding windows: the right frames by timestamp, aligned audio, rotation, formats, URIs, errors."""

from __future__ import annotations

import os

import av
import numpy as np
import pytest
import torch

from crisscross.datasets.decode import DecodeError, DecodeTimeoutError, read_clip, read_npy_audio
from crisscross.datasets.media import write_av
from tests.datasets.conftest import audio_for, clip


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A 4 s, 25 fps clip with a 440 Hz tone at 44.1 kHz stereo, and every decoded frame."""
    path = tmp_path_factory.mktemp("decode") / "ref.mp4"
    video, *_ = clip(4.0, size=(96, 64))
    t = np.arange(4 * 44100) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    write_av(
        path, video, fps=25, audio_CN=np.stack([tone, tone]), sample_rate=44100, keyframe_every=2.0
    )
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return str(path), frames


def nearest(frames, picture):
    return int(np.argmin([np.abs(f.astype(int) - picture.astype(int)).mean() for f in frames]))


def test_frames_at_16_fps_are_the_latest_at_or_before_each_time(reference):
    path, frames = reference
    times = [1.03 + k / 16 for k in range(12)] + [
        0.0,
        2.5,
        3.99,
        7.0,
    ]  # across a keyframe, past the end
    got, _ = read_clip(path, frame_times=times)
    assert [nearest(frames, g) for g in got] == [min(int(t * 25 + 1e-6), 99) for t in times]


def test_resize_keeps_the_aspect_ratio(reference):
    got, _ = read_clip(reference[0], frame_times=[1.0], short_side=32)
    assert got.shape == (1, 32, 48, 3)


def test_audio_is_resampled_to_16k_mono_and_aligned(reference):
    _, (audio,) = read_clip(reference[0], audio_spans=[(1.0, 2.0)], sample_rate=16000)
    assert audio.shape == (32000,) and audio.dtype == np.float32
    expected = np.sin(2 * np.pi * 440 * (1.0 + np.arange(32000) / 16000))
    lags = range(-80, 81)  # 5 ms either way
    score = [np.dot(audio[2000:30000], np.roll(expected, lag)[2000:30000]) for lag in lags]
    assert abs(lags[int(np.argmax(score))]) <= 80
    assert np.corrcoef(audio[2000:30000], expected[2000:30000])[0, 1] > 0.95


@pytest.mark.parametrize("start", [1.0, 1.37, 2.5])
def test_a_span_lands_on_the_samples_a_whole_file_read_gives(tmp_path, start):
    """A span resampled from the frame a seek lands on must sit on the grid of the whole file's
    resampling, not up to half an output sample (31 us) off it: at 3.5 kHz that offset alone
    would change samples by up to 0.35 of the tone's amplitude."""
    t = np.arange(4 * 44100) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 3500 * t)
    video, *_ = clip(4.0, size=(32, 32))
    write_av(tmp_path / "t.mp4", video, fps=25, audio_CN=np.stack([tone, tone]), sample_rate=44100)
    _, (whole,) = read_clip(str(tmp_path / "t.mp4"), audio_spans=[(0.0, 4.0)])
    _, (span,) = read_clip(str(tmp_path / "t.mp4"), audio_spans=[(start, 1.0)])
    first = round(start * 16000)
    assert np.abs(span - whole[first : first + 16000]).max() < 0.02


def test_audio_past_the_end_is_zero_padded(reference):
    _, (audio,) = read_clip(reference[0], audio_spans=[(3.0, 2.0)], sample_rate=16000)
    assert np.abs(audio[:15000]).max() > 0.3 and not audio[16400:].any()


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (44100, 2), (48000, 6)])
def test_audio_formats(tmp_path, rate, channels):
    video, style, events, rng = clip(2.0)
    path = tmp_path / "a.mp4"
    write_av(
        path, video, audio_CN=audio_for(style, events, rng, 2.0, rate, channels), sample_rate=rate
    )
    _, (audio,) = read_clip(str(path), audio_spans=[(0.5, 1.0)], sample_rate=16000)
    assert audio.shape == (16000,) and 0.05 < np.abs(audio).max() <= 1.0


def test_rotated_video_comes_out_upright(tmp_path):
    video, *_ = clip(1.0, size=(96, 64))
    write_av(tmp_path / "r.mp4", video, rotation=90)
    got, _ = read_clip(str(tmp_path / "r.mp4"), frame_times=[0.5])
    assert got.shape == (1, 96, 64, 3)  # stored 96 wide, shown 64 wide
    straight, _ = read_clip(str(tmp_path / "r.mp4"), frame_times=[0.5], short_side=None)
    assert np.abs(np.rot90(straight[0], -1).astype(int) - video[12].astype(int)).mean() < 12


def test_variable_frame_rate_follows_timestamps(tmp_path):
    video, *_ = clip(2.0)
    times = np.cumsum(np.r_[0.0, np.random.default_rng(3).uniform(0.01, 0.06, len(video) - 1)])
    write_av(tmp_path / "v.mp4", video, frame_times=times)
    wanted = [0.3, 0.8, 1.2]
    got, _ = read_clip(str(tmp_path / "v.mp4"), frame_times=wanted)
    expected = [int(np.searchsorted(np.round(times, 3), t, side="right") - 1) for t in wanted]
    assert [nearest(video, g) for g in got] == expected


def test_prepared_npy_audio_reads_the_same_samples(tmp_path):
    samples = (np.sin(np.arange(48000) / 7.0) * 20000).astype(np.int16)
    np.save(tmp_path / "a.npy", samples)
    got = read_npy_audio(str(tmp_path / "a.npy"), 1.0, 1.0, sample_rate=16000)
    assert np.array_equal(got, samples[16000:32000] / 32768.0)
    tail = read_npy_audio(f"file://{tmp_path}/a.npy", 2.5, 1.0, sample_rate=16000)
    assert np.array_equal(tail[:8000], samples[40000:] / 32768.0) and not tail[8000:].any()


def test_a_filesystem_uri_reads_like_a_path(reference):
    path, _ = reference
    local = read_clip(path, frame_times=[1.0, 1.5], audio_spans=[(1.0, 1.0)])
    remote = read_clip(f"file://{path}", frame_times=[1.0, 1.5], audio_spans=[(1.0, 1.0)])
    assert np.array_equal(local[0], remote[0]) and np.array_equal(local[1][0], remote[1][0])


def test_errors_name_the_file(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    with pytest.raises(DecodeError, match=r"junk\.mp4: InvalidDataError"):
        read_clip(str(junk), frame_times=[0.0])
    video, *_ = clip(1.0)
    write_av(tmp_path / "silent.mp4", video)
    with pytest.raises(DecodeError, match=r"silent\.mp4: no audio stream"):
        read_clip(str(tmp_path / "silent.mp4"), audio_spans=[(0.0, 1.0)])


def test_a_decode_past_its_time_limit_stops_with_a_timeout_naming_the_file(reference):
    path, _ = reference
    times, spans = [0.5, 1.5, 2.5, 3.5], [(1.0, 2.0)]
    plain = read_clip(path, frame_times=times, audio_spans=spans)
    limited = read_clip(path, frame_times=times, audio_spans=spans, limit=60.0)
    assert np.array_equal(plain[0], limited[0]) and np.array_equal(plain[1][0], limited[1][0])
    for kwargs in ({"frame_times": times}, {"audio_spans": spans}):  # each loop checks it
        with pytest.raises(DecodeTimeoutError) as raised:
            read_clip(path, limit=1e-6, **kwargs)
        assert str(raised.value).startswith(f"{path}: ")
        assert "took over the time limit of 1e-06 s" in str(raised.value)
    again = read_clip(path, frame_times=times)  # a limit ends with its call
    assert np.array_equal(plain[0], again[0])


def test_containers_are_closed(reference):
    path, _ = reference
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(30):
        read_clip(path, frame_times=[1.0], audio_spans=[(0.0, 1.0)])
    with pytest.raises(DecodeError):
        read_clip(path + ".missing", frame_times=[1.0])
    assert len(os.listdir("/proc/self/fd")) <= before


def test_overlapping_spans_are_decoded_once_and_match_separate_reads(reference):
    path, _ = reference
    _, (a1, a2) = read_clip(path, audio_spans=[(1.0, 2.0), (2.0, 2.0)], sample_rate=16000)
    _, (b2,) = read_clip(path, audio_spans=[(2.0, 2.0)], sample_rate=16000)
    assert a1.shape == a2.shape == (32000,)
    assert np.array_equal(a1[16000:], a2[:16000])  # one decode, sliced twice
    # a separate read rounds its start to the 16 kHz grid on its own: up to half a sample (31 us),
    # 0.09 rad of a 440 Hz tone, so cos = 0.996 at worst
    assert np.corrcoef(a2[1000:-1000], b2[1000:-1000])[0, 1] > 0.995


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_resampling_equals_torchaudios(rate):
    """The grouped polyphase resampler gives torchaudio's output, at every length."""
    import torchaudio

    from crisscross.datasets.decode import resample

    rng = np.random.default_rng(rate)
    for length in (1, 7, 1000, rate * 3 + 17):
        wave = rng.standard_normal(length).astype(np.float32)
        expected = torchaudio.functional.resample(torch.from_numpy(wave), rate, 16000).numpy()
        got = resample(wave, rate, 16000)
        assert got.shape == expected.shape and got.dtype == np.float32
        assert np.allclose(got, expected, atol=1e-4), (length, np.abs(got - expected).max())


def test_a_missing_or_damaged_prepared_audio_file_is_a_decode_error(tmp_path):
    with pytest.raises(DecodeError, match=r"gone\.npy: FileNotFoundError"):
        read_npy_audio(str(tmp_path / "gone.npy"), 0.0, 1.0, sample_rate=16000)
    (tmp_path / "cut.npy").write_bytes(b"\x93NUMPY")
    with pytest.raises(DecodeError, match=r"cut\.npy: ValueError"):
        read_npy_audio(str(tmp_path / "cut.npy"), 0.0, 1.0, sample_rate=16000)


def _tone_wav(path, rate: int, hz: float, seconds: float) -> None:
    t = np.arange(round(seconds * rate)) / rate
    samples = (0.5 * np.sin(2 * np.pi * hz * t) * 32767).astype(np.int16)[None, :]
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.mark.parametrize("rate", [8001, 44101, 96001, 7919])
def test_an_odd_sample_rate_is_resampled_with_a_small_kernel_and_keeps_its_pitch(tmp_path, rate):
    """A rate prime to 16 kHz would build a dense kernel of hundreds of MB (16,000 phases); it
    is read as a rate within 0.2 % instead, and a 1 kHz tone stays within 0.2 % of 1 kHz."""
    from crisscross.datasets.decode import MAX_PHASES, _Resampler, kernel_rate

    used = kernel_rate(rate, 16000)
    assert used != rate and abs(used - rate) <= 0.002 * rate
    kernel = _Resampler.get(used, 16000)
    assert kernel.phases <= MAX_PHASES
    assert sum(block.numel() for *_, block in kernel.blocks) < 2_000_000  # floats: under 8 MB
    path = tmp_path / f"tone{rate}.wav"
    _tone_wav(path, rate, 1000.0, 3.0)
    _, (audio,) = read_clip(str(path), audio_spans=[(1.0, 1.0)], sample_rate=16000)
    assert audio.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(audio.size), n=16 * audio.size))
    peak = np.argmax(spectrum) * 16000 / (16 * audio.size)
    assert abs(peak - 1000.0) < 2.0, peak


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 96000])
def test_the_common_sample_rates_are_resampled_exactly(rate):
    from crisscross.datasets.decode import kernel_rate

    assert kernel_rate(rate, 16000) == rate


def test_streamed_frames_need_ascending_times_and_writing_them_needs_one_size(tmp_path):
    from crisscross.datasets.decode import iter_frames
    from crisscross.datasets.probe import open_media

    path = tmp_path / "v.mp4"
    write_av(path, np.zeros((8, 32, 48, 3), np.uint8), fps=8.0)
    with open_media(str(path)) as container, pytest.raises(ValueError, match="ascending"):
        next(iter_frames(container, [0.5, 0.25]))
    with open_media(str(path)) as container:
        assert [f.shape for f in iter_frames(container, [0.0, 0.5, 5.0])] == [(32, 48, 3)] * 3
    sizes = (np.zeros((32, 48, 3), np.uint8), np.zeros((32, 40, 3), np.uint8))
    with pytest.raises(ValueError, match=r"w\.mp4: frame 1 is 40x32, the first 48x32"):
        write_av(tmp_path / "w.mp4", iter(sizes), fps=8.0)
    with pytest.raises(ValueError, match="no video frames"):
        write_av(tmp_path / "e.mp4", iter(()), fps=8.0)


def test_streamed_frames_are_those_read_at_once_with_frames_held_and_past_the_end(tmp_path):
    """16 fps from an 8 fps source: each source frame is held for two times, and the last one
    for the times past the end, as `read_frames` gives them."""
    from crisscross.datasets.decode import iter_frames, read_frames
    from crisscross.datasets.probe import open_media

    path = tmp_path / "v.mp4"
    video = np.random.default_rng(0).integers(0, 255, (16, 32, 48, 3), dtype=np.uint8)
    write_av(path, video, fps=8.0, keyframe_every=0.5)
    times = np.arange(0.0, 2.5, 1 / 16)  # the video ends at 2 s
    with open_media(str(path)) as container:
        streamed = np.stack(list(iter_frames(container, times, short_side=24)))
    with open_media(str(path)) as container:
        whole = read_frames(container, times, short_side=24)
    assert streamed.shape == whole.shape == (40, 24, 36, 3)
    assert np.array_equal(streamed, whole)
    assert np.array_equal(streamed[2], streamed[3]) and not np.array_equal(streamed[1], streamed[2])
    assert all(np.array_equal(streamed[-1], f) for f in streamed[32:])  # held past the end
