"""How much of the pretext step waits for data, by the number of decode workers feeding it.

One process, one device, the pretraining's own step (its `run` section's mode: on a GPU bf16,
channels-last, compiled, fused Adam; augmentation finished on the device). In one run the step
is fed by:
  memory  a few batches made once by the per-sample function and kept on the device: the step
          alone, the rate no data path can beat;
  ray     the pretraining pipeline (Ray Data decode actors; batches pinned and copied to the
          device two ahead by Ray's prefetch threads), with N decode actors;
  torch   a torch DataLoader with N worker processes over the same per-sample function (pinned,
          copied one batch ahead): the same decode work where Ray is not installed.
Each figure: samples/s, the data-wait share (seconds spent in `next(batches)` over the step's
wall time, the device synchronised after each step so a wait is device idle time) and samples/s
over memory's. The answer: the fewest decode workers that keep the wait under the goal (10 %).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from crisscross.bench.step import cpu_name
from crisscross.config import ExperimentConfig
from crisscross.datasets.epochs import (
    PretextTorchDataset,
    collate_skipping_failures,
    epoch_order,
    usable_rows,
)
from crisscross.datasets.manifest import read_manifest
from crisscross.datasets.samples import DeviceAugment, PretextSample
from crisscross.trainers.builders import build_model, clip_spec, decode_resources
from crisscross.trainers.optim import build_optimizer, set_learning_rates
from crisscross.trainers.pretext_step import pretext_step
from crisscross.trainers.step_modes import compiled, prepare, run_mode

LOADERS = ("ray", "torch")
WAIT_GOAL = 0.10  # the share of step time a GPU may wait for data


@dataclass(frozen=True)
class FeedBenchSpec:
    config: dict[str, Any]  # ExperimentConfig.model_dump(by_alias=True)
    manifest: str  # the clips to decode (a real corpus, or the synthetic Kinetics-like one)
    workers: tuple[int, ...] = (2, 4, 8)  # decode workers per figure
    loader: str = "ray"
    device: str = "cuda"
    batch: int = 64
    steps: int = 20  # timed steps per figure
    warmup: int = 5  # steps before timing: worker start-up, compilation
    threads: int | None = None  # torch threads of the stepping process (CPU)
    compile: bool = True  # torch.compile where the run section asks for it

    def __post_init__(self) -> None:
        if self.loader not in LOADERS:
            raise ValueError(f"loader {self.loader!r}: one of {', '.join(LOADERS)}")
        if not self.workers or min(self.workers) < 1:
            raise ValueError(f"workers {self.workers}: give one or more counts of at least 1")


class Stepper:
    """The pretraining's step on one device: model, optimiser and augmentation, built once."""

    def __init__(self, spec: FeedBenchSpec) -> None:
        self.config = ExperimentConfig.model_validate(spec.config)
        self.device = torch.device(spec.device)
        mode = run_mode(self.config.run, self.device)
        self.mode = mode if spec.compile else replace(mode, compile=False)
        torch.manual_seed(self.config.run.seed)
        module = prepare(build_model(self.config), self.mode, self.device)
        self.optimizer = build_optimizer(module, self.config.optim, fused=self.mode.fused_optimizer)
        self.model = compiled(module, self.mode)
        clip = clip_spec(self.config)
        self.augment = DeviceAugment(clip) if clip.augment_on == "device" else None
        self.done = 0

    def __call__(self, batch: dict[str, torch.Tensor]) -> None:
        set_learning_rates(
            self.optimizer, self.done, optim=self.config.optim, steps_per_epoch=10**6
        )
        self.done += 1
        pretext_step(
            self.model,
            batch,
            self.optimizer,
            step=self.done,
            device=self.device,
            bf16=self.mode.bf16,
            channels_last=self.mode.channels_last,
            augment=self.augment,
        )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def fed(
    step: Callable[[dict[str, torch.Tensor]], None],
    batches: Iterator[dict[str, torch.Tensor]],
    *,
    warmup: int,
) -> dict[str, Any]:
    """Step on every batch; samples/s and the data-wait share after the first `warmup` steps."""
    waited = spent = 0.0
    samples = steps = 0
    while True:
        start = time.perf_counter()
        batch = next(batches, None)
        wait = time.perf_counter() - start
        if batch is None:
            break
        step(batch)
        if steps >= warmup:
            waited += wait
            spent += time.perf_counter() - start
            samples += len(batch["v1"])
        steps += 1
    if not samples:
        raise RuntimeError(f"{steps} batch(es): none left to time after {warmup} warm-up steps")
    return {
        "samples_per_s": samples / spent,
        "data_wait": waited / spent,
        "timed_steps": steps - warmup,
    }


