"""`crisscross bench feed`: the data-wait share of the step by decode-worker count (issue 8's data
path), at test sizes on CPU: the accounting against hand computation, the command end to end
with each loader, and both device benchmarks on a machine without Ray or MLflow."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from crisscross.bench import feed as feed_bench
from crisscross.bench.feed import FeedBenchSpec, epoch_rows, fed, feed_markdown, summarise
from crisscross.config import load_config
from crisscross.datasets.manifest import build_manifest
from crisscross.datasets.synth import SynthSpec, synthesize
from tests.conftest import REPO, TINY_SIZES

QUICKSTART = REPO / "experiments" / "pretext" / "quickstart.yaml"
WITHOUT_RAY = REPO / "tests" / "fixtures" / "without_ray.py"
SETS = [a for k, v in TINY_SIZES.items() for a in ("--set", f"{k}={v}")]


class Clock:
    """A fake perf_counter: batches cost `fetch` seconds each, steps `step` seconds."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_wait_share_and_rate_are_counted_after_the_warm_up(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(feed_bench.time, "perf_counter", clock)
    fetch = [5.0, 0.5, 0.1, 0.3]  # the first (warm-up) fetch is start-up, not counted

    def batches():
        for seconds in fetch:
            clock.now += seconds
            yield {"v1": torch.zeros(4, 1)}
        clock.now += 0.2  # the exhausted iterator's last call is not a step

    def step(batch):
        clock.now += 1.0

    out = fed(step, batches(), warmup=1)
    assert out["timed_steps"] == 3
    assert out["samples_per_s"] == pytest.approx(12 / (0.9 + 3.0))
    assert out["data_wait"] == pytest.approx(0.9 / 3.9)


def test_too_few_batches_for_the_warm_up_is_a_clear_error():
    with pytest.raises(RuntimeError, match="2 batch\\(es\\): none left to time after 2 warm-up"):
        fed(lambda b: None, iter([{"v1": torch.zeros(1)}] * 2), warmup=2)


def test_the_fewest_workers_meeting_the_goal_and_the_estimate():
    spec = FeedBenchSpec(config={}, manifest="m", loader="torch", device="cpu")
    memory = {"samples_per_s": 100.0, "data_wait": 0.0}
    figures = [
        {"workers": 2, "samples_per_s": 40.0, "data_wait": 0.55, "vs_memory": 0.4},
        {"workers": 4, "samples_per_s": 72.0, "data_wait": 0.25, "vs_memory": 0.72},
        {"workers": 8, "samples_per_s": 97.0, "data_wait": 0.04, "vs_memory": 0.97},
    ]

    step = SimpleNamespace(
        device=torch.device("cpu"), mode=SimpleNamespace(describe=lambda: "fp32")
    )
    out = summarise(spec, memory, figures, load_config(QUICKSTART), step)
    assert out["workers_meeting_goal"] == 8
    assert out["cpus_per_decode_worker"] == 1.0  # a DataLoader worker is a process
    assert out["decode_sps_per_worker"] == pytest.approx(20.0)  # max(40/2, 72/4)
    assert out["estimated_workers"] == 5  # ceil(100 * 0.9 / 20)
    table = feed_markdown(out, "crisscross bench feed")
    assert "| torch | 4 | 72.0 | 25.0% | 0.72 |" in table
    assert (
        "Fewest decode workers keeping the wait under 10%: 8 (1 CPU each), so 8 decode CPUs "
        "per training device (data.decode_workers: 8 per training worker)." in table
    )
    assert "(20.0 samples/s per worker): 5 workers, 5 decode CPUs." in table
    out = summarise(spec, memory, figures[-1:], load_config(QUICKSTART), step)
    assert out["workers_meeting_goal"] == 8  # no decode-bound figure: nothing to estimate from
    assert out["decode_sps_per_worker"] is None and out["estimated_workers"] is None
    assert "Estimate" not in feed_markdown(out, "c")
    json.dumps(out, allow_nan=False)  # strict JSON
    out = summarise(spec, memory, figures[:2], load_config(QUICKSTART), step)
    assert out["workers_meeting_goal"] is None
    assert "No measured worker count kept the wait under 10%." in feed_markdown(out, "c")


def test_spec_refuses_unknown_loaders_and_zero_workers():
    with pytest.raises(ValueError, match="loader 'dali': one of ray, torch"):
        FeedBenchSpec(config={}, manifest="m", loader="dali")
    with pytest.raises(ValueError, match="workers \\(0,\\)"):
        FeedBenchSpec(config={}, manifest="m", workers=(0,))


@pytest.fixture(scope="module")
def manifest(synthetic):
    return build_manifest("kinetics_sound", str(synthetic["kinetics_sound"])).path


def test_epoch_rows_repeat_the_clips_to_the_samples_asked(manifest):
    config = load_config(QUICKSTART, TINY_SIZES)
    full = epoch_rows(manifest, config, 45)  # the 15 usable clips (3 classes x 5), 3 times each
    assert sorted(Counter(full.column("path").to_pylist()).values()) == [3] * 15
    rows = epoch_rows(manifest, config, 37)
    assert rows.column("index").to_pylist() == list(range(37))
    assert rows.column("path").to_pylist() == full.column("path").to_pylist()[:37]


