"""The CrissCross module: outputs, gradients, parameter groups, and one paper-size step."""

from __future__ import annotations

import pytest
import torch

from crisscross.models import STATS, CrissCross, LossWeights, create_backbone

TERMS = {"v1v2", "a1a2", "v1a1", "v2a2", "v1a2", "a1v2"}


def tiny(weights: LossWeights | None = None) -> CrissCross:
    return CrissCross(
        create_backbone("r2plus1d_10", width=4),
        create_backbone("resnet18_audio", width=4),
        projector_layers=2,
        projector_dim=16,
        predictor_hidden=8,
        weights=weights,
    )


def batch(b: int = 3, size: int = 32) -> tuple[torch.Tensor, ...]:
    video = [torch.randn(b, 3, 8, size, size) for _ in range(2)]
    audio = [torch.randn(b, 1, 40, 64) for _ in range(2)]
    return video[0], video[1], audio[0], audio[1]


def test_forward_returns_loss_six_terms_and_the_collapse_indicators_and_trains_every_parameter():
    model = tiny()
    out = model(*batch())
    assert set(out) == {"loss", *TERMS, *STATS}
    assert not any(out[k].requires_grad for k in STATS)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in out.values())
    expected = sum(out[t] for t in TERMS) / 6
    assert out["loss"].item() == pytest.approx(expected.item(), abs=1e-6)
    out["loss"].backward()
    frozen = [n for n, p in model.named_parameters() if p.grad is None]
    assert not frozen, frozen[:3]


def test_weights_from_constructor_are_used():
    torch.manual_seed(1)
    model = tiny(LossWeights(intra=False, asynchronous=False))
    out = model(*batch())
    assert out["loss"].item() == pytest.approx(((out["v1a1"] + out["v2a2"]) / 2).item(), abs=1e-6)


def test_parameter_groups_partition_the_model():
    model = tiny()
    groups = model.parameter_groups()
    assert list(groups) == ["video", "video_predictor", "audio", "audio_predictor"]
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {id(p) for p in model.video_predictor.parameters()} == {
        id(p) for p in groups["video_predictor"]
    }


def test_backbones_must_come_video_then_audio():
    with pytest.raises(ValueError, match="video backbone then an audio backbone"):
        CrissCross(
            create_backbone("resnet18_audio", width=2), create_backbone("r2plus1d_10", width=2)
        )
