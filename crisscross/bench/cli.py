"""`crisscross bench`: benchmarks that print ratios measured side by side in one run.

Every import beyond click and the config is made inside the command that needs it, so the
device benchmarks (`train --device`, `feed --loader torch`) run where only torch, PyAV and the
config's packages are installed, without Ray or MLflow:
`python -m crisscross.bench.cli feed --loader torch ...`.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from crisscross.platform.cli.common import SET_OPTION, BadInput, load_experiment
from crisscross.platform.storage import EXPERIMENTS

QUICKSTART = EXPERIMENTS / "pretext" / "quickstart.yaml"
PAPER = EXPERIMENTS / "pretext" / "kinetics_sound.yaml"  # the paper-size step
Command = TypeVar("Command", bound=Callable[..., Any])


JSON_OPTION = click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), help="Write the results."
)
WARMUP_OPTION = click.option(
    "--warmup",
    default=5,
    show_default=True,
    type=click.IntRange(min=0),
    help="Steps before timing (start-up, compilation).",
)


def device_options(markdown_help: str, compile_help: str) -> Callable[[Command], Command]:
    """--device's companions shared by `train --device` and `feed`: --markdown, --compile."""

    def decorate(command: Command) -> Command:
        command = click.option(
            "--compile/--no-compile", default=True, show_default=True, help=compile_help
        )(command)
        return click.option("--markdown", type=click.Path(dir_okay=False), help=markdown_help)(
            command
        )

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def bench() -> None:
    """Benchmarks that print ratios measured side by side in one run."""


