"""Optimisation as in REFERENCE.md section 5: Adam wrapped in LARC, four parameter groups,
per-iteration linear warm-up then cosine for backbones and projectors, constant predictors.

LARC is written here rather than taken from apex (not part of this stack, CUDA-only builds); it
follows apex's definition, with the per-parameter norms computed by fused foreach kernels.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from crisscross.config import OptimConfig
from crisscross.models import CrissCross

PREDICTOR_GROUPS = ("video_predictor", "audio_predictor")


class LARC:
    """Layer-wise adaptive rate clipping around an optimizer (You et al. 2017; apex's LARC).

    Each parameter's gradient, with weight decay folded in, is scaled by
    trust * |w| / (|g| + wd * |w| + eps); with `clip`, that rate is divided by the group's lr and
    capped at 1, so it only ever lowers the step. Parameters with a zero weight or gradient norm
    are left as they are.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        trust: float = 1e-3,
        clip: bool = True,
        eps: float = 1e-8,
    ) -> None:
        self.optim, self.trust, self.clip, self.eps = optimizer, trust, clip, eps

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optim.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optim.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.optim.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optim.load_state_dict(state)

    @torch.no_grad()
    def step(self) -> None:
        decays = []
        for group in self.optim.param_groups:
            decay = group.get("weight_decay", 0.0)
            decays.append(decay)
            group["weight_decay"] = 0.0  # folded into the gradient below
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            w_norm = torch.stack(torch._foreach_norm(params))
            g_norm = torch.stack(torch._foreach_norm(grads))
            keep = (w_norm > 0) & (g_norm > 0)  # as tensors: no host sync per parameter
            rate = self.trust * w_norm / (g_norm + w_norm * decay + self.eps)
            if self.clip:
                rate = torch.clamp(rate / group["lr"], max=1.0)
            rate = torch.where(keep, rate, torch.ones_like(rate))
            if decay:
                decayed = torch._foreach_mul(params, list((keep * decay).unbind()))
                torch._foreach_add_(grads, decayed)
            torch._foreach_mul_(grads, list(rate.unbind()))
        self.optim.step()
        for group, decay in zip(self.optim.param_groups, decays, strict=True):
            group["weight_decay"] = decay


def build_optimizer(model: CrissCross, optim: OptimConfig, *, fused: bool = False) -> LARC:
    """Adam over the model's four named parameter groups, wrapped in LARC; `fused` uses Adam's
    fused kernel (one launch for all parameters on a GPU)."""
    groups = [
        {
            "params": params,
            "name": name,
            "lr": optim.predictor_lr if name in PREDICTOR_GROUPS else optim.lr,
        }
        for name, params in model.parameter_groups().items()
    ]
    adam = torch.optim.Adam(
        groups,
        lr=optim.lr,
        betas=optim.betas,
        weight_decay=optim.weight_decay,
        fused=fused or None,
    )
    return LARC(adam, trust=optim.larc_trust, clip=optim.larc_clip)


def backbone_lr(step: int, *, total: int, warmup: int, peak: float, final: float) -> float:
    """Linear warm-up from 0 to `peak` over `warmup` steps, then cosine from `peak` to `final`."""
    if step < warmup:
        return peak * step / warmup
    span = max(total - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    return final + 0.5 * (peak - final) * (1 + math.cos(math.pi * progress))


def set_learning_rates(
    optimizer: LARC, step: int, *, optim: OptimConfig, steps_per_epoch: int
) -> dict[str, float]:
    """Set every group's lr for `step` (0-based, per iteration); returns {group name: lr}."""
    total = optim.epochs * steps_per_epoch
    warmup = round(optim.warmup_epochs * steps_per_epoch)
    lrs = {}
    for group in optimizer.param_groups:
        if group["name"] in PREDICTOR_GROUPS:
            group["lr"] = optim.predictor_lr
        else:
            group["lr"] = backbone_lr(
                step, total=total, warmup=warmup, peak=optim.lr, final=optim.final_lr
            )
        lrs[group["name"]] = group["lr"]
    return lrs
