"""How the pretext step runs on its device: the reference code's way, or the optimised one.

Baseline (what the reference code does, less its apex): fp32, eager, default memory format,
per-parameter optimizer kernels. Optimised: bf16 autocast, channels-last weights and inputs
(channels_last_3d for the video network, channels_last for the audio one), `torch.compile` of
the model's forward and loss, Adam's fused kernel, cuDNN autotuning. Every switch works on CPU
too (so tests cover the code), but the figures that matter are measured on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class StepMode:
    name: str
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    fused_optimizer: bool = False
    cudnn_benchmark: bool = False

    def describe(self) -> str:
        parts = ["bf16 autocast" if self.bf16 else "fp32"]
        parts.append("channels-last" if self.channels_last else "default memory format")
        parts.append("torch.compile" if self.compile else "eager")
        parts += ["fused Adam"] if self.fused_optimizer else []
        parts += ["cuDNN autotuning"] if self.cudnn_benchmark else []
        return ", ".join(parts)


BASELINE = StepMode("baseline")
OPTIMISED = StepMode(
    "ours", bf16=True, channels_last=True, compile=True, fused_optimizer=True, cudnn_benchmark=True
)


def optimised(device: torch.device) -> StepMode:
    """`OPTIMISED` for `device`. On CPU: fp32 and the default memory format, fused Adam and
    (if asked) torch.compile. With torch 2.11 on this project's CPU machines, bf16 autocast gave
    non-finite weight gradients in the paper-size video network after one step (the backward of
    a (3,1,1) temporal convolution, 256 -> 576 channels, over 2 frames), and channels-last 3-D
    convolutions with bf16 under torch.compile turned the tiny model's video weights to NaN;
    a CPU has no fast bf16 path for these convolutions anyway, and cuDNN is moot there."""
    if device.type == "cuda":
        return OPTIMISED
    return replace(OPTIMISED, bf16=False, channels_last=False, cudnn_benchmark=False)


def bf16_enabled(precision: str, device: torch.device) -> bool:
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def run_mode(run: Any, device: torch.device) -> StepMode:
    """The mode a pretraining's `run` section asks for on `device` ("auto": on for CUDA only)."""

    def on(value: Any) -> bool:
        return device.type == "cuda" if value == "auto" else bool(value)

    bf16 = bf16_enabled(run.precision, device)
    return StepMode(
        "configured",
        bf16=bf16,
        channels_last=on(run.channels_last),
        compile=on(run.compile),
        fused_optimizer=on(run.fused_optimizer),
        cudnn_benchmark=device.type == "cuda",
    )


def to_channels_last(model: nn.Module) -> nn.Module:
    """Video weights channels_last_3d, audio weights channels_last (in place; returns `model`)."""
    for name, formats in (("video", torch.channels_last_3d), ("audio", torch.channels_last)):
        part = getattr(model, name, None)
        if part is not None:
            part.to(memory_format=formats)
    return model


def inputs_channels_last(
    v1: torch.Tensor, v2: torch.Tensor, a1: torch.Tensor, a2: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """(B, 3, T, H, W) video and (B, 1, F, S) audio views in the channels-last layouts."""
    video = [v.contiguous(memory_format=torch.channels_last_3d) for v in (v1, v2)]
    audio = [a.contiguous(memory_format=torch.channels_last) for a in (a1, a2)]
    return video[0], video[1], audio[0], audio[1]


def prepare(model: nn.Module, mode: StepMode, device: torch.device) -> nn.Module:
    """Move `model` to `device` in the mode's layout; set cuDNN autotuning. The module itself is
    returned (its state_dict keys unchanged); compile with `compiled` once DDP has wrapped it."""
    if mode.cudnn_benchmark and device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if mode.channels_last and device.type == "cpu":
        _refuse_narrow_channels_last_on_cpu(model)
    model.to(device)
    return to_channels_last(model) if mode.channels_last else model


CPU_CHANNELS_LAST_MIN = 8  # oneDNN's AVX2 block of input channels


def _refuse_narrow_channels_last_on_cpu(model: nn.Module) -> None:
    """oneDNN (torch 2.11's 3.10) writes past its workspace in the backward of a strided 1x1
    channels-last convolution with fewer input channels than its AVX2 block of 8: on an AVX2
    CPU the heap is corrupted and the process aborts later (seen here with width-4 encoders;
    oneDNN issue 6035). Refused up front instead."""
    narrow = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d | nn.Conv3d)
        and module.in_channels < CPU_CHANNELS_LAST_MIN
        and all(k == 1 for k in module.kernel_size)
        and any(s > 1 for s in module.stride)
    ]
    if narrow:
        raise ValueError(
            f"run.channels_last on CPU needs at least {CPU_CHANNELS_LAST_MIN} input channels "
            f"in every strided 1x1 convolution (oneDNN corrupts memory below that on AVX2 "
            f"CPUs); {narrow[0]} has fewer: use model.video_width/audio_width >= 8 or "
            "run.channels_last: false"
        )


def compiled(model: nn.Module, mode: StepMode) -> nn.Module:
    """`torch.compile(model)` when the mode asks for it (the first steps then compile)."""
    return torch.compile(model) if mode.compile else model


def with_mode(mode: StepMode, **changes: Any) -> StepMode:
    return replace(mode, **changes)
