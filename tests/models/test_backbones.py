"""Backbones: the released key layout, paper-size shapes, tiny forward/backward for every entry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from crisscross.models import BACKBONES, create_backbone, list_backbones
from crisscross.models.registry import UnknownEntryError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def fixture_shapes(name: str) -> dict[str, list[int]]:
    rows = (line.split(" ") for line in (FIXTURES / name).read_text().splitlines())
    return {key: [int(d) for d in dims.split(",") if d] for key, dims in rows}


def model_shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    return {key: list(t.shape) for key, t in model.state_dict().items()}


@pytest.mark.parametrize(
    ("name", "fixture"),
    [
        ("r2plus1d_18", "released_keys_vid_r2plus1d_18.txt"),
        ("resnet18_audio", "released_keys_aud_resnet18.txt"),
    ],
)
def test_paper_size_state_dict_equals_released_format(name, fixture):
    assert model_shapes(create_backbone(name)) == fixture_shapes(fixture)


def test_reference_example_keys():
    video = model_shapes(create_backbone("r2plus1d_18"))
    assert video["conv1.0.weight"] == [64, 3, 3, 7, 7]
    for key in (
        "conv1.1.running_mean",
        "conv2x.0.spt_conv1.weight",
        "conv3x.0.res_conv.weight",
        "conv5x.1.out_bn.num_batches_tracked",
    ):
        assert key in video
    audio = model_shapes(create_backbone("resnet18_audio"))
    assert audio["conv1.0.weight"] == [64, 1, 7, 7]
    assert "block2.0.downsample.0.weight" in audio and "block4.1.bn2.running_var" in audio


@torch.no_grad()
def test_paper_size_video_shapes():
    model = create_backbone("r2plus1d_18").eval()
    clip = torch.randn(2, 3, 8, 112, 112)
    assert model.embed_dim == 512
    assert model(clip).shape == (2, 512)
    assert model.forward_features(clip).shape == (2, 512, 1, 4, 4)


@torch.no_grad()
def test_paper_size_audio_shapes_and_esc50_feature():
    model = create_backbone("resnet18_audio").eval()
    spec = torch.randn(2, 1, 80, 201)  # a 2 s clip
    assert model.embed_dim == 512
    assert model(spec).shape == (2, 512)
    conv5 = model.forward_features(spec)
    assert conv5.shape == (2, 512, 3, 7)
    # the ESC-50 SVM feature: max pool (1, 3) stride (1, 2), flattened: 4608-d
    assert F.max_pool2d(conv5, (1, 3), (1, 2)).flatten(1).shape == (2, 4608)


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_backbone_tiny_forward_backward(name):
    model = create_backbone(name, width=4)
    assert model.embed_dim == 32
    x = torch.randn(2, 3, 8, 32, 32) if model.modality == "video" else torch.randn(2, 1, 40, 64)
    out = model(x)
    assert out.shape == (2, 32)
    out.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, f"no gradient reached {missing[:3]}"


@pytest.mark.parametrize(("name", "blocks"), [("r2plus1d_10", 1), ("r2plus1d_34", 3)])
def test_depth_sets_blocks_per_stage(name, blocks):
    model = create_backbone(name, width=2)
    assert len(model.conv2x) == blocks
    assert [len(getattr(model, s)) for s in ("conv2x", "conv3x", "conv4x", "conv5x")] == (
        [1, 1, 1, 1] if name == "r2plus1d_10" else [3, 4, 6, 3]
    )


def test_pool_max_and_avg_use_the_same_weights():
    avg = create_backbone("r2plus1d_10", width=2, pool="avg")
    mx = create_backbone("r2plus1d_10", width=2, pool="max")
    mx.load_state_dict(avg.state_dict(), strict=True)
    fmap = torch.arange(24.0).reshape(1, 2, 3, 2, 2)
    assert avg.forward_head(fmap).tolist() == [[5.5, 17.5]]
    assert mx.forward_head(fmap).tolist() == [[11.0, 23.0]]


def test_registry_lists_by_modality_and_rejects_unknown_names():
    assert list_backbones("video") == ["r2plus1d_10", "r2plus1d_18", "r2plus1d_34"]
    assert list_backbones("audio") == ["resnet18_audio"]
    with pytest.raises(UnknownEntryError, match=r"did you mean 'r2plus1d_18'\?.*registered:"):
        create_backbone("r2plus1d18")


def test_wrong_input_shape_is_explained():
    with pytest.raises(ValueError, match=r"expects \(B, 3, T, H, W\), got \(2, 1, 80, 201\)"):
        create_backbone("r2plus1d_10", width=2)(torch.randn(2, 1, 80, 201))
    with pytest.raises(ValueError, match=r"expects \(B, 1, F, T\)"):
        create_backbone("resnet18_audio", width=2)(torch.randn(2, 3, 8, 32, 32))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="pool must be 'avg' or 'max'"):
        create_backbone("resnet18_audio", pool="mean")
    with pytest.raises(ValueError, match="width must be >= 1"):
        create_backbone("r2plus1d_18", width=0)