@bench.command("data")
@JSON_OPTION
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep the corpus here.")
@click.option("--clips", default=8, show_default=True, type=click.IntRange(min=2))
@click.option("--samples", default=48, show_default=True, type=click.IntRange(min=2))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1))
def bench_data(
    json_path: str | None, workdir: str | None, clips: int, samples: int, workers: int
) -> None:
    """Samples/s of every way of reading a Kinetics-like corpus (10 s, 340x256, 25 fps H.264,
    keyframe every 2 s, 44.1 kHz stereo AAC), and their ratios against the goals."""
    from crisscross.bench.data import DataBenchSpec, run_data_benchmark
    from crisscross.bench.data import report as report_table

    spec = DataBenchSpec(
        clips=clips, samples=samples, naive_samples=max(2, samples // 4), workers=workers
    )
    with tempfile.TemporaryDirectory(prefix="crisscross-bench-") as scratch:
        results = run_data_benchmark(spec, workdir or scratch)
    click.echo(report_table(results))
    write_results(results, json_path)


@bench.command("train")
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
@WARMUP_OPTION
@click.option("--threads", type=click.IntRange(min=1), help="Torch threads [all CPUs].")
@JSON_OPTION
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
@device_options(
    "With --device: put the table in this device's section of FILE, keeping the rest.",
    "With --device: torch.compile in our mode.",
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
    from crisscross.bench.train import run_train_benchmark
    from crisscross.bench.train_steps import TrainBenchSpec

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
    write_results(results, json_path)


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
    from crisscross.bench.step import (
        StepBenchSpec,
        performance_markdown,
        run_step_benchmark,
    )

    require_device(device)
    sizes = counts("--batches", batches, minimum=2)
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
    write_results(results, json_path, table=table, markdown=markdown, kind="bench train --device")


@bench.command("learning")
@click.option(
    "--experiment",
    type=click.Path(dir_okay=False, exists=True),
    help="The recipe to measure [experiments/pretext/learning.yaml].",
)
@SET_OPTION
@click.option("--seeds", default="0,1,2", show_default=True, help="Seeds, comma-separated.")
@click.option(
    "--ablation",
    is_flag=True,
    help="Also the loss families and two sampling modes at the same budget, as one sweep.",
)
@click.option(
    "--supervised/--no-supervised",
    default=True,
    show_default=True,
    help="Train the supervised reference (the same encoders on the labels, same budget).",
)
@click.option(
    "--workdir",
    default="runs/bench-learning",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The corpus, run folders and MLflow store (sqlite:///WORKDIR/mlflow.db).",
)
@JSON_OPTION
@click.option("--markdown", type=click.Path(dir_okay=False), help="Write the tables here.")
def bench_learning(
    experiment: str | None,
    sets: tuple[str, ...],
    seeds: str,
    ablation: bool,
    supervised: bool,
    workdir: str,
    json_path: str | None,
    markdown: str | None,
) -> None:
    """Does pretraining help? kNN and linear-probe accuracy of both encoders at random init,
    after pretraining through `crisscross pretrain`, and of a supervised reference, per seed on
    the learning corpus, against chance (goal: kNN gain >= 0.25 on both modalities, within 15
    minutes per seed on 2 cores, at most 20 % of the wall time outside training steps)."""
    from crisscross.bench.learning import (
        EXPERIMENT,
        LearningSpec,
        run_learning_benchmark,
    )
    from crisscross.bench.learning import (
        markdown as learning_markdown,
    )
    from crisscross.config import parse_overrides
    from crisscross.platform.cli.common import as_exit_status

    chosen = tuple(counts("--seeds", seeds, minimum=0))
    path = Path(experiment) if experiment else EXPERIMENT
    load_experiment(str(path), sets)  # bad input stops here, before any corpus or worker
    spec = LearningSpec(
        workdir=Path(workdir).resolve(),
        seeds=chosen,
        experiment=path,
        overrides=tuple(parse_overrides(sets).items()),
        supervised=supervised,
        ablation=ablation,
    )
    with as_exit_status():
        results = run_learning_benchmark(spec, say=click.echo)
    command = ["crisscross", "bench", "learning", "--seeds", seeds]
    command += ["--experiment", experiment] if experiment else []
    command += ["--ablation"] if ablation else []
    command += [] if supervised else ["--no-supervised"]
    command += ["--workdir", workdir]
    command += [a for s in sets for a in ("--set", s)]
    table = learning_markdown(results, shlex.join(command))
    click.echo(table)
    write_results(results, json_path)
    if markdown:
        Path(markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(markdown).write_text(table)
        click.echo(f"wrote {markdown}")


@bench.command("feed")
@click.option(
    "--experiment",
    type=click.Path(dir_okay=False),
    help="Model, loss, shapes and decode settings [on cuda the paper-size "
    "experiments/pretext/kinetics_sound.yaml, on cpu experiments/pretext/quickstart.yaml].",
)
@SET_OPTION
@click.option(
    "--device",
    type=click.Choice(["cuda", "cpu"]),
    help="Where the step runs [cuda when there is one, else cpu].",
)
@click.option(
    "--loader",
    type=click.Choice(["ray", "torch"]),
    default="ray",
    show_default=True,
    help="ray: the pretraining pipeline (Ray Data decode actors); torch: a DataLoader over the "
    "same per-sample function, for machines without Ray.",
)
@click.option(
    "--workers",
    default="2,4,8",
    show_default=True,
    help="Decode worker counts to measure, comma-separated.",
)
@click.option(
    "--batch",
    type=click.IntRange(min=2),
    help="Batch per step [64 on cuda; on cpu the experiment's optim.batch_size].",
)
@click.option(
    "--steps", default=20, show_default=True, type=click.IntRange(min=1), help="Timed steps."
)
@WARMUP_OPTION
@click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(dir_okay=False),
    help="A corpus manifest to decode [a synthetic Kinetics-like corpus, as `bench data`'s].",
)
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep the synthetic corpus here.")
@click.option("--threads", type=click.IntRange(min=1), help="Torch threads of the step [all].")
@JSON_OPTION
@device_options(
    "Put the table in this device's data-path section of FILE, keeping the rest.",
    "torch.compile where the experiment's run section asks for it.",
)
def bench_feed(
    experiment: str | None,
    sets: tuple[str, ...],
    device: str | None,
    loader: str,
    workers: str,
    batch: int | None,
    steps: int,
    warmup: int,
    manifest_path: str | None,
    workdir: str | None,
    threads: int | None,
    compile: bool,
    json_path: str | None,
    markdown: str | None,
) -> None:
    """The data-wait share of the pretext step fed by N decode workers, against the same step
    on batches kept on the device, in one run; the fewest workers keeping the wait under 10 %
    (decode CPUs per GPU)."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    require_device(device)
    worker_counts = counts("--workers", workers, minimum=1)
    if manifest_path and not Path(manifest_path).is_file():
        raise BadInput(f"--manifest {manifest_path}: no such file (make one: crisscross manifest)")
    if loader == "ray":
        _connect_ray()
    # a laptop without a GPU gets a step it can run in minutes, not the paper-size one
    config = load_experiment(experiment or str(PAPER if device == "cuda" else QUICKSTART), sets)
    batch = batch or (64 if device == "cuda" else config.optim.batch_size)
    with tempfile.TemporaryDirectory(prefix="crisscross-bench-feed-") as scratch:
        results = _feed(
            config.model_dump(by_alias=True),
            manifest_path or _synthetic_corpus(Path(workdir or scratch)),
            workers=worker_counts, loader=loader, device=device, batch=batch, steps=steps,
            warmup=warmup, threads=threads, compile=compile,
        )  # fmt: skip
    command = ["crisscross", "bench", "feed", "--device", device, "--loader", loader]
    command += (["--experiment", experiment] if experiment else []) + ["--workers", workers]
    command += [a for s in sets for a in ("--set", s)]
    command += ["--manifest", manifest_path] if manifest_path else []
    command += ["--batch", str(batch), "--steps", str(steps), "--warmup", str(warmup)]
    command += (["--threads", str(threads)] if threads else []) + (
        [] if compile else ["--no-compile"]
    )
    from crisscross.bench.feed import feed_markdown

    table = feed_markdown(results, shlex.join(command))
    click.echo(table)
    write_results(
        results,
        json_path,
        table=table,
        markdown=markdown,
        kind=f"bench feed --loader {loader}",
        heading=f"Data path, {loader} loader: {{device}}",
    )


@bench.command("cli")
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(min=1))
def bench_cli(repeats: int) -> None:
    """Start-up time of `crisscross --help` and `config validate` beside `python -c pass`."""
    from crisscross.bench.cli_start import cli_commands, cli_table, time_commands

    experiment = Path(EXPERIMENTS) / "pretext" / "kinetics_sound.yaml"
    try:
        times = time_commands(cli_commands(experiment), repeats=repeats)
    except RuntimeError as exc:
        raise BadInput(str(exc)) from None
    click.echo(cli_table(times))


@bench.command("scale")
@click.option(
    "--rows",
    default=2_000_000,
    show_default=True,
    type=click.IntRange(min=1000),
    help="Rows of the synthetic AudioSet manifest (segments CSV lines).",
)
@click.option(
    "--workers",
    default=16,
    show_default=True,
    type=click.IntRange(min=1),
    help="Training workers the epoch is sharded for.",
)
@click.option(
    "--repeats",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="optim.repeats_per_epoch.",
)
@click.option(
    "--batch",
    default=2048,
    show_default=True,
    type=click.IntRange(min=1),
    help="optim.batch_size (a multiple of --workers).",
)
@click.option(
    "--rows-per-task",
    default=None,
    type=click.IntRange(min=1),
    help="data.rows_per_task: rows a block of the worker's dataset holds "
    "[default: unset, as in a pretraining: 8, more on a share over 65,536 rows].",
)
@JSON_OPTION
def bench_scale(
    rows: int,
    workers: int,
    repeats: int,
    batch: int,
    rows_per_task: int | None,
    json_path: str | None,
) -> None:
    """Seconds and peak memory of every per-row step on a synthetic manifest without media:
    listing, judging, Parquet write and read, epoch order, checkpoint data position, resume."""
    from crisscross.bench.scale import run_scale, scale_table

    if batch % workers:
        raise BadInput(f"--batch {batch} is not a multiple of --workers {workers}")
    results = run_scale(
        rows=rows, workers=workers, repeats=repeats, batch=batch, rows_per_task=rows_per_task
    )
    click.echo(scale_table(results))
    write_results(results, json_path)


def require_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise BadInput("--device cuda: no CUDA device here (torch.cuda.is_available() is false)")


def counts(option: str, text: str, *, minimum: int) -> tuple[int, ...]:
    """`2,4,8` -> (2, 4, 8); BadInput naming the option otherwise."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise BadInput(
            f"{option} {text}: give whole numbers, comma-separated, e.g. 2,4,8"
        ) from None
    if min(values) < minimum:
        raise BadInput(f"{option} {text}: every value must be at least {minimum}")
    return values


def write_results(
    results: dict[str, Any],
    json_path: str | None,
    *,
    table: str | None = None,
    markdown: str | None = None,
    kind: str = "",
    heading: str = "{device}",
) -> None:
    """The JSON file, and this device's section of the markdown file, when asked for."""
    from crisscross.bench.data import write_json

    if json_path:
        write_json(results, json_path)
        click.echo(f"wrote {json_path}")
    if markdown and table is not None:
        from crisscross.bench.step import write_markdown_section

        write_markdown_section(Path(markdown), results["device"], table, kind=kind, heading=heading)
        click.echo(f"wrote the {kind} {results['device']} section of {markdown}")


def _connect_ray() -> None:
    try:
        from crisscross.platform.pretrain.job import connect_ray
        from crisscross.trainers.pretrain import quiet_ray
    except ImportError as exc:
        raise BadInput(
            f"--loader ray: Ray is not importable here ({exc}); measure the same decode work "
            "with --loader torch"
        ) from None
    connect_ray()
    quiet_ray()


def _synthetic_corpus(workdir: Path) -> str:
    from crisscross.bench.feed import default_corpus

    click.echo(f"making the synthetic corpus under {workdir} (once per --workdir)")
    return default_corpus(workdir)


def _feed(config: dict[str, Any], manifest: str, **options: Any) -> dict[str, Any]:
    from crisscross.bench.feed import FeedBenchSpec, run_feed_benchmark

    try:
        return run_feed_benchmark(
            FeedBenchSpec(config=config, manifest=manifest, **options), say=click.echo
        )
    except ValueError as exc:  # a manifest with no usable clip, an unknown loader
        raise BadInput(str(exc)) from None


if __name__ == "__main__":  # `python -m crisscross.bench.cli`: no Ray or MLflow needed
    bench(prog_name="crisscross bench")
