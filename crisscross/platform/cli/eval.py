"""Evaluation commands: `finetune`, `svm`, `probe` and `report`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from crisscross.config import ExperimentConfig, FinetuneExperiment, ProbeExperiment, SvmExperiment
from crisscross.platform.cli.common import SET_OPTION, as_exit_status, load_experiment

if TYPE_CHECKING:
    from crisscross.platform.evaluation.common import EvalOutcome

SOURCE_HELP = (
    "Weights to evaluate: a released file (vid_/aud_crisscross_*.pth.tar), the MLflow run id of "
    "a pretraining, or a checkpoint folder (or a pretraining's run folder)."
)


def _options(command):
    for option in reversed(
        [
            click.argument("experiment", type=click.Path(dir_okay=False)),
            click.option(
                "--pretrained", "source", required=True, metavar="SOURCE", help=SOURCE_HELP
            ),
            click.option("--fold", default="all", show_default=True, help="Split to run, or all."),
            click.option("--root", help="Dataset root, a folder or URI (sets data.root)."),
            click.option("--workers", type=click.IntRange(min=1), help="Sets run.workers."),
            SET_OPTION,
        ]
    ):
        command = option(command)
    return command


def _extra(root: str | None, workers: int | None) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if root is not None:
        extra["data.root"] = root
    if workers is not None:
        extra["run.workers"] = workers
    return extra


def _titles() -> dict[str, str]:
    from crisscross.platform.evaluation.common import TITLES

    return TITLES


def summary(outcome: EvalOutcome) -> str:
    folds = ", ".join(f"{k}: {100 * v:.1f}" for k, v in outcome.per_fold.items())
    spread = f" ± {100 * outcome.std:.1f}" if len(outcome.per_fold) > 1 else ""
    lines = [
        f"{_titles()[outcome.dataset]} {outcome.protocol} of {outcome.pretrain_label}: top-1 "
        f"{100 * outcome.mean:.1f}{spread} % over {len(outcome.per_fold)} split(s) ({folds})",
    ]
    if "best_mean" in outcome.extra:
        lines.append(
            f"  best epoch per split (chosen on the test split, for reference): "
            f"{100 * outcome.extra['best_mean']:.1f} %"
        )
    if "knn_mean" in outcome.extra:
        lines.append(f"  kNN top-1: {100 * outcome.extra['knn_mean']:.1f} %")
    from crisscross.platform.redact import redact

    lines.append(f"  MLflow run {outcome.run_id} in {redact(outcome.uri)}")
    return "\n".join(lines)


@click.command()
@_options
def finetune(experiment, source, fold, root, workers, sets) -> None:
    """Fine-tune the pretrained video encoder on UCF101/HMDB51 (REFERENCE.md section 6): each
    split a Ray Train run, softmax averaged over the test clips, tracked in one MLflow run."""
    config = load_experiment(experiment, sets, _extra(root, workers), schema=FinetuneExperiment)
    with as_exit_status():
        from crisscross.platform.evaluation.protocols import evaluate

        outcome = evaluate("finetune", config, source=source, folds=fold, say=click.echo)
    click.echo(summary(outcome))


@click.command()
@_options
@click.option(
    "--choose-c-on-test",
    is_flag=True,
    help="Pick C on the test fold as the reference code did (optimistic; labelled in results).",
)
@click.option(
    "--protocol",
    type=click.Choice(["clean", "reference"]),
    default=None,
    help="svm.protocol: 'reference' is the reference code's SVM, which produced the paper's "
    "numbers (C on the test fold); default: the experiment's, 'clean' unless it says otherwise.",
)
def svm(experiment, source, fold, root, workers, sets, choose_c_on_test, protocol) -> None:
    """Linear SVM on frozen audio features of ESC-50, 5 folds, C chosen on the training folds."""
    extra = _extra(root, workers) | ({"svm.select_c": "test"} if choose_c_on_test else {})
    extra |= {"svm.protocol": protocol} if protocol else {}
    config = load_experiment(experiment, sets, extra, schema=SvmExperiment)
    with as_exit_status():
        from crisscross.platform.evaluation.protocols import evaluate

        outcome = evaluate("svm", config, source=source, folds=fold, say=click.echo)
    click.echo(summary(outcome))


@click.command()
@_options
def probe(experiment, source, fold, root, workers, sets) -> None:
    """Logistic-regression probe (and kNN) on frozen pooled embeddings: video on UCF101/HMDB51,
    audio on ESC-50."""
    config = load_experiment(experiment, sets, _extra(root, workers), schema=ProbeExperiment)
    with as_exit_status():
        from crisscross.platform.evaluation.protocols import evaluate

        outcome = evaluate("probe", config, source=source, folds=fold, say=click.echo)
    click.echo(summary(outcome))


@click.command()
@click.option(
    "--pretrain-run",
    "pretrain_runs",
    multiple=True,
    metavar="RUN_ID",
    help="Only evaluations of this pretraining run (repeatable); default: all.",
)
@click.option(
    "--out",
    default="crisscross_report.md",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Markdown file to write.",
)
@click.option(
    "--tracking-uri", "uri", help="MLflow store [$MLFLOW_TRACKING_URI, else ./mlflow.db]."
)
@click.option(
    "--experiment",
    default="crisscross",
    show_default=True,
    help="MLflow experiment the report itself is logged to (evaluations are read from all).",
)
@click.option("--no-paper", is_flag=True, help="Leave out the published numbers.")
def report(
    pretrain_runs: tuple[str, ...], out: str, uri: str | None, experiment: str, no_paper: bool
) -> None:
    """Print and write the results table (pretraining x downstream dataset, top-1 mean over
    splits, protocol named) from MLflow, and log it as an artifact."""
    from crisscross.platform.evaluation.report import write_report
    from crisscross.platform.tracking import tracking_uri

    uri = uri or tracking_uri(ExperimentConfig())
    text, path, run_id = write_report(
        uri, pretrain_runs=pretrain_runs, out=Path(out), experiment=experiment, paper=not no_paper
    )
    click.echo(text)
    click.echo(f"wrote {path}; logged as report.md of MLflow run {run_id}")
