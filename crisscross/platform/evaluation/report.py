"""`crisscross report`: the results table of the seed page, read back from MLflow.

One line per downstream dataset and pretraining (an MLflow pretraining run, or a released weights
file), in the seed page's columns (Dataset, Pretraining DB, Top-1 Acc., Model) plus the protocol
and the evaluation's MLflow run; top-1 is the mean over the evaluated splits (± their std, and how
many). The latest finished evaluation of each (pretraining, dataset, protocol) wins.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from crisscross.platform.evaluation.common import TITLES
from crisscross.platform.tracking import experiment_id

# REFERENCE.md section 7: top-1 %, averaged over splits, with the paper's protocols
PAPER = {
    "Kinetics-Sound": {"ucf101": 88.3, "hmdb51": 60.5, "esc50": 82.8},
    "Kinetics-400": {"ucf101": 91.5, "hmdb51": 64.7, "esc50": 86.8},
    "AudioSet": {"ucf101": 92.4, "hmdb51": 67.4, "esc50": 90.5},
}
ORDER = ("ucf101", "hmdb51", "esc50")
# on an evaluation of a baseline (the random init, say): the pretraining run it is compared with
BASELINE_OF = "crisscross.baseline_of"


@dataclass(frozen=True)
class Entry:
    """One line of the table: a downstream result of one pretraining under one protocol."""

    dataset: str
    pretraining: str
    mean: float
    std: float
    folds: int
    protocol: str
    model: str
    run_id: str

    def line(self) -> str:
        spread = f" ± {100 * self.std:.1f}" if self.folds > 1 else ""
        splits = f"{self.folds} split{'s' if self.folds > 1 else ''}"
        return (
            f"| {TITLES.get(self.dataset, self.dataset)} | {self.pretraining} | "
            f"{100 * self.mean:.1f}%{spread} ({splits}) | {self.protocol} | {self.model} | "
            f"{self.run_id[:8]} |"
        )


def evaluation_runs(client: MlflowClient, pretrain_runs: Sequence[str] = ()) -> list[Run]:
    """Finished evaluation runs of every experiment, newest first (only of `pretrain_runs`, and
    the baselines evaluated beside them)."""
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    query = "tags.`crisscross.eval` != '' and attributes.status = 'FINISHED'"
    runs = client.search_runs(
        experiments, query, order_by=["attributes.start_time DESC"], max_results=5000
    )
    if pretrain_runs:
        wanted = set(pretrain_runs)
        runs = [
            r
            for r in runs
            if r.data.tags.get("crisscross.pretrain_run") in wanted
            or r.data.tags.get(BASELINE_OF) in wanted
        ]
    return runs


def _pretraining(run: Run) -> str:
    tags = run.data.tags
    label = tags.get("crisscross.pretrain_label", "?")
    dataset = tags.get("crisscross.pretrain_dataset", "unknown")
    run = tags.get("crisscross.pretrain_run")
    origin = f"run {run[:8]}" if run else tags.get("crisscross.pretrained_kind", "file")
    return f"{dataset} ({label}; {origin})"


def entries(runs: Sequence[Run]) -> list[Entry]:
    """The table's lines from evaluation runs given newest first: the latest evaluation of each
    (pretraining, dataset, protocol), grouped by pretraining, datasets in the seed page's order."""
    found: dict[tuple[str, str, str], Entry] = {}
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        if "top1_mean" not in metrics:
            continue
        key = (
            _pretraining(run),
            tags.get("crisscross.dataset", "?"),
            tags.get("crisscross.protocol", "?"),
        )
        if key in found:
            continue  # an older evaluation of the same thing
        found[key] = Entry(
            dataset=key[1],
            pretraining=key[0],
            mean=metrics["top1_mean"],
            std=metrics.get("top1_std", 0.0),
            folds=int(metrics.get("folds", 1)),
            protocol=key[2],
            model=tags.get("crisscross.pretrained_path", "?").rstrip("/").rsplit("/", 1)[-1],
            run_id=run.info.run_id,
        )
    first_seen = {pre: i for i, (pre, _, _) in reversed(list(enumerate(found)))}
    rank = {d: i for i, d in enumerate(ORDER)}
    return sorted(
        found.values(),
        key=lambda e: (first_seen[e.pretraining], rank.get(e.dataset, len(ORDER)), e.protocol),
    )


HEADER = (
    "| Dataset | Pretraining DB | Top-1 Acc. | Protocol | Model | Evaluation run |\n"
    "| ------- | -------------- | ---------- | -------- | ----- | -------------- |"
)


def render(runs: Sequence[Run], *, paper: bool = True) -> str:
    """The markdown report in the seed page's shape, then the paper's numbers for comparison."""
    lines = ["# CrissCross downstream results", ""]
    found = entries(runs)
    if not found:
        lines.append("No finished evaluation runs found (run `crisscross finetune` or `svm`).")
    else:
        lines += [
            "Top-1 accuracy, mean over the evaluated splits (± std across them).",
            "",
            HEADER,
            *(entry.line() for entry in found),
        ]
    if paper:
        lines += ["", "Published (REFERENCE.md section 7):", "", HEADER]
        for name, values in PAPER.items():
            db = name.lower().replace("-", "").replace("kineticssound", "kinetics_sound")
            for dataset in ORDER:
                protocol = "linear SVM 2s, 5 folds" if dataset == "esc50" else "finetune, 3 splits"
                prefix = "aud" if dataset == "esc50" else "vid"
                lines.append(
                    f"| {TITLES[dataset]} | {name} | {values[dataset]:.1f}% | {protocol} | "
                    f"{prefix}_crisscross_{db}.pth.tar | - |"
                )
    return "\n".join(lines) + "\n"


def write_report(
    uri: str,
    *,
    pretrain_runs: Sequence[str] = (),
    out: Path | None = None,
    experiment: str = "crisscross",
    paper: bool = True,
) -> tuple[str, Path | None, str]:
    """(markdown, the file written or None, the MLflow run holding it as an artifact)."""
    client = MlflowClient(uri)
    text = render(evaluation_runs(client, pretrain_runs), paper=paper)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
    run = client.create_run(
        experiment_id(client, experiment), run_name=f"report-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    client.set_tag(run.info.run_id, "crisscross.report", "true")
    if pretrain_runs:
        client.set_tag(run.info.run_id, "crisscross.pretrain_runs", ",".join(pretrain_runs))
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "report.md"
        path.write_text(text)
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id, status="FINISHED")
    return text, out, run.info.run_id
