"""The log-mel front end against an independent computation of the reference's definition.

The reference (pritamqu/CrissCross, librosa 0.8.1) computes `mfb @ (|stft|^2 + eps64)` with
`librosa.stft` at its defaults (centred, reflect padding, periodic Hann) and Slaney mel filters,
then `log(. + torch.finfo().eps)` and normalises by (-5.3688107, 4.410007). librosa 0.10 changed
`stft`'s default padding to zeros, so the reflect padding of 0.8.1 is asked for by name here.
"""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from crisscross.datasets.transforms.audio import log_mel

SR, SECONDS = 16000, 2


def reference_log_mel(wave: np.ndarray) -> np.ndarray:
    mfb = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=80, fmin=0.0, fmax=None)
    spec = librosa.stft(wave, n_fft=1024, hop_length=160, pad_mode="reflect")
    mel = mfb @ (np.abs(spec) ** 2 + np.finfo(float).eps)
    return (np.log(mel + np.finfo(np.float32).eps) - -5.3688107) / 4.410007


def _clips() -> dict[str, np.ndarray]:
    g = np.random.default_rng(0)
    t = np.arange(SR * SECONDS) / SR
    sweep = 0.5 * np.sin(2 * np.pi * (200 * t + 1800 * t**2))
    onset = np.where(t < 0.05, 0.9 * np.sign(np.sin(2 * np.pi * 440 * t)), 0.0)  # loud at the edge
    return {
        "silence": np.zeros(SR * SECONDS),
        "noise": g.normal(0, 0.1, SR * SECONDS).clip(-1, 1),
        "quiet noise": g.normal(0, 1e-4, SR * SECONDS),
        "tone": 0.8 * np.sin(2 * np.pi * 1000 * t),
        "sweep": sweep,
        "edge onset": onset,
    }


@pytest.mark.parametrize("name", list(_clips()))
def test_log_mel_matches_the_reference_definition(name):
    wave = _clips()[name].astype(np.float32)
    ours = log_mel(torch.from_numpy(wave))[0].double().numpy()
    theirs = reference_log_mel(wave)
    assert ours.shape == theirs.shape == (80, 201)
    assert np.abs(ours - theirs).max() < 1e-4, name


def test_silence_sits_at_the_reference_floor():
    ours = log_mel(torch.zeros(SR * SECONDS))
    assert ours.min().item() == pytest.approx(-2.40, abs=0.005)
    assert ours.max().item() == pytest.approx(-2.40, abs=0.005)


def test_the_edges_are_reflect_padded():
    """A loud start: zero padding would halve the first frame's energy; reflect does not."""
    wave = _clips()["edge onset"].astype(np.float32)
    ours = log_mel(torch.from_numpy(wave))[0].numpy()
    zero_padded = librosa.stft(wave, n_fft=1024, hop_length=160, pad_mode="constant")
    mfb = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=80)
    zeros = (
        np.log(mfb @ np.abs(zero_padded) ** 2 + np.finfo(np.float32).eps) + 5.3688107
    ) / 4.410007
    assert np.abs(ours[:, 0] - zeros[:, 0]).max() > 0.1
    assert np.abs(ours[:, 0] - reference_log_mel(wave)[:, 0]).max() < 1e-4


def _reference_time_warp(spec_1FT: torch.Tensor, c: int, w: int) -> torch.Tensor:
    """SpecAugment's time warp as the reference runs it: F.interpolate on each part, bicubic."""
    x = spec_1FT.transpose(1, 2)[:, None]  # (1, 1, T, F)
    t = x.shape[2]
    left = torch.nn.functional.interpolate(
        x[:, :, :c], (w, x.shape[3]), mode="bicubic", align_corners=False
    )
    right = torch.nn.functional.interpolate(
        x[:, :, c:], (t - w, x.shape[3]), mode="bicubic", align_corners=False
    )
    return torch.cat([left, right], dim=2)[:, 0].transpose(1, 2)


def test_time_warp_matches_interpolating_each_part():
    from crisscross.datasets.transforms.audio import time_warp

    spec = log_mel(torch.from_numpy(_clips()["sweep"].astype(np.float32)))  # (1, 80, 201)
    batch = spec.expand(3, 1, 80, 201).clone()
    draws = [(20, 1), (100, 119), (180, 200)]  # c in [W, T - W), w in [c - W + 1, c + W]
    c, w = (torch.tensor([float(d[k]) for d in draws]) for k in (0, 1))
    ours = time_warp(batch, c, w)
    for i, (ci, wi) in enumerate(draws):
        expected = _reference_time_warp(spec, ci, wi)
        assert (ours[i] - expected).abs().max() < 1e-4, (ci, wi)
    assert not torch.allclose(ours[1], spec, atol=1e-2)  # it does warp
    same = time_warp(batch, torch.full((3,), 100.0), torch.full((3,), 100.0))
    assert torch.allclose(same, batch, atol=1e-6)  # c = w: the identity


def test_time_warp_draws_follow_specaugment():
    from crisscross.datasets.transforms.audio import AudioAugment

    aug = AudioAugment(time_warp=20)
    assert aug.param_count == AudioAugment().param_count + 2
    g = np.random.default_rng(0)
    pairs = [aug.draw(g, frames=201)[1:3].tolist() for _ in range(500)]
    centres = [c for c, _ in pairs]
    assert min(centres) >= 20 and max(centres) <= 180
    assert all(c - 19 <= w <= c + 20 for c, w in pairs)
    assert aug.draw(g, frames=40)[1:3].tolist() == [20, 20]  # T <= 2W: no warp
