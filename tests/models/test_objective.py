"""The CrissCross objective against hand-computed values, weights, switches and stop-gradient."""

from __future__ import annotations

import math

import pytest
import torch

from crisscross.models import (
    LossWeights,
    crisscross_loss,
    embedding_stats,
    negative_cosine,
    pair_loss,
)

R = 1 / math.sqrt(2)


def views(requires_grad: bool = False) -> dict[str, torch.Tensor]:
    # batch of one 2-d embedding per view; pairwise cosines are 0 or +-1/sqrt(2)
    raw = {"v1": [1.0, 0.0], "v2": [0.0, 1.0], "a1": [1.0, 1.0], "a2": [1.0, -1.0]}
    return {k: torch.tensor([v], requires_grad=requires_grad) for k, v in raw.items()}


def test_negative_cosine_hand_value():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    # cosines 1 and 1/sqrt(2), averaged, negated
    assert negative_cosine(p, z).item() == pytest.approx(-(1 + R) / 2)


def test_pair_loss_is_symmetric_and_halves_each_direction():
    px, zx, py, zy = (torch.randn(4, 8) for _ in range(4))
    expected = 0.5 * negative_cosine(px, zy) + 0.5 * negative_cosine(py, zx)
    assert pair_loss(px, zx, py, zy).item() == pytest.approx(expected.item())
    assert pair_loss(px, zx, py, zy).item() == pytest.approx(pair_loss(py, zy, px, zx).item())


def test_six_terms_and_total_by_hand():
    z = views()
    p = views()  # with p == z each term is -cos(x, y)
    out = crisscross_loss(z, p, LossWeights())
    expected_terms = {"v1v2": 0.0, "a1a2": 0.0, "v1a1": -R, "v2a2": R, "v1a2": -R, "a1v2": -R}
    for term, value in expected_terms.items():
        assert out[term].item() == pytest.approx(value, abs=1e-6), term
    assert out["loss"].item() == pytest.approx(-2 * R / 6)
    assert set(out) == {"loss", *expected_terms}


def test_predictions_pair_with_the_other_views_targets():
    z = views()
    p = {k: torch.tensor([[0.0, 1.0]]) for k in z}  # every prediction points along +y
    out = crisscross_loss(z, p, LossWeights())
    # L_v1a1 = D(p_v1, z_a1)/2 + D(p_a1, z_v1)/2 = (-R + 0) / 2
    assert out["v1a1"].item() == pytest.approx(-R / 2)
    # L_v1v2 = D(p_v1, z_v2)/2 + D(p_v2, z_v1)/2 = (-1 + 0) / 2
    assert out["v1v2"].item() == pytest.approx(-0.5)


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        (LossWeights(w_sync=2.0), (2 * (-R + R) - 2 * R) / 6),
        (LossWeights(w_async=0.5), (0.5 * -2 * R) / 6),
        (LossWeights(w_video=3.0, w_audio=5.0), -2 * R / 6),  # intra terms are 0 here
        (LossWeights(sync=False), -2 * R / 4),
        (LossWeights(asynchronous=False), 0.0),
        (LossWeights(intra=False, sync=False), -2 * R / 2),
        (LossWeights(sync=False, asynchronous=False), 0.0),
    ],
)
def test_weights_and_switches(weights, expected):
    out = crisscross_loss(views(), views(), weights)
    assert out["loss"].item() == pytest.approx(expected, abs=1e-6)


def test_weight_scales_its_terms_exactly():
    z = {k: torch.randn(5, 16) for k in ("v1", "v2", "a1", "a2")}
    p = {k: torch.randn(5, 16) for k in z}
    base = crisscross_loss(z, p, LossWeights(intra=False, asynchronous=False))
    doubled = crisscross_loss(z, p, LossWeights(intra=False, asynchronous=False, w_sync=2.0))
    assert base["loss"].item() == pytest.approx((base["v1a1"] + base["v2a2"]).item() / 2)
    assert doubled["loss"].item() == pytest.approx(2 * base["loss"].item())


def test_gradient_reaches_predictions_only():
    z, p = views(requires_grad=True), views(requires_grad=True)
    crisscross_loss(z, p, LossWeights())["loss"].backward()
    assert all(z[k].grad is None for k in z), "stop-gradient: no gradient may reach z"
    assert all(p[k].grad is not None and p[k].grad.abs().sum() > 0 for k in p)


def test_switched_off_terms_are_reported_without_gradient():
    z, p = views(), views(requires_grad=True)
    out = crisscross_loss(z, p, LossWeights(intra=False, sync=False))
    assert not out["v1v2"].requires_grad and not out["v1a1"].requires_grad
    assert out["v1a2"].requires_grad and out["a1v2"].requires_grad
    out["loss"].backward()
    # only v1a2 and a1v2 are on: their gradient through p_v2 comes from L_a1v2 alone
    p_only = views(requires_grad=True)
    (pair_loss(p_only["a1"], z["a1"], p_only["v2"], z["v2"]) / 2).backward()
    assert torch.allclose(p["v2"].grad, p_only["v2"].grad)


def test_loss_weights_reject_bad_values():
    with pytest.raises(ValueError, match="w_sync must be a finite number >= 0"):
        LossWeights(w_sync=-0.1)
    with pytest.raises(ValueError, match="w_video"):
        LossWeights(w_video=float("nan"))
    with pytest.raises(ValueError, match="every loss term is switched off"):
        LossWeights(intra=False, sync=False, asynchronous=False)


def test_missing_view_is_named():
    z = views()
    del z["a2"]
    with pytest.raises(KeyError, match="a2"):
        crisscross_loss(z, views(), LossWeights())


def test_collapse_indicators_by_hand():
    # two orthogonal unit directions per modality: per-dimension std 1/2 over the four rows
    # (v1, v2 stacked), mean over the 2 dimensions 1/2, times sqrt(2)
    z = {
        "v1": torch.tensor([[1.0, 0.0], [0.0, 3.0]]),
        "v2": torch.tensor([[2.0, 0.0], [0.0, 1.0]]),
        "a1": torch.tensor([[1.0, 1.0], [1.0, 1.0]]),
        "a2": torch.tensor([[5.0, 5.0], [2.0, 2.0]]),
    }
    stats = embedding_stats(z)
    assert stats["embed_std/video"].item() == pytest.approx(0.5 * math.sqrt(2))
    assert stats["embed_std/audio"].item() == pytest.approx(0.0)  # collapsed: one direction
    # cos(v1, a1) per row: R, R; cos(v2, a2): R, R
    assert stats["embed_cos/av"].item() == pytest.approx(R)


def test_collapse_indicators_take_no_gradient_and_a_batch_of_one():
    z = {k: torch.randn(1, 4, requires_grad=True) for k in ("v1", "v2", "a1", "a2")}
    stats = embedding_stats(z)
    assert all(not v.requires_grad and torch.isfinite(v) for v in stats.values())
