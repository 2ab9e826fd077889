"""LARC, the learning-rate schedule and one pretext step, against hand computation."""

from __future__ import annotations

import itertools

import pytest
import torch

from crisscross.config import ExperimentConfig, apply_overrides
from crisscross.models import STATS, CrissCross, create_backbone
from crisscross.trainers.optim import LARC, backbone_lr, build_optimizer, set_learning_rates
from crisscross.trainers.pretext_step import NonFiniteLossError, pretext_step


def test_backbone_lr_warmup_then_cosine():
    kw = {"total": 110, "warmup": 10, "peak": 2e-4, "final": 1e-4}
    assert backbone_lr(0, **kw) == 0.0
    assert backbone_lr(5, **kw) == pytest.approx(1e-4)
    assert backbone_lr(10, **kw) == pytest.approx(2e-4)
    assert backbone_lr(60, **kw) == pytest.approx(1.5e-4)  # half way: cos(pi/2) = 0
    assert backbone_lr(110, **kw) == pytest.approx(1e-4)
    assert backbone_lr(500, **kw) == pytest.approx(1e-4)
    lrs = [backbone_lr(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def single(w, g, *, wd, clip, lr=0.5):
    p = torch.nn.Parameter(torch.tensor(w))
    p.grad = torch.tensor(g)
    opt = LARC(torch.optim.SGD([p], lr=lr, weight_decay=wd), trust=1e-3, clip=clip)
    opt.step()
    return p.detach(), opt


@pytest.mark.parametrize(("clip", "rate"), [(True, 0.005 / 1.5 / 0.5), (False, 0.005 / 1.5)])
def test_larc_by_hand(clip, rate):
    # |w| = 5, |g| = 1, wd = 0.1: rate = 1e-3 * 5 / (1 + 5 * 0.1); clipped: rate / lr, at most 1
    w, opt = single([3.0, 4.0], [0.6, 0.8], wd=0.1, clip=clip)
    step = (torch.tensor([0.6, 0.8]) + 0.1 * torch.tensor([3.0, 4.0])) * rate
    assert torch.allclose(w, torch.tensor([3.0, 4.0]) - 0.5 * step, atol=1e-7)
    assert opt.param_groups[0]["weight_decay"] == 0.1  # restored after the step


def test_larc_leaves_zero_norm_parameters_unscaled():
    w, _ = single([0.0, 0.0], [1.0, 2.0], wd=0.1, clip=True)
    assert torch.allclose(w, torch.tensor([-0.5, -1.0]))


def test_clipping_never_raises_the_rate():
    # a huge trust ratio is capped at the group's own learning rate
    w, _ = single([300.0, 400.0], [0.0006, 0.0008], wd=0.0, clip=True)
    assert torch.allclose(w, torch.tensor([300.0, 400.0]) - 0.5 * torch.tensor([0.0006, 0.0008]))


def tiny_model() -> CrissCross:
    return CrissCross(
        create_backbone("r2plus1d_10", width=2),
        create_backbone("resnet18_audio", width=2),
        projector_layers=2,
        projector_dim=16,
        predictor_hidden=8,
    )


def test_four_groups_and_their_learning_rates():
    config = apply_overrides(ExperimentConfig(), {"optim.epochs": 10, "optim.warmup_epochs": 2})
    optimizer = build_optimizer(tiny_model(), config.optim)
    assert [g["name"] for g in optimizer.param_groups] == [
        "video",
        "video_predictor",
        "audio",
        "audio_predictor",
    ]
    lrs = set_learning_rates(optimizer, 10, optim=config.optim, steps_per_epoch=10)  # mid warm-up
    assert lrs == {
        "video": pytest.approx(1e-4),
        "video_predictor": 2e-3,
        "audio": pytest.approx(1e-4),
        "audio_predictor": 2e-3,
    }
    assert all(g["weight_decay"] == 1e-4 for g in optimizer.param_groups)


def batch(b: int = 3) -> dict[str, torch.Tensor]:
    return {
        "v1": torch.randint(0, 256, (b, 8, 3, 32, 32), dtype=torch.uint8),
        "v2": torch.randint(0, 256, (b, 8, 3, 32, 32), dtype=torch.uint8),
        "a1": torch.randn(b, 1, 40, 64),
        "a2": torch.randn(b, 1, 40, 64),
    }


@pytest.mark.parametrize("bf16", [False, True])
def test_one_step_updates_every_group(bf16):
    model = tiny_model()
    optimizer = build_optimizer(model, ExperimentConfig().optim)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    values = pretext_step(model, batch(), optimizer, step=0, device=torch.device("cpu"), bf16=bf16)
    assert set(values) == {"loss", "v1v2", "a1a2", "v1a1", "v2a2", "v1a2", "a1v2", *STATS}
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert any(n.startswith("video.") for n in changed) and any(
        n.startswith("audio_predictor") for n in changed
    )


def test_non_finite_loss_names_the_step_and_leaves_the_weights():
    model = tiny_model()
    optimizer = build_optimizer(model, ExperimentConfig().optim)
    bad = batch()
    bad["a1"][0, 0, 0, 0] = float("nan")
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 17 "):
        pretext_step(model, bad, optimizer, step=17, device=torch.device("cpu"))
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
