"""Released-format weights: round trips, detection, strict loading and the errors users see."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from crisscross.models import (
    WeightsError,
    create_backbone,
    detect_backbone,
    load_backbone,
    read_state_dict,
    save_backbone,
)


@pytest.fixture
def tiny_files(tmp_path):
    video = create_backbone("r2plus1d_10", width=4)
    audio = create_backbone("resnet18_audio", width=4)
    for model in (video, audio):  # make BN statistics non-trivial so they must round-trip
        model.train()
        x = torch.randn(3, 3, 8, 32, 32) if model.modality == "video" else torch.randn(3, 1, 40, 64)
        model(x)
    return {
        "video": (video, save_backbone(video, tmp_path / "vid_crisscross_tiny.pth.tar")),
        "audio": (audio, save_backbone(audio, tmp_path / "aud_crisscross_tiny.pth.tar")),
    }


@pytest.mark.parametrize("modality", ["video", "audio"])
def test_round_trip_gives_equal_outputs(tiny_files, modality):
    model, path = tiny_files[modality]
    loaded = load_backbone(path)
    assert loaded.arch_name == model.arch_name and loaded.width == 4
    x = torch.randn(2, 3, 8, 32, 32) if modality == "video" else torch.randn(2, 1, 40, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded.eval()(x))


def test_saved_file_is_a_bare_state_dict(tiny_files):
    model, path = tiny_files["video"]
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw, dict) and list(raw) == list(model.state_dict())
    assert all(isinstance(v, torch.Tensor) for v in raw.values())


def test_wrappers_are_removed_on_save(tmp_path):
    class Wrapped(nn.Module):  # stands for DistributedDataParallel: the model under .module
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    model = create_backbone("resnet18_audio", width=2)
    path = save_backbone(Wrapped(model), tmp_path / "aud.pth.tar")
    assert not any(k.startswith("module.") for k in read_state_dict(path))
    assert load_backbone(path).width == 2


def test_paper_size_file_is_detected_and_loads_strictly(tmp_path):
    video = create_backbone("r2plus1d_18")
    path = save_backbone(video, tmp_path / "vid_crisscross_kinetics_sound.pth.tar")
    spec = detect_backbone(read_state_dict(path))
    assert (spec.name, spec.width, spec.modality) == ("r2plus1d_18", 64, "video")
    loaded = load_backbone(path, "r2plus1d_18", pool="max")
    assert loaded.pool == "max"
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), video.state_dict().values(), strict=True)
    )


def test_wrong_modality_names_both(tiny_files):
    _, audio_path = tiny_files["audio"]
    with pytest.raises(WeightsError) as err:
        load_backbone(audio_path, "r2plus1d_18")
    message = str(err.value)
    assert str(audio_path) in message
    assert "audio backbone 'resnet18_audio' (width 4)" in message
    assert "video backbone 'r2plus1d_18' was asked for" in message


def test_wrong_width_lists_misshaped_keys(tiny_files):
    _, path = tiny_files["video"]
    with pytest.raises(WeightsError) as err:
        load_backbone(path, "r2plus1d_10", width=8)
    message = str(err.value)
    assert "does not match video backbone 'r2plus1d_10' (width 8)" in message
    assert "mis-shaped keys" in message
    assert "conv1.0.weight [4, 3, 3, 7, 7] in file, [8, 3, 3, 7, 7] in model" in message


def test_wrong_depth_lists_missing_keys(tiny_files):
    _, path = tiny_files["video"]
    with pytest.raises(WeightsError, match=r"missing keys \(\d+\): conv2x\.1\.spt_conv1\.weight"):
        load_backbone(path, "r2plus1d_18", width=4)


def test_unexpected_keys_are_listed(tmp_path):
    state = create_backbone("resnet18_audio", width=2).state_dict()
    state["fc.weight"] = torch.zeros(3, 16)
    torch.save(state, tmp_path / "aud.pth.tar")
    with pytest.raises(WeightsError, match=r"unexpected keys \(1\): fc\.weight"):
        load_backbone(tmp_path / "aud.pth.tar")


@pytest.mark.parametrize("damage", ["random", "truncated", "empty"])
def test_corrupted_file_gives_a_clear_error(tiny_files, tmp_path, damage):
    _, good = tiny_files["audio"]
    bad = tmp_path / "aud_bad.pth.tar"
    data = good.read_bytes()
    bad.write_bytes(
        {"random": bytes(range(256)) * 8, "truncated": data[: len(data) // 2], "empty": b""}[damage]
    )
    with pytest.raises(
        WeightsError, match=r"aud_bad\.pth\.tar: not a readable PyTorch weights file"
    ):
        load_backbone(bad)


def test_non_state_dict_files(tmp_path):
    torch.save({"epoch": 3, "state_dict": {}}, tmp_path / "ckpt.pth")
    with pytest.raises(WeightsError, match="expected a bare state_dict"):
        load_backbone(tmp_path / "ckpt.pth")
    ddp = {
        f"module.{k}": v for k, v in create_backbone("resnet18_audio", width=2).state_dict().items()
    }
    torch.save(ddp, tmp_path / "ddp.pth")
    with pytest.raises(WeightsError, match=r"keys start with 'module\.'"):
        load_backbone(tmp_path / "ddp.pth")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match=r"neither video .* nor audio"):
        load_backbone(tmp_path / "other.pth")


def test_pickled_code_is_refused(tmp_path):
    torch.save({"conv1.0.weight": torch.zeros(1), "extra": nn.ReLU()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="not a readable PyTorch weights file"):
        load_backbone(tmp_path / "evil.pth")


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="no such weights file"):
        load_backbone(tmp_path / "nope.pth.tar")
