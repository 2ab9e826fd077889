"""The reference code's video augmentation quirks against hand computation and Pillow; the
switches that pick them; the clean versions unchanged.

REFERENCE.md section 4: the reference blurs with sigma=(0.1, 2.0) read as (sigma_x, sigma_y),
multiplies a cutout square by the first normalised frame's mean, and jitters colour through PIL.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from crisscross.config import ConfigError, ExperimentConfig, apply_overrides, load_config
from crisscross.datasets.transforms import AugmentStrength, VideoAugment, normalize, pil_colour
from crisscross.datasets.transforms.video import (
    CUT_BOX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PHOTO,
    _blur,
    photometric,
    scale_cutout,
    to_model_input,
)

CLEAN = {"blur_mode": "isotropic", "cutout_mode": "fill", "colour_mode": "fast"}
REFERENCE = {"blur_mode": "reference", "cutout_mode": "reference", "colour_mode": "reference"}
GOLDEN = Path(__file__).with_name("video_clean_golden.npz")
STEPS = ("brightness", "contrast", "saturation", "hue")  # PHOTO's order indices 0..3


def gen(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def params(**values: float) -> torch.Tensor:
    """A (1, len(PHOTO)) draw with every step off but those given."""
    p = torch.zeros(1, len(PHOTO))
    for name, value in values.items():
        p[0, PHOTO.index(name)] = value
    return p


def gaussian(sigma: float, kernel: int = 11) -> list[float]:
    """torchvision's 1-d kernel, in plain float64."""
    taps = [math.exp(-0.5 * (k / sigma) ** 2) for k in range(-(kernel // 2), kernel // 2 + 1)]
    return [t / sum(taps) for t in taps]


# --- blur -------------------------------------------------------------------------------------


def test_the_reference_blur_of_a_delta_is_two_gaussians_vertical_2_horizontal_0_1():
    down, across = gaussian(2.0), gaussian(0.1)
    # by hand: sum_k exp(-k^2 / 8), k = -5..5, is 4.98589, so the centre tap is 0.20057; at sigma
    # 0.1 the next tap is exp(-50) / 1 = 2e-22: a blur down only
    assert down[5] == pytest.approx(1 / 4.98589, abs=1e-5) and across[5] == pytest.approx(1.0)
    assert across[4] == pytest.approx(math.exp(-50), rel=1e-6)
    x = torch.zeros(1, 3, 23, 29)
    x[..., 11, 14] = 1000.0
    ours = _blur(x, 11, 0.1, 2.0)
    expected = torch.zeros(23, 29, dtype=torch.float64)
    expected[6:17, 9:20] = 1000.0 * torch.outer(torch.tensor(down), torch.tensor(across))
    assert torch.allclose(ours[0, 1].double(), expected, atol=1e-3)
    assert ours[0, 0, 6, 14] > 1 and ours[0, 0, 11, [13, 15]].abs().max() < 1e-3  # down only
    # the reference's call, torchvision's functional blur with kernel (11, 11), sigma (0.1, 2.0)
    assert torch.allclose(ours, TF.gaussian_blur(x, [11, 11], [0.1, 2.0]), atol=1e-3)


def test_the_reference_blur_reflects_at_the_border_like_torchvision():
    x = torch.zeros(1, 3, 16, 16)
    x[..., 1, 0] = 255.0  # a delta one row from the top, on the left edge
    down, across = gaussian(2.0), gaussian(0.1)

    def reflect(i: int, n: int) -> int:  # torch's "reflect": -1 -> 1, n -> n - 2
        return -i if i < 0 else 2 * (n - 1) - i if i >= n else i

    expected = torch.zeros(16, 16, dtype=torch.float64)
    for i in range(16):
        for j in range(16):
            expected[i, j] = sum(
                down[k] * across[m] * float(x[0, 0, reflect(i + k - 5, 16), reflect(j + m - 5, 16)])
                for k in range(11)
                for m in range(11)
            )
    # row 0 reads rows 1 (offset +1) and -1, which reflects to 1 again; row 3 reads 1 at offset
    # -2 and -1 at offset -4; a zero padding would count the delta once
    assert expected[0, 0] == pytest.approx(255 * (down[4] + down[6]), rel=1e-9)
    assert expected[3, 0] == pytest.approx(255 * (down[3] + down[1]), rel=1e-9)
    ours = _blur(x, 11, 0.1, 2.0)
    assert torch.allclose(ours[0, 0].double(), expected, atol=1e-3)
    assert torch.allclose(ours, TF.gaussian_blur(x, [11, 11], [0.1, 2.0]), atol=1e-3)


def test_the_reference_blur_is_drawn_fixed_and_the_isotropic_one_random():
    reference, isotropic = VideoAugment(**REFERENCE), VideoAugment(**CLEAN)
    sx, sy, blur = PHOTO.index("sigma_x"), PHOTO.index("sigma_y"), PHOTO.index("blur")
    drawn = [reference.draw(gen(s)) for s in range(200)]
    on = [p for p in drawn if p[blur] == 1]
    assert 60 < len(on) < 140  # p 0.5
    assert all(p[sx] == np.float32(0.1) and p[sy] == np.float32(2.0) for p in on)
    sigmas = [(float(p[sx]), float(p[sy])) for p in map(isotropic.draw, map(gen, range(200)))]
    sigmas = [s for s in sigmas if s != (0.0, 0.0)]
    assert all(a == b and 0.1 <= a <= 2.0 for a, b in sigmas) and len({a for a, _ in sigmas}) > 50


def test_the_reference_blur_truncates_to_uint8_as_the_pil_round_trip():
    """The reference blurs PIL images through to_tensor and back with mul(255).byte(): floor."""
    clip = torch.zeros(1, 1, 3, 23, 29, dtype=torch.uint8)
    clip[..., 11, 14] = 255
    p = params(blur=1, sigma_x=0.1, sigma_y=2.0, kernel=11)
    fast = photometric(clip, p)[0, 0, 0, 6:17, 14].double()
    p[0, PHOTO.index("reference_colour")] = 1
    truncated = photometric(clip, p)[0, 0, 0, 6:17, 14].double()
    exact = 255 * torch.tensor(gaussian(2.0), dtype=torch.float64)
    assert ((exact - exact.round()).abs() > 0.01).all()  # no value at a rounding edge
    assert torch.equal(fast, exact.round()) and torch.equal(truncated, exact.floor())


# --- cutout -----------------------------------------------------------------------------------


def ramp_clip() -> torch.Tensor:
    """(1, 2, 3, 12, 12) uint8, every pixel of both frames different."""
    t, c, h, w = torch.meshgrid(*map(torch.arange, (2, 3, 12, 12)), indexing="ij")
    return ((10 * h + 7 * w + 40 * c + 25 * t) % 256).to(torch.uint8)[None]


def by_hand_normalised(clip: torch.Tensor) -> torch.Tensor:
    """(2, 3, 12, 12) float64: x / 255, less the ImageNet mean, over its std (the reference's)."""
    x = clip[0].double() / 255
    mean, std = (
        torch.tensor(v, dtype=torch.float64).view(3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD)
    )
    return (x - mean) / std


def test_the_reference_cutout_multiplies_a_border_crossing_square_by_the_first_frames_mean():
    clip = ramp_clip()
    # side 6 around row 1, column 12: rows -2..3 and columns 9..14, clipped to rows 0..3 and
    # columns 9..11 of the 12 x 12 frame
    p = params(cut_scale=1, cut_side=6, cut_top=-2, cut_left=9)
    got = to_model_input(clip, p)[0].transpose(0, 1).double()  # (T, 3, H, W)
    x = by_hand_normalised(clip)
    v = x[0].mean()  # the first frame, over its channels and pixels
    assert abs(v) > 0.1  # a multiplication that shows
    expected = x.clone()
    expected[:, :, 0:4, 9:12] *= v
    assert torch.allclose(got, expected, atol=1e-5)
    changed = (got - x).abs() > 1e-4
    assert changed.sum() == 2 * 3 * 4 * 3  # only that square, in both frames and all channels
    # the decode workers' route: photometric's uint8 output, normalised, then scale_cutout
    later = scale_cutout(normalize(photometric(clip, p)), p[:, CUT_BOX])
    assert torch.allclose(later[0].transpose(0, 1).double(), expected, atol=1e-5)


def test_the_fill_cutout_is_unchanged_and_side_0_cuts_nothing():
    clip = ramp_clip()
    filled = photometric(clip, params(cut_side=3, cut_top=2, cut_left=4))[0]
    fill = torch.tensor([124, 116, 104], dtype=torch.uint8).view(3, 1, 1)  # the mean colour
    assert (filled[:, :, 2:5, 4:7] == fill).all()
    assert torch.equal(filled[:, :, 5:], clip[0, :, :, 5:])
    none = to_model_input(clip, params(cut_scale=1, cut_side=0, cut_top=5, cut_left=5))
    assert torch.allclose(none[0].transpose(0, 1).double(), by_hand_normalised(clip), atol=1e-5)


def test_the_reference_cutout_draws_even_sides_around_uniform_centres_across_the_border():
    aug = VideoAugment(size=32, **REFERENCE)
    draws = torch.stack([aug.draw(gen(s)) for s in range(3000)])
    side, top, left = draws[:, CUT_BOX].long().T
    assert set(side.tolist()) == set(range(0, 21, 2))  # randint(1, 20) // 2 * 2
    assert (side == 0).float().mean() == pytest.approx(1 / 20, abs=0.015)  # randint gave 1
    row, col = top + side // 2, left + side // 2  # the centres: anywhere in the frame
    assert set(row.tolist()) == set(col.tolist()) == set(range(32))
    assert (top < 0).any() and (top + side > 32).any()
    assert (draws[:, PHOTO.index("cut_scale")] == 1).all()
    # the square is the reference's slice mask[clip(y - l // 2): clip(y + l // 2), ...] of the
    # numbers it draws, length then y then x (with the other steps off, the only draws)
    from crisscross.datasets.transforms.video import _square

    only_cutout = VideoAugment(size=32, jitter_p=0, gray_p=0, blur_p=0, **REFERENCE)
    for s in range(50):
        p, g = only_cutout.draw(gen(s)), gen(s)
        length, y, x = int(g.integers(1, 21)), int(g.integers(0, 32)), int(g.integers(0, 32))
        mask = np.zeros((32, 32), bool)
        rows = slice(int(np.clip(y - length // 2, 0, 32)), int(np.clip(y + length // 2, 0, 32)))
        cols = slice(int(np.clip(x - length // 2, 0, 32)), int(np.clip(x + length // 2, 0, 32)))
        mask[rows, cols] = True
        assert np.array_equal(_square(p[None, CUT_BOX], 32, 32)[0].numpy(), mask), s


# --- colour -----------------------------------------------------------------------------------


def pil_chain(frame: np.ndarray, p: torch.Tensor) -> np.ndarray:
    """One (H, W, 3) uint8 frame through torchvision's functional on PIL images, as the
    reference's ColorJitter and RandomGray call it: the steps in the drawn order, then "L"."""
    image = Image.fromarray(frame)
    if p[PHOTO.index("jitter")] == 1:
        for k in range(4):
            step = STEPS[int(p[PHOTO.index(f"order{k}")])]
            if step == "hue" and p[PHOTO.index("hue")] == 0:
                continue  # the reference's jitter has no hue step at a hue strength of 0
            image = getattr(TF, f"adjust_{step}")(image, float(p[PHOTO.index(step)]))
    if p[PHOTO.index("gray")] == 1:
        image = TF.rgb_to_grayscale(image)
    out = np.asarray(image)
    return np.repeat(out[..., None], 3, axis=-1) if out.ndim == 2 else out


def test_per_step_uint8_clipping_differs_from_clamping_at_the_end_by_hand():
    # left half (250, 240, 20), right half (20, 20, 20); brightness x1.5, then contrast x0.5
    frame = np.zeros((4, 8, 3), np.uint8)
    frame[:, :4], frame[:, 4:] = (250, 240, 20), (20, 20, 20)
    clip = torch.from_numpy(frame).permute(2, 0, 1)[None, None].contiguous()
    p = params(jitter=1, brightness=1.5, contrast=0.5, saturation=1, hue=0, order0=0, order1=1)
    p[0, PHOTO.index("order2")], p[0, PHOTO.index("order3")] = 2, 3
    # reference, by hand: brightness clips to (255, 255, 30) and (30, 30, 30); PIL's luma of those
    # is 229 and 30 ((255 * 19595 + 255 * 38470 + 30 * 7471 + 32768) >> 16 = 229), the frame's mean
    # int(129.5 + 0.5) = 130; contrast: 130 + 0.5 * (x - 130), truncated: 255 -> 192, 30 -> 80
    p[0, PHOTO.index("reference_colour")] = 1
    reference = photometric(clip, p)[0, 0].permute(1, 2, 0).numpy()
    assert reference[0, 0].tolist() == [192, 192, 80] and reference[0, 7].tolist() == [80, 80, 80]
    assert np.array_equal(reference, pil_chain(frame, p[0]))
    # clamped once at the end, by hand: (375, 360, 30) and 30 unclamped, mean luma
    # ((0.299 * 375 + 0.587 * 360 + 0.114 * 30) + 30) / 2 = 178.43; 0.5 x + 89.22, clamped
    p[0, PHOTO.index("reference_colour")] = 0
    fast = photometric(clip, p)[0, 0].permute(1, 2, 0).numpy()
    assert fast[0, 0].tolist() == [255, 255, 104] and fast[0, 7].tolist() == [104, 104, 104]


def test_the_reference_hue_is_pils_uint8_hsv_by_hand():
    # pure red, hue +0.1: PIL's H goes 0 -> int(25.5) = 25 of 255; back, 25 * 6 / 255 = 0.588 of
    # the first sector (red to yellow): green = round(255 * 0.588) = 150
    clip = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 1, 3, 1, 1).expand(1, 1, 3, 2, 2)
    p = params(jitter=1, brightness=1, contrast=1, saturation=1, hue=0.1, order0=3, order1=0)
    p[0, PHOTO.index("order2")], p[0, PHOTO.index("order3")] = 1, 2
    p[0, PHOTO.index("reference_colour")] = 1
    assert photometric(clip.contiguous(), p)[0, 0, :, 0, 0].tolist() == [255, 150, 0]
    p[0, PHOTO.index("reference_colour")] = 0  # YIQ rotation: another colour altogether
    assert photometric(clip.contiguous(), p)[0, 0, :, 0, 0].tolist() != [255, 150, 0]


def test_the_reference_hue_and_saturation_equal_pils_over_the_rgb_cube():
    """Every third level of each channel (636,056 colours): Pillow's HSV keeps hue and saturation
    in uint8 and mixes float and double, and one step less precise shows here."""
    levels = np.arange(0, 256, 3, dtype=np.uint8)
    cube = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(86 * 86, 86, 3)
    x = torch.from_numpy(cube).permute(2, 0, 1)[None, None].float()
    for step, factor in (("hue", -0.37), ("hue", 0.13), ("hue", 0.5), ("saturation", 1.33)):
        ours = getattr(pil_colour, step)(x.clone(), torch.tensor([factor]))
        pil = getattr(TF, f"adjust_{step}")(Image.fromarray(cube), float(np.float32(factor)))
        assert np.array_equal(ours[0, 0].permute(1, 2, 0).numpy(), np.asarray(pil)), (step, factor)


def test_the_reference_colour_equals_torchvisions_pil_functions_step_by_step():
    rng = np.random.default_rng(1)
    clips = rng.integers(0, 256, (6, 2, 20, 24, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:20, 0:24]
    clips[1, :] = np.stack([xx * 10, yy * 12, (xx + yy) * 5], -1).clip(0, 255)  # smooth
    clips[2, :, :, :12] = 255  # saturated: clipping after a step shows
    clips[3] = clips[3] // 32 * 32 + 7  # few levels
    x = torch.from_numpy(clips).permute(0, 1, 4, 2, 3).contiguous()  # (B, T, 3, H, W)
    aug = VideoAugment(size=24, gray_p=0.3, blur_p=0.0, cutout_max=0, **REFERENCE)
    checked = {"gray": 0, "hue first": 0, "hue last": 0}
    for seed in range(8):
        p = torch.stack([aug.draw(gen(10 * seed + b)) for b in range(6)])
        ours = photometric(x, p).permute(0, 1, 3, 4, 2).numpy()
        for b in range(6):
            for t in range(2):
                assert np.array_equal(ours[b, t], pil_chain(clips[b, t], p[b])), (seed, b, t)
            checked["gray"] += int(p[b, PHOTO.index("gray")])
            checked["hue first"] += int(p[b, PHOTO.index("order0")] == 3)
            checked["hue last"] += int(p[b, PHOTO.index("order3")] == 3)
    assert min(checked.values()) > 0, checked
    p[:, PHOTO.index("reference_colour")] = 0  # the same draws, the fast arithmetic
    fast = photometric(x, p).permute(0, 1, 3, 4, 2).numpy()
    assert np.abs(fast.astype(int) - ours.astype(int)).mean() > 2


# --- the switches -----------------------------------------------------------------------------


def test_the_switch_and_the_knobs_pick_each_steps_version():
    assert AugmentStrength().modes() == REFERENCE  # the default: the reference's
    assert AugmentStrength(reference_quirks=False).modes() == CLEAN
    mixed = AugmentStrength(reference_quirks=False, blur_mode="reference")
    assert mixed.modes() == CLEAN | {"blur_mode": "reference"}
    config = ExperimentConfig()
    assert config.augment.reference_quirks is True and config.augment.blur_mode is None
    clean = apply_overrides(config, {"augment.reference_quirks": False})
    assert AugmentStrength(**clean.augment.model_dump()).modes() == CLEAN
    # the override path keeps unset knobs unset, so the switch can be turned back
    again = apply_overrides(clean, {"augment.reference_quirks": True})
    assert AugmentStrength(**again.augment.model_dump()).modes() == REFERENCE
    one = apply_overrides(config, {"augment.colour_mode": "fast"})
    assert AugmentStrength(**one.augment.model_dump()).video(112).colour_mode == "fast"


def test_a_bad_mode_is_a_config_error_naming_the_key(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"^--set augment\.blur_mode=gaussian: augment\.blur_mode: Input should be 'reference' or 'isotropic'",
    ):
        apply_overrides(ExperimentConfig(), {"augment.blur_mode": "gaussian"})
    path = tmp_path / "exp.yaml"
    path.write_text("augment:\n  cutout_mode: zero\n")
    with pytest.raises(
        ConfigError, match=r"exp\.yaml: augment\.cutout_mode: Input should be 'reference' or 'fill'"
    ):
        load_config(path)
    with pytest.raises(
        ValueError, match=r"colour_mode must be one of \('reference', 'fast'\), not 'pil'"
    ):
        VideoAugment(colour_mode="pil")


def test_the_switch_changes_the_output():
    clip = torch.from_numpy(gen(5).integers(0, 256, (2, 3, 30, 40), dtype=np.uint8))
    for seed in range(3):
        clean = VideoAugment(size=24, **CLEAN)(clip, gen(seed))
        reference = VideoAugment(size=24, **REFERENCE)(clip, gen(seed))
        assert not torch.equal(clean, reference)


def test_the_clean_versions_give_the_output_from_before_the_switch():
    """video_clean_golden.npz was written by the augmentation before the reference versions were
    added (its only versions then); rewrite it on purpose only:

        CRISSCROSS_REWRITE_GOLDEN=1 .venv/bin/python -m pytest tests/datasets/test_video_quirks.py
    """
    clip = torch.from_numpy(gen(5).integers(0, 256, (2, 3, 30, 40), dtype=np.uint8))
    out = {}
    for s in range(6):  # seeds 0-3 always blur, so that the sigma draw is covered
        aug = VideoAugment(size=24, blur_p=1.0 if s < 4 else 0.5, **CLEAN)
        out[f"seed{s}"] = aug(clip, gen(s)).numpy()
    if os.environ.get("CRISSCROSS_REWRITE_GOLDEN"):
        np.savez_compressed(GOLDEN, **out)
        pytest.skip(f"rewrote {GOLDEN.name}")
    golden = np.load(GOLDEN)
    for key, got in out.items():
        diff = np.abs(got.astype(int) - golden[key].astype(int))
        # float order may differ across machines: a value may round to the next level
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, key


def test_a_decode_workers_batch_gets_its_reference_cutout_in_the_trainer():
    """`augment_on: decode` ships uint8 views and, for the reference cutout, each view's square;
    the trainer's `to_model_inputs` multiplies it in after normalising."""
    from crisscross.trainers.pretext_step import to_model_inputs

    clip = ramp_clip()
    box = torch.tensor([[6.0, -2.0, 9.0]])
    batch = {"v1": clip, "v1_cutout": box, "v2": clip, "a1": torch.zeros(1, 1, 4, 4)}
    batch["a2"] = batch["a1"]
    v1, v2, _, _ = to_model_inputs(batch, torch.device("cpu"))
    expected = by_hand_normalised(clip)
    assert torch.allclose(v2[0].transpose(0, 1).double(), expected, atol=1e-5)  # no square
    expected[:, :, 0:4, 9:12] *= expected[0].mean()
    assert torch.allclose(v1[0].transpose(0, 1).double(), expected, atol=1e-5)
