"""Transforms: shapes and dtypes, one draw per clip, reproducibility, the log-mel front end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from crisscross.datasets.transforms import AudioAugment, VideoAugment, eval_clip, log_mel, normalize
from crisscross.datasets.transforms.audio import LOG_MEL_MEAN, LOG_MEL_STD


def gen(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_video_augment_shape_dtype_and_reproducibility():
    clip = torch.randint(0, 256, (8, 3, 128, 170), dtype=torch.uint8)
    out = VideoAugment()(clip, gen(1))
    assert out.shape == (8, 3, 112, 112) and out.dtype == torch.uint8
    assert torch.equal(out, VideoAugment()(clip, gen(1)))
    assert not torch.equal(out, VideoAugment()(clip, gen(2)))


def test_one_parameter_draw_per_clip():
    frame = torch.randint(0, 256, (1, 3, 96, 128), dtype=torch.uint8)
    clip = frame.expand(8, -1, -1, -1).contiguous()  # eight identical frames
    for seed in range(5):
        out = VideoAugment()(clip, gen(seed))
        assert all(torch.equal(out[0], out[t]) for t in range(8))


def test_eval_clip_and_normalize():
    clip = torch.full((4, 3, 100, 200), 124, dtype=torch.uint8)
    view = eval_clip(clip, 112)
    assert view.shape == (4, 3, 112, 112)
    x = normalize(view.unsqueeze(0))
    assert x.shape == (1, 3, 4, 112, 112) and x.dtype == torch.float32
    assert x[0, 0].abs().max() < 0.01  # 124 is the ImageNet red mean


def test_log_mel_matches_the_reference_shape_and_normalisation():
    silence = log_mel(torch.zeros(32000))
    assert silence.shape == (1, 80, 201)
    # the reference's floor is float32's eps: log(1.19e-7) = -15.94, normalised -2.40
    expected = (np.log(np.finfo(np.float32).eps) - LOG_MEL_MEAN) / LOG_MEL_STD
    assert expected == pytest.approx(-2.40, abs=0.01)
    assert silence.mean().item() == pytest.approx(expected, rel=1e-4)
    tone = log_mel(torch.sin(torch.arange(32000) / 16000 * 2 * torch.pi * 1000))
    # Slaney scale: 1 kHz is 15 mel of 45.25 at 8 kHz, so the peak is filter 15 / 45.25 * 81 - 1 = 26
    # (an HTK scale would put it at 27.5)
    assert int(tone[0, :, 100].argmax()) == 26


def test_audio_augment_shape_and_reproducibility():
    wave = torch.randn(32000) * 0.1
    out = AudioAugment()(wave, gen(3))
    assert out.shape == (1, 80, 201) and torch.isfinite(out).all()
    assert torch.equal(out, AudioAugment()(wave, gen(3)))
    assert not torch.equal(out, AudioAugment()(wave, gen(4)))


def test_audio_augment_without_masks():
    """augment.freq_masks / time_masks 0 are valid settings: no mask, same crop and gain."""
    wave = torch.randn(16000)
    none = AudioAugment(freq_masks=0, time_masks=0)
    out = none(wave, gen(3))
    assert out.shape == (1, 80, 101) and torch.isfinite(out).all()
    assert none.param_count == 1 + 4
    only_time = AudioAugment(freq_masks=0)
    assert only_time(wave, gen(3)).shape == (1, 80, 101)


@pytest.mark.parametrize("op", ["brightness", "contrast", "saturation"])
def test_fused_colour_steps_match_torchvision(op, monkeypatch):
    import torchvision.transforms.v2.functional as TF

    from crisscross.datasets.transforms import video as V

    x = torch.rand(4, 3, 24, 24) * 120 + 60  # mid-range: no clamping in either version
    index, factor = {"brightness": 0, "contrast": 1, "saturation": 2}[op], 1.3
    # force a jitter of only this op with this factor: draws give the factor, order puts it first
    strength = [0.0, 0.0, 0.0, 0.0]
    strength[index] = 0.3
    monkeypatch.setattr(V, "_uniform", lambda g, lo, hi: hi if hi > 1 else 1.0 if lo > 0 else 0.0)
    matrix, offset = V._colour_jitter(x.mean(dim=(-2, -1)), tuple(strength), gen())
    ours = torch.einsum("ij,tjhw->tihw", matrix, x) + offset[:, :, None, None]
    reference = getattr(TF, f"adjust_{op}")(x / 255, factor) * 255
    assert (ours - reference).abs().max() < 0.01


def test_hue_rotation_keeps_grey_and_luma():
    from crisscross.datasets.transforms import video as V

    grey = torch.full((1, 3, 4, 4), 90.0)
    for turn in (0.1, -0.2):
        rotation = torch.tensor(
            [
                [1.0, 0, 0],
                [0, np.cos(2 * np.pi * turn), -np.sin(2 * np.pi * turn)],
                [0, np.sin(2 * np.pi * turn), np.cos(2 * np.pi * turn)],
            ],
            dtype=torch.float32,
        )
        step = V.YIQ_TO_RGB @ rotation @ V.RGB_TO_YIQ
        assert torch.allclose(torch.einsum("ij,tjhw->tihw", step, grey), grey, atol=1e-3)
        colour = torch.tensor([200.0, 40.0, 90.0])
        assert ((step @ colour) @ V.LUMA).item() == pytest.approx(
            (colour @ V.LUMA).item(), abs=0.05
        )


def test_separable_blur_matches_torchvision():
    import torchvision.transforms.v2.functional as TF

    from crisscross.datasets.transforms.video import _blur

    x = torch.rand(2, 3, 30, 40) * 255
    assert (_blur(x, 11, 1.3) - TF.gaussian_blur(x, [11, 11], [1.3, 1.3])).abs().max() < 1e-3


def test_augment_strength_defaults_are_the_papers_and_scale_as_configured():
    from crisscross.config import load_config
    from crisscross.datasets.transforms import AugmentStrength
    from crisscross.trainers.builders import clip_spec

    assert AugmentStrength().video(112) == VideoAugment(size=112)
    assert AugmentStrength().audio(sample_rate=16000, n_mels=80) == AudioAugment()
    config = load_config(
        Path(__file__).resolve().parents[2] / "experiments" / "pretext" / "quickstart.yaml",
        {"augment.jitter_strength": 0.5, "augment.blur_p": 0.0, "augment.volume_jitter": 0.1},
    )
    spec = clip_spec(config)
    video = spec.augment.video(spec.crop_size)
    assert video.jitter == pytest.approx((0.2, 0.2, 0.2, 0.1)) and video.blur_p == 0.0
    assert spec.augment.audio(sample_rate=16000, n_mels=80).volume == pytest.approx((0.9, 1.1))
    assert spec.augment.audio(sample_rate=16000, n_mels=80).time_warp == 0  # off in pretraining
    warped = clip_spec(load_config(config_path(), {"augment.time_warp": 20}))
    aug = warped.augment.audio(sample_rate=16000, n_mels=80)
    wave = torch.randn(32000) * 0.1
    out = aug(wave, gen(5))
    assert aug.time_warp == 20 and out.shape == (1, 80, 201)
    assert not torch.equal(out, AudioAugment()(wave, gen(5)))


def config_path():
    return Path(__file__).resolve().parents[2] / "experiments" / "pretext" / "quickstart.yaml"


def test_batched_audio_crop_is_bicubic_interpolation_of_each_box():
    """The crop-and-resize as interpolation matrices equals F.interpolate on each crop."""
    import torch.nn.functional as F

    from crisscross.datasets.transforms.audio import _random_resized_crop

    spec = torch.randn(5, 1, 80, 201)
    boxes = torch.tensor(
        [[0, 0, 80, 201], [3, 40, 60, 150], [0, 100, 1, 1], [10, 5, 70, 290], [79, 300, 1, 1]],
        dtype=torch.float32,
    )
    out = _random_resized_crop(spec, (1.0, 1.5), boxes)
    board = torch.zeros(5, 1, 80, 301)
    board[..., 50:251] = spec
    for b, (i, j, h, w) in enumerate(boxes.long().tolist()):
        crop = board[b : b + 1, :, i : i + h, j : j + w]
        expected = F.interpolate(crop, size=(80, 201), mode="bicubic", align_corners=True)
        assert torch.allclose(out[b], expected[0], atol=1e-4), b


def test_batched_photometric_gives_each_clip_its_own_augmentation():
    from crisscross.datasets.transforms.video import photometric

    aug = VideoAugment(size=32)
    clips = torch.randint(0, 256, (4, 8, 3, 32, 32), dtype=torch.uint8)
    params = torch.stack([aug.draw(gen(seed)) for seed in range(4)])
    together = photometric(clips, params)
    for b in range(4):
        alone = photometric(clips[b : b + 1], params[b : b + 1])[0]
        assert (together[b].int() - alone.int()).abs().max() <= 1
    assert not torch.equal(together[0], photometric(clips[:1], params[1:2])[0])
