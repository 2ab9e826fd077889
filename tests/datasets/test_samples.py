"""The pretraining per-sample function: shapes in every mode, reproducibility, prepared audio."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from crisscross.datasets.manifest import build_manifest
from crisscross.datasets.samples import ClipSpec, DeviceAugment, PretextSample
from crisscross.datasets.sampling import MODES
from crisscross.datasets.transforms import normalize
from crisscross.datasets.transforms.video import PHOTO, scale_cutout


@pytest.fixture(scope="module")
def rows(synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("m") / "m.parquet"
    return (
        build_manifest("kinetics_sound", str(synthetic["kinetics_sound"]), out=str(out))
        .manifest.usable()
        .to_pylist()
    )


@pytest.mark.parametrize("mode", MODES)
def test_views_have_model_shapes(rows, mode):
    spec = ClipSpec(sampling=mode, crop_size=64, short_side=72, augment_on="decode")
    out = PretextSample(spec)(rows[0], epoch=0, index=0)
    assert {k: (v.shape, v.dtype) for k, v in out.items()} == {
        "v1": ((8, 3, 64, 64), np.uint8),
        "v2": ((8, 3, 64, 64), np.uint8),
        "a1": ((1, 80, 201), np.float32),
        "a2": ((1, 80, 201), np.float32),
        # the reference cutout (the default) acts after normalisation: its squares travel along
        "v1_cutout": ((3,), np.float32),
        "v2_cutout": ((3,), np.float32),
    }
    empty = PretextSample(spec).empty()
    assert {k: (v.shape[1:], v.dtype) for k, v in empty.items()} == {
        k: (v.shape, v.dtype) for k, v in out.items()
    }


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_device_augmentation_gives_the_decode_workers_sample(rows, device):
    """augment_on: device ships crops, waveforms and draws; finished on the device (a GPU when
    there is one) they are the sample the decode worker would have made from the same (seed,
    epoch, index)."""
    spec = ClipSpec(crop_size=64, short_side=72, augment_on="device")
    deferred = PretextSample(replace(spec, augment_on="device"), seed=3)
    whole = PretextSample(replace(spec, augment_on="decode"), seed=3)
    items = [deferred(rows[i % len(rows)], epoch=1, index=i) for i in range(6)]
    empty = deferred.empty()
    assert {k: (v.shape, v.dtype) for k, v in items[0].items()} == {
        k: (v.shape[1:], v.dtype) for k, v in empty.items()
    }
    assert items[0]["a1"].shape == (32000,) and items[0]["v1"].shape == (8, 3, 64, 64)
    batch = {k: torch.from_numpy(np.stack([item[k] for item in items])) for k in items[0]}
    v1, v2, a1, a2 = (x.cpu() for x in DeviceAugment(spec)(batch, torch.device(device)))
    blurred = cut = 0
    for i in range(6):
        ref = whole(rows[i % len(rows)], epoch=1, index=i)
        for name, got in (("v1", v1[i]), ("v2", v2[i])):
            expected = normalize(torch.from_numpy(ref[name]))
            if f"{name}_cutout" in ref:  # the reference cutout, after normalisation
                square = torch.from_numpy(ref[f"{name}_cutout"])[None]
                expected = scale_cutout(expected[None], square)[0]
            # same draws; float order may differ, so a value may round to the next level
            step = 1 / (255 * 0.224) + 1e-4
            assert (got - expected).abs().max() <= step * 1.01, (i, name)
            assert (got - expected).abs().gt(1e-4).float().mean() < 0.01
            params = batch[f"{name}_aug"][i]
            blurred += int(params[PHOTO.index("blur")])
            cut += int(params[PHOTO.index("cut_side")] > 0)
        for name, got in (("a1", a1[i]), ("a2", a2[i])):
            assert torch.allclose(got, torch.from_numpy(ref[name]), atol=1e-4), (i, name)
    assert 0 < blurred < 12 and cut == 12  # both blur branches ran; cutout always


def test_augment_on_is_checked():
    with pytest.raises(ValueError, match="augment_on must be one of"):
        ClipSpec(augment_on="gpu")


def test_reproducible_from_seed_epoch_index(rows):
    sample = PretextSample(ClipSpec(crop_size=64, short_side=72))
    a = sample(rows[1], epoch=1, index=7)
    b = PretextSample(ClipSpec(crop_size=64, short_side=72))(rows[1], epoch=1, index=7)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = sample(rows[1], epoch=2, index=7)
    assert not np.array_equal(a["v1"], c["v1"])


def test_same_timestamp_without_augmentation_gives_identical_views(rows):
    sample = PretextSample(
        ClipSpec(sampling="same_timestamp", crop_size=64, short_side=72), augment=False
    )
    out = sample(rows[2], epoch=0, index=0)
    assert np.array_equal(out["v1"], out["v2"]) and np.array_equal(out["a1"], out["a2"])


def test_prepared_audio_replaces_the_container_audio(rows, tmp_path):
    row = dict(rows[0])
    row["audio_path"] = str(tmp_path / "a.npy")
    np.save(row["audio_path"], np.zeros(16000 * 5, np.int16))
    out = PretextSample(ClipSpec(crop_size=64, short_side=72), augment=False)(row, epoch=0, index=0)
    assert np.allclose(out["a1"], out["a1"].flat[0])  # silence: a constant log-mel


@pytest.fixture(scope="module")
def ucf_rows(synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("u") / "u.parquet"
    return (
        build_manifest("ucf101", str(synthetic["ucf101"]), out=str(out))
        .manifest.usable()
        .to_pylist()
    )


@pytest.fixture(scope="module")
def esc_rows(synthetic, tmp_path_factory):
    out = tmp_path_factory.mktemp("e") / "e.parquet"
    return (
        build_manifest("esc50", str(synthetic["esc50"]), out=str(out)).manifest.usable().to_pylist()
    )


@pytest.mark.parametrize("frames", [8, 32])
def test_fine_tuning_clips(ucf_rows, frames):
    from crisscross.datasets.samples import VideoClipSample

    row = ucf_rows[3]
    train = VideoClipSample(frames=frames, size=64, train=True)(row, epoch=0, index=0)
    assert train["video"].shape == (1, frames, 3, 64, 64) and train["video"].dtype == np.uint8
    assert int(train["label"]) == row["label"]
    test = VideoClipSample(frames=frames, size=64, train=False)(row, epoch=0, index=0)
    assert test["video"].shape == (10, frames, 3, 64, 64)
    again = VideoClipSample(frames=frames, size=64, train=False)(row, epoch=5, index=9)
    assert np.array_equal(test["video"], again["video"])  # test clips are fixed, not random
    assert not np.array_equal(test["video"][0], test["video"][-1])  # first and last clip differ


def test_esc50_crops(esc_rows):
    from crisscross.datasets.samples import AudioClipSample

    row = esc_rows[0]
    train = AudioClipSample(train=True)(row, epoch=0, index=0)
    assert train["audio"].shape == (1, 1, 80, 201) and int(train["label"]) == row["label"]
    test = AudioClipSample(train=False)(row, epoch=0, index=0)
    assert test["audio"].shape == (10, 1, 80, 201)
    assert np.array_equal(
        test["audio"], AudioClipSample(train=False)(row, epoch=3, index=4)["audio"]
    )
    assert not np.array_equal(test["audio"][0], test["audio"][-1])
