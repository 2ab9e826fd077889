"""`crisscross bench train`: the platform's overhead on one pretext step, measured side by side."""

from __future__ import annotations

import tempfile
import time
from typing import Any

import ray
import ray.train
from ray.train.torch import TorchTrainer

from crisscross.bench.train_steps import TrainBenchSpec, timed_steps
from crisscross.platform.pretrain.job import connect_ray


def run_train_benchmark(spec: TrainBenchSpec, *, settle_s: float = 10.0) -> dict[str, Any]:
    """ray_train_sps (1 Ray Train worker) against bare_torch_sps (this process), one run.

    The bare loop runs before and after the Ray one and its two figures are averaged, so a
    drift in the machine's speed during the run does not favour either side.
    """
    connect_ray()
    bare = [timed_steps(spec)]
    resources = {"CPU": spec.threads} | ({"GPU": 1} if spec.device == "cuda" else {})
    with tempfile.TemporaryDirectory(prefix="crisscross-bench-train-") as storage:
        result = TorchTrainer(
            _bench_loop,
            train_loop_config={"spec": spec},
            scaling_config=ray.train.ScalingConfig(
                num_workers=1, use_gpu=spec.device == "cuda", resources_per_worker=resources
            ),
            run_config=ray.train.RunConfig(
                name="bench-train",
                storage_path=storage,
                logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            ),
        ).fit()
    time.sleep(settle_s)  # let Ray finish tearing the worker group down before timing again
    bare.append(timed_steps(spec))
    in_ray = result.return_value
    bare_sps = sum(b["samples_per_s"] for b in bare) / len(bare)
    return {
        "ray_train_sps": in_ray["samples_per_s"],
        "bare_torch_sps": bare_sps,
        "ratio": in_ray["samples_per_s"] / bare_sps,
        "goal_ratio": 0.9,
        "bare_runs_sps": [b["samples_per_s"] for b in bare],
        "ray_window_sps": in_ray["window_sps"],
        "bare_window_sps": [b["window_sps"] for b in bare],
        "batch": spec.batch,
        "steps": spec.steps,
        "windows": spec.windows,
        "warmup": spec.warmup,
        "threads": spec.threads,
        "device": spec.device,
    }


def _bench_loop(train_config: dict[str, Any]) -> dict[str, float]:
    return timed_steps(train_config["spec"], wrap=ray.train.torch.prepare_model)
