"""The pretext-step benchmark: the same timed loop, run bare or inside a Ray Train worker.

Both sides build the same model from the same config, step on the same in-memory batch with the
same number of torch threads, and time the same steps after the same warm-up, so their ratio is
the platform's overhead and nothing else.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from crisscross.config import ExperimentConfig
from crisscross.trainers.builders import build_model
from crisscross.trainers.optim import build_optimizer, set_learning_rates
from crisscross.trainers.pretext_step import pretext_step
from crisscross.trainers.step_modes import bf16_enabled


@dataclass(frozen=True)
class TrainBenchSpec:
    config: dict[str, Any]  # ExperimentConfig.model_dump(by_alias=True)
    batch: int
    steps: int = 10  # per timed window
    windows: int = 5  # the figure is the median window
    warmup: int = 5
    threads: int = 1
    device: str = "cpu"


def synthetic_batch(config: ExperimentConfig, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A fixed batch shaped like the pipeline's: uint8 video views, float log-mel audio views."""
    d = config.data
    g = torch.Generator().manual_seed(seed)
    frames = int(d.audio_seconds * d.sample_rate // 160 + 1)
    video = (batch, d.frames, 3, d.crop_size, d.crop_size)
    audio = (batch, 1, d.n_mels, frames)
    return {
        "v1": torch.randint(0, 256, video, generator=g, dtype=torch.uint8),
        "v2": torch.randint(0, 256, video, generator=g, dtype=torch.uint8),
        "a1": torch.randn(audio, generator=g),
        "a2": torch.randn(audio, generator=g),
    }


def timed_steps(spec: TrainBenchSpec, *, wrap: Any = None) -> dict[str, Any]:
    """Samples/s (the median of `spec.windows` windows of `spec.steps` steps, after
    `spec.warmup` steps) and seconds per step.

    `wrap` (e.g. Ray Train's prepare_model) is applied to the model before stepping.
    """
    torch.set_num_threads(spec.threads)
    config = ExperimentConfig.model_validate(spec.config)
    device = torch.device(spec.device)
    torch.manual_seed(config.run.seed)
    module = build_model(config).to(device)
    optimizer = build_optimizer(module, config.optim)
    model = wrap(module) if wrap is not None else module
    batch = synthetic_batch(config, spec.batch)
    bf16 = bf16_enabled(config.run.precision, device)

    def step(i: int) -> None:
        set_learning_rates(optimizer, i, optim=config.optim, steps_per_epoch=10**6)
        pretext_step(model, batch, optimizer, step=i, device=device, bf16=bf16)

    for i in range(spec.warmup):
        step(i)
    rates = []
    done = spec.warmup
    for _ in range(spec.windows):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(spec.steps):
            step(done)
            done += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(spec.batch * spec.steps / (time.perf_counter() - start))
    rate = statistics.median(rates)  # a burst of background work spoils one window, not the figure
    return {"samples_per_s": rate, "step_s": spec.batch / rate, "window_sps": rates}