def feed_args(source, tmp_path, loader, workers, batch=("--batch", "4")):
    """`source`: a manifest path, or ("--workdir", DIR) holding the default corpus."""
    source = ("--manifest", source) if isinstance(source, str) else source
    return [
        "feed", "--device", "cpu", "--loader", loader, "--experiment", str(QUICKSTART), *SETS,
        "--workers", workers, *batch, "--steps", "2", "--warmup", "1", "--threads", "1",
        *source, "--json", str(tmp_path / "feed.json"),
        "--markdown", str(tmp_path / "performance.md"),
    ]  # fmt: skip


def check_results(tmp_path, loader, workers):
    data = json.loads((tmp_path / "feed.json").read_text())
    assert data["loader"] == loader and data["device"].startswith("cpu")
    assert data["memory"]["timed_steps"] == 2 and data["memory"]["data_wait"] < 0.05
    assert [f["workers"] for f in data["figures"]] == workers
    for figure in data["figures"]:
        assert figure["timed_steps"] == 2
        assert figure["samples_per_s"] > 0 and 0 <= figure["data_wait"] < 1
        rate = figure["samples_per_s"] / data["memory"]["samples_per_s"]
        assert figure["vs_memory"] == pytest.approx(rate)
    text = (tmp_path / "performance.md").read_text()
    assert text.startswith(f"## Data path, {loader} loader: cpu")
    assert f"<!-- bench feed --loader {loader}: cpu" in text
    assert f"Command: `crisscross bench feed --device cpu --loader {loader} " in text
    assert f"| {loader} | {workers[0]} |" in text
    return data


def without_ray(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(WITHOUT_RAY), "crisscross.bench.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_both_device_benchmarks_run_without_ray_or_mlflow(manifest, tmp_path):
    """A GPU box with torch alone (the lent device machine): `bench feed --loader torch` on its
    default synthetic corpus and `bench train --device` run from `python -m
    crisscross.bench.cli`. (The corpus is made small here beforehand: `feed` makes
    the manifest and reads it, as it does after making the full-size corpus.)"""
    synthesize(
        "kinetics400", tmp_path / "work" / "corpus", SynthSpec(classes=2, per_class=2, seconds=4)
    )
    fed_run = without_ray(
        *feed_args(("--workdir", str(tmp_path / "work")), tmp_path, "torch", "1,2")
    )
    assert fed_run.returncode == 0, fed_run.stderr[-3000:]
    check_results(tmp_path, "torch", [1, 2])
    said = fed_run.stdout
    assert said.index("memory (on the device): ") < said.index("torch, 1 decode worker(s): ")
    assert "torch, 2 decode worker(s): " in said and "samples/s, data wait " in said
    trained = without_ray(
        "train", "--device", "cpu", "--experiment", str(QUICKSTART), *SETS, "--batches", "2",
        "--steps", "1", "--windows", "1", "--warmup", "0", "--threads", "1", "--no-compile",
        "--json", str(tmp_path / "train.json"),
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert json.loads((tmp_path / "train.json").read_text())["rows"][0]["batch"] == 2
    refused = without_ray("feed", "--device", "cpu", "--loader", "ray", "--manifest", manifest)
    assert refused.returncode == 2
    assert "--loader ray: Ray is not importable here" in refused.stderr
    assert "with --loader torch" in refused.stderr


def test_bench_feed_through_the_ray_pipeline(run_cli, local_ray, manifest, tmp_path):
    batch = ("--set", "optim.batch_size=4")  # on a CPU the batch defaults to the experiment's
    result = run_cli("bench", *feed_args(manifest, tmp_path, "ray", "1", batch))
    assert result.exit_code == 0, result.output
    data = check_results(tmp_path, "ray", [1])
    assert data["batch"] == 4
    assert data["cpus_per_decode_worker"] == 0.5  # quickstart's data.decode_cpus


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "2,x"], "--workers 2,x: give whole numbers, comma-separated"),
        (["--workers", "0"], "--workers 0: every value must be at least 1"),
        (["--manifest", "/nowhere/m.parquet"], "--manifest /nowhere/m.parquet: no such file"),
    ],
)
def test_bench_feed_bad_input_is_one_clear_message(run_cli, args, message):
    result = run_cli("bench", "feed", "--device", "cpu", "--loader", "torch", *args)
    assert result.exit_code == 2
    assert message in result.output


@pytest.mark.parametrize("command", ["train", "feed"])
def test_device_benchmarks_refuse_cuda_without_a_gpu(run_cli, command):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = run_cli("bench", command, "--device", "cuda")
    assert result.exit_code == 2
    assert "--device cuda: no CUDA device here" in result.output


def test_the_gpu_script_parses_and_names_options_that_exist():
    script = REPO / "docs" / "benchmarks" / "run-on-gpu.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    from crisscross.bench.cli import bench

    text = script.read_text()
    for name in ("train", "feed"):
        command = bench.commands[name]
        known = {opt for param in command.params for opt in param.opts + param.secondary_opts}
        block = text.split(f'"${{bench[@]}}" {name} ', 1)[1].split("\n\n", 1)[0]
        used = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", block))
        assert used and used <= known, used - known
