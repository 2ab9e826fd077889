"""One CrissCross optimisation step on a batch from the data pipeline (on one worker of many)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.distributed as dist

from crisscross.datasets.samples import DeviceAugment
from crisscross.datasets.transforms import normalize
from crisscross.datasets.transforms.video import scale_cutout
from crisscross.trainers.optim import LARC
from crisscross.trainers.step_modes import inputs_channels_last


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; raised before the step changes any weight."""

    def __init__(self, step: int, values: Mapping[str, float]) -> None:
        self.step = step
        terms = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        super().__init__(f"non-finite loss at step {step} ({terms}); the weights were not updated")


def to_model_inputs(
    batch: Mapping[str, torch.Tensor],
    device: torch.device,
    augment: DeviceAugment | None = None,
) -> tuple[torch.Tensor, ...]:
    """uint8 video (B, T, 3, H, W) and float audio (B, 1, F, S) -> normalised (v1, v2, a1, a2);
    a batch made with `augment_on: device` is finished by `augment` on the device, and one
    whose views carry the reference's cutout squares (`<view>_cutout`) gets them here."""
    if "v1_aug" in batch:
        if augment is None:
            raise ValueError(
                "the batch holds views to augment on the device (data.augment_on: device), "
                "but no DeviceAugment was given to finish them"
            )
        return augment(batch, device)
    video = [normalize(batch[k].to(device, non_blocking=True)) for k in ("v1", "v2")]
    video = [
        scale_cutout(v, batch[f"{k}_cutout"].to(device)) if f"{k}_cutout" in batch else v
        for k, v in zip(("v1", "v2"), video, strict=True)
    ]
    audio = [batch[k].to(device, non_blocking=True).float() for k in ("a1", "a2")]
    return video[0], video[1], audio[0], audio[1]


def pretext_step(
    model: torch.nn.Module,
    batch: Mapping[str, torch.Tensor],
    optimizer: LARC,
    *,
    step: int,
    device: torch.device,
    bf16: bool = False,
    distributed: bool = False,
    channels_last: bool = False,
    augment: DeviceAugment | None = None,
) -> dict[str, float]:
    """Forward, check, backward, update; returns the loss and the six pair terms as floats.

    With `distributed`, the values are averaged over the workers first (one all-reduce and one
    host copy per step), so every worker sees the same numbers and stops on the same step.
    With `channels_last`, the views are laid out as the channels-last model expects. `augment`
    finishes batches made with `augment_on: device`.
    """
    inputs = to_model_inputs(batch, device, augment)
    if channels_last:
        inputs = inputs_channels_last(*inputs)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(*inputs)
    stacked = torch.stack([value.detach().float() for value in out.values()])
    if distributed:
        dist.all_reduce(stacked)
        stacked /= dist.get_world_size()
    optimizer.zero_grad()
    # the backward is queued before the values are read, so the one host sync of the step comes
    # after it rather than between forward and backward; the check still precedes the update
    out["loss"].backward()
    values = dict(zip(out, stacked.tolist(), strict=True))
    if not all(math.isfinite(v) for v in values.values()):
        raise NonFiniteLossError(step, values)
    optimizer.step()
    return values