def epoch_rows(manifest: str, config: ExperimentConfig, samples: int) -> pa.Table:
    """`samples` rows of the manifest's usable clips (repeated as needed), in epoch 0's order."""
    table = usable_rows(read_manifest(manifest), clip_spec(config))
    if not table.num_rows:
        raise ValueError(
            f"{manifest}: no usable clip for these sample shapes "
            f"({config.data.audio_seconds} s of audio, {config.data.frames} frames)"
        )
    repeats = -(-samples // table.num_rows)
    rows = epoch_order(table, seed=config.run.seed, epoch=0, repeats=repeats)
    return rows.slice(0, samples)


def memory_batches(
    rows: pa.Table, sample: PretextSample, batch: int, device: torch.device, count: int = 2
) -> list[dict[str, torch.Tensor]]:
    """`count` batches (as many as `rows` hold, at least one) of the per-sample function's
    output, on `device`."""
    listed = rows.to_pylist()
    out = []
    for b in range(max(1, min(count, len(listed) // batch))):
        items = [
            sample(row, epoch=0, index=int(row["index"]))
            for row in listed[b * batch : (b + 1) * batch]
        ]
        collated = collate_skipping_failures(items)
        collated.pop("failed")
        out.append({k: v.to(device) for k, v in collated.items()})
    return out


def cycled(batches: list[dict[str, torch.Tensor]], total: int) -> Iterator[dict[str, torch.Tensor]]:
    for i in range(total):
        yield batches[i % len(batches)]


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # one decode process per CPU, as the Ray decode actors run


def torch_batches(
    rows: pa.Table, sample: PretextSample, batch: int, *, workers: int, device: torch.device
) -> Iterator[dict[str, torch.Tensor]]:
    """The per-sample function in a DataLoader with `workers` processes; each batch is pinned
    (on a GPU) and its copy to the device started before the step on the one before it."""
    loader = torch.utils.data.DataLoader(
        PretextTorchDataset(rows, sample),
        batch_size=batch,
        num_workers=workers,
        collate_fn=collate_skipping_failures,
        pin_memory=device.type == "cuda",
        drop_last=True,
        prefetch_factor=2,
        worker_init_fn=_one_thread,
    )

    def moved(item: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
        if item is None:
            return None
        item.pop("failed")
        return {k: v.to(device, non_blocking=True) for k, v in item.items()}

    source = iter(loader)
    ahead = moved(next(source, None))
    while ahead is not None:
        current, ahead = ahead, moved(next(source, None))
        yield current


def ray_batches(
    rows: pa.Table,
    config: ExperimentConfig,
    batch: int,
    *,
    workers: int,
    device: torch.device,
) -> Iterator[dict[str, torch.Tensor]]:
    """The pretraining pipeline with `workers` decode actors (Ray must be connected)."""
    from crisscross.datasets.pipeline import device_batches, epoch_dataset

    resources = replace(decode_resources(config), workers=workers)
    data = epoch_dataset(rows, spec=clip_spec(config), seed=config.run.seed, resources=resources)
    for item in device_batches(data, batch, device=device):
        item.pop("index", None)
        yield item


def run_feed_benchmark(
    spec: FeedBenchSpec, say: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Memory's figure, then the loader's at each worker count (each said as it is measured);
    the fewest workers that meet the goal."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    step = Stepper(spec)
    config, device = step.config, step.device
    total = spec.warmup + spec.steps
    rows = epoch_rows(spec.manifest, config, total * spec.batch)
    sample = PretextSample(clip_spec(config), seed=config.run.seed)
    memory = fed(
        step,
        cycled(memory_batches(rows, sample, spec.batch, device), total),
        warmup=spec.warmup,
    )
    say(f"memory (on the device): {_line(memory)}")
    figures = []
    for workers in spec.workers:
        if spec.loader == "ray":
            batches = ray_batches(rows, config, spec.batch, workers=workers, device=device)
        else:
            batches = torch_batches(rows, sample, spec.batch, workers=workers, device=device)
        figure = fed(step, batches, warmup=spec.warmup)
        figure["workers"] = workers
        figure["vs_memory"] = figure["samples_per_s"] / memory["samples_per_s"]
        figures.append(figure)
        say(f"{spec.loader}, {workers} decode worker(s): {_line(figure)}")
    return summarise(spec, memory, figures, config, step)


def _line(figure: dict[str, Any]) -> str:
    return f"{figure['samples_per_s']:.1f} samples/s, data wait {figure['data_wait']:.1%}"


def summarise(
    spec: FeedBenchSpec,
    memory: dict[str, Any],
    figures: list[dict[str, Any]],
    config: ExperimentConfig,
    step: Stepper,
) -> dict[str, Any]:
    """The results: every figure, the fewest workers meeting the goal, and an estimate from the
    decode-bound figures where none did."""
    met = [f["workers"] for f in figures if f["data_wait"] < WAIT_GOAL]
    bound = [f for f in figures if f["data_wait"] >= WAIT_GOAL]  # decode-bound: rate ~ workers
    per_worker = max((f["samples_per_s"] / f["workers"] for f in bound), default=None)
    # a Ray decode actor takes data.decode_cpus; a DataLoader worker is a whole process
    cpus = decode_resources(config).cpus_per_worker if spec.loader == "ray" else 1.0
    device = step.device
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "loader": spec.loader,
        "mode": step.mode.describe(),
        "augment_on": config.data.augment_on,
        "batch": spec.batch,
        "steps": spec.steps,
        "warmup": spec.warmup,
        "manifest": spec.manifest,
        "memory": memory,
        "figures": figures,
        "wait_goal": WAIT_GOAL,
        "workers_meeting_goal": min(met) if met else None,
        "cpus_per_decode_worker": cpus,
        # supply must match the step's demand with the wait under the goal
        "decode_sps_per_worker": per_worker,
        "estimated_workers": (
            math.ceil(memory["samples_per_s"] * (1 - WAIT_GOAL) / per_worker)
            if per_worker
            else None
        ),
    }


def feed_markdown(results: dict[str, Any], command: str) -> str:
    """The data-path table for docs/performance.md."""
    memory = results["memory"]
    lines = [
        f"Device: {results['device']}, {results['cpus']} CPUs, torch {results['torch']}; "
        f"step: {results['mode']}, augmentation on {results['augment_on']}; batch "
        f"{results['batch']}, {results['steps']} timed steps after {results['warmup']}.",
        f"Command: `{command}`",
        "",
        "| source | decode workers | samples/s | data wait | vs memory |",
        "|---|---|---|---|---|",
        f"| memory (on the device) | - | {memory['samples_per_s']:.1f} | "
        f"{memory['data_wait']:.1%} | 1.00 |",
    ]
    for f in results["figures"]:
        lines.append(
            f"| {results['loader']} | {f['workers']} | {f['samples_per_s']:.1f} | "
            f"{f['data_wait']:.1%} | {f['vs_memory']:.2f} |"
        )
    goal = f"{results['wait_goal']:.0%}"
    cpus = results["cpus_per_decode_worker"]
    if results["workers_meeting_goal"] is not None:
        workers = results["workers_meeting_goal"]
        verdict = (
            f"Fewest decode workers keeping the wait under {goal}: {workers} ({cpus:g} CPU "
            f"each), so {workers * cpus:g} decode CPUs per training device "
            f"(data.decode_workers: {workers} per training worker)."
        )
    else:
        verdict = f"No measured worker count kept the wait under {goal}."
    if results["estimated_workers"] is not None:
        estimate = results["estimated_workers"]
        verdict += (
            f" Estimate from the decode-bound figures "
            f"({results['decode_sps_per_worker']:.1f} samples/s per worker): "
            f"{estimate} workers, {estimate * cpus:g} decode CPUs."
        )
    return "\n".join([*lines, "", verdict])


def default_corpus(workdir: Path, corpus: Any = None) -> str:
    """The manifest of `bench data`'s synthetic Kinetics-like corpus (or `corpus`, a
    DataBenchSpec) under `workdir`, made once."""
    from crisscross.bench.data import DataBenchSpec, kinetics_like_corpus
    from crisscross.datasets.manifest import default_manifest_path

    root, _ = kinetics_like_corpus(corpus or DataBenchSpec(), workdir)
    return default_manifest_path("kinetics400", str(root))
