"""Training commands: `pretrain` and `quickstart`."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from crisscross.platform.bench_train import run_train_benchmark
from crisscross.platform.clickutil import SET_OPTION, BadInput, as_exit_status, load_experiment
from crisscross.platform.pretrain import (
    Outcome,
    PretrainError,
    resume_target,
    run_pretrain,
)
from crisscross.platform.quickstart import EXPERIMENT as QUICKSTART
from crisscross.platform.quickstart import EXPERIMENTS, run_quickstart
from crisscross.trainers.bench import TrainBenchSpec

PAPER = EXPERIMENTS / "pretext" / "kinetics_sound.yaml"  # the paper-size step


@click.command()
@click.argument("experiment", required=False, type=click.Path(dir_okay=False))
@SET_OPTION
@click.option("--root", help="Dataset root, a folder or URI (sets data.root).")
@click.option("--workers", type=click.IntRange(min=1), help="Ray Train workers (sets run.workers).")
@click.option(
    "--resume",
    "resume_run",
    metavar="RUN_ID",
    help="Continue the pretraining logged as MLflow run RUN_ID, from its last checkpoint "
    "(EXPERIMENT defaults to that run's config).",
)
def pretrain(
    experiment: str | None,
    sets: tuple[str, ...],
    root: str | None,
    workers: int | None,
    resume_run: str | None,
) -> None:
    """Pretrain the CrissCross encoders of EXPERIMENT on Ray Train, tracked in MLflow.

    Running the same command again continues from the last checkpoint, in the same MLflow run.
    """
    extra: dict[str, Any] = {}
    if root is not None:
        extra["data.root"] = root
    if workers is not None:
        extra["run.workers"] = workers
    with tempfile.TemporaryDirectory(prefix="crisscross-resume-") as scratch:
        if resume_run:
            try:
                saved, where = resume_target(resume_run, scratch)
            except PretrainError as exc:
                raise BadInput(str(exc)) from None
            experiment = experiment or saved
            extra = where | extra
        if experiment is None:
            raise BadInput("give an EXPERIMENT file (or --resume RUN_ID)")
        config = load_experiment(experiment, sets, extra)
    with as_exit_status():
        outcome = run_pretrain(config, say=click.echo)
    click.echo(report(outcome))


@click.command()
@click.option(
    "--workdir",
    default="quickstart",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the synthetic data and the run folder go.",
)
def quickstart(workdir: str) -> None:
    """Synthesise data, pretrain the tiny model with 2 Ray workers on CPU, track it in the local
    MLflow store, print the kNN accuracy of the encoders before and after, then run the ESC-50
    SVM and a short UCF101 fine-tune on the pretrained encoders and print the results table."""
    from crisscross.platform.cli_eval import summary

    start = time.perf_counter()
    with as_exit_status():
        result = run_quickstart(Path(workdir), say=click.echo)
    click.echo(report(result.pretrain))
    for outcome in result.evaluations:
        click.echo(summary(outcome))
    click.echo("\n" + result.report)
    click.echo(f"(also in {result.report_path})")
    click.echo(f"quickstart took {time.perf_counter() - start:.0f} s")


def report(outcome: Outcome) -> str:
    lines = [
        f"done: step {outcome.final_step}; MLflow run {outcome.run_id}",
        f"  backbones (released format): {', '.join(outcome.backbones.values())} "
        "(artifacts of the run)",
        f"  checkpoints: {outcome.run_dir}",
    ]
    if outcome.knn_before or outcome.knn_after:
        for key in sorted(set(outcome.knn_before) | set(outcome.knn_after)):
            before = outcome.knn_before.get(key, float("nan"))
            after = outcome.knn_after.get(key, float("nan"))
            name = key.removeprefix("knn/")
            lines.append(f"  kNN {name}: {before:.3f} before -> {after:.3f} after training")
    uri = outcome.tracking_uri
    lines.append(f"  browse: mlflow ui --backend-store-uri {uri}")
    return "\n".join(lines)


@click.command("train")
@click.option(
    "--experiment",
    type=click.Path(dir_okay=False),
    help="Model, loss and shapes to time [experiments/pretext/quickstart.yaml].",
)
@SET_OPTION
@click.option("--batch", type=click.IntRange(min=2), help="Batch per step [optim.batch_size].")
@click.option(
    "--steps",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="Steps per timed window.",
)
@click.option(
    "--windows",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Timed windows; each side's figure is its median window.",
)
@click.option("--warmup", default=5, show_default=True, type=click.IntRange(min=0))
@click.option("--threads", type=click.IntRange(min=1), help="Torch threads [all CPUs].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the results.")
@click.option(
    "--device",
    type=click.Choice(["cuda", "cpu"]),
    help="Instead: the step on this device, baseline (fp32, eager) against ours (bf16, "
    "channels-last, compiled, fused Adam), at each of --batches [paper-size experiment].",
)
@click.option(
    "--batches",
    default="32,64,128,256",
    show_default=True,
    help="With --device: per-device batch sizes, comma-separated.",
)
@click.option(
    "--markdown",
    type=click.Path(dir_okay=False),
    help="With --device: put the table in this device's section of FILE, keeping the rest.",
)
@click.option(
    "--compile/--no-compile",
    default=True,
    show_default=True,
    help="With --device: torch.compile in our mode.",
)
def bench_train(
    experiment: str | None,
    sets: tuple[str, ...],
    batch: int | None,
    steps: int,
    windows: int,
    warmup: int,
    threads: int | None,
    json_path: str | None,
    device: str | None,
    batches: str,
    markdown: str | None,
    compile: bool,
) -> None:
    """Pretext-step samples/s through Ray Train (1 worker) against a bare PyTorch loop with the
    same model, batch, threads and in-memory tensors, in one run (goal: ratio >= 0.9).

    With --device: the step's throughput, step time, peak memory and MFU, baseline against
    optimised, at several batch sizes, in one run (goal: ours >= 2x at the best batch size)."""
    if device is not None:
        step_benchmark(
            experiment, sets, device=device, batches=batches, steps=steps, windows=windows,
            warmup=warmup, threads=threads, compile=compile, json_path=json_path,
            markdown=markdown,
        )  # fmt: skip
        return
    config = load_experiment(experiment or str(QUICKSTART), sets)
    spec = TrainBenchSpec(
        config=config.model_dump(by_alias=True),
        batch=batch or config.optim.batch_size,
        steps=steps,
        windows=windows,
        warmup=warmup,
        threads=threads or os.cpu_count() or 1,
    )
    results = run_train_benchmark(spec)
    click.echo(
        f"bare torch  {results['bare_torch_sps']:8.1f} samples/s "
        f"(runs: {', '.join(f'{v:.1f}' for v in results['bare_runs_sps'])})\n"
        f"ray train   {results['ray_train_sps']:8.1f} samples/s\n"
        f"ratio       {results['ratio']:8.3f}  (goal >= {results['goal_ratio']}: "
        f"{'met' if results['ratio'] >= results['goal_ratio'] else 'NOT met'})"
    )
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(results, indent=2) + "\n")
        click.echo(f"wrote {json_path}")


def step_benchmark(
    experiment: str | None,
    sets: tuple[str, ...],
    *,
    device: str,
    batches: str,
    steps: int,
    windows: int,
    warmup: int,
    threads: int | None,
    compile: bool,
    json_path: str | None,
    markdown: str | None,
) -> None:
    """`bench train --device`: baseline against optimised on `device` (paper size by default)."""
    import shlex

    import torch

    from crisscross.trainers.bench_step import (
        StepBenchSpec,
        performance_markdown,
        run_step_benchmark,
        write_markdown_section,
    )

    if device == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: no CUDA device here (torch.cuda.is_available() is false)")
    try:
        sizes = tuple(int(b) for b in batches.split(","))
    except ValueError:
        raise BadInput(f"--batches {batches}: give batch sizes as integers, e.g. 32,64") from None
    if not sizes or min(sizes) < 2:
        raise BadInput(f"--batches {batches}: every batch size must be at least 2")
    config = load_experiment(experiment or str(PAPER), sets)
    spec = StepBenchSpec(
        config=config.model_dump(by_alias=True),
        batches=sizes,
        device=device,
        steps=steps,
        windows=windows,
        warmup=warmup,
        threads=threads,
        compile=compile,
    )
    results = run_step_benchmark(spec)
    command = ["crisscross", "bench", "train", "--device", device]
    if experiment:
        command += ["--experiment", experiment]
    command += [a for s in sets for a in ("--set", s)]
    command += ["--batches", batches, "--steps", str(steps), "--windows", str(windows)]
    command += ["--warmup", str(warmup)] + (["--threads", str(threads)] if threads else [])
    command += ["--compile" if compile else "--no-compile"]
    table = performance_markdown(results, shlex.join(command))
    click.echo(table)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(results, indent=2) + "\n")
        click.echo(f"wrote {json_path}")
    if markdown:
        write_markdown_section(Path(markdown), results["device"], table)
        click.echo(f"wrote the {results['device']} section of {markdown}")
