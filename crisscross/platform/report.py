"""`crisscross report`: the results table of the seed page, read back from MLflow.

Rows are pretrainings (an MLflow pretraining run, or a released weights file), columns are
downstream datasets with their protocol; a cell is the top-1 mean over the evaluated splits
(± their std, and how many). The latest finished evaluation of each (pretraining, column) wins.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from crisscross.platform.evaluation import TITLES
from crisscross.platform.tracking import experiment_id

# REFERENCE.md section 7: top-1 %, averaged over splits, with the paper's protocols
PAPER = {
    "Kinetics-Sound": {"ucf101": 88.3, "hmdb51": 60.5, "esc50": 82.8},
    "Kinetics-400": {"ucf101": 91.5, "hmdb51": 64.7, "esc50": 86.8},
    "AudioSet": {"ucf101": 92.4, "hmdb51": 67.4, "esc50": 90.5},
}
ORDER = ("ucf101", "hmdb51", "esc50")


@dataclass(frozen=True)
class Cell:
    mean: float
    std: float
    folds: int
    run_id: str

    def text(self) -> str:
        spread = f" ± {100 * self.std:.1f}" if self.folds > 1 else ""
        return f"{100 * self.mean:.1f}{spread} ({self.folds} split{'s' if self.folds > 1 else ''})"


def evaluation_runs(client: MlflowClient, pretrain_runs: Sequence[str] = ()) -> list[Run]:
    """Finished evaluation runs of every experiment, newest first (only of `pretrain_runs`)."""
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    query = "tags.`crisscross.eval` != '' and attributes.status = 'FINISHED'"
    runs = client.search_runs(
        experiments, query, order_by=["attributes.start_time DESC"], max_results=5000
    )
    if pretrain_runs:
        wanted = set(pretrain_runs)
        runs = [r for r in runs if r.data.tags.get("crisscross.pretrain_run") in wanted]
    return runs


def _row_name(run: Run) -> str:
    tags = run.data.tags
    label = tags.get("crisscross.pretrain_label", "?")
    dataset = tags.get("crisscross.pretrain_dataset", "unknown")
    run = tags.get("crisscross.pretrain_run")
    origin = f"run {run[:8]}" if run else tags.get("crisscross.pretrained_kind", "file")
    return f"{label} ({dataset}; {origin})"


def build_table(runs: Sequence[Run]) -> tuple[list[str], list[str], dict[tuple[str, str], Cell]]:
    """(row names, column names, {(row, column): cell}) from evaluation runs, newest first."""
    cells: dict[tuple[str, str], Cell] = {}
    rows: list[str] = []
    columns: list[tuple[int, str]] = []
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        if "top1_mean" not in metrics:
            continue
        dataset = tags.get("crisscross.dataset", "?")
        column = f"{TITLES.get(dataset, dataset)}: {tags.get('crisscross.protocol', '?')}"
        row = _row_name(run)
        if (row, column) in cells:
            continue  # an older evaluation of the same thing
        cells[(row, column)] = Cell(
            metrics["top1_mean"],
            metrics.get("top1_std", 0.0),
            int(metrics.get("folds", 1)),
            run.info.run_id,
        )
        if row not in rows:
            rows.append(row)
        rank = ORDER.index(dataset) if dataset in ORDER else len(ORDER)
        if (rank, column) not in columns:
            columns.append((rank, column))
    return rows, [c for _, c in sorted(columns)], cells


def render(runs: Sequence[Run], *, paper: bool = True) -> str:
    """The markdown report: our results, then the paper's for comparison."""
    rows, columns, cells = build_table(runs)
    lines = ["# CrissCross downstream results", ""]
    if not rows:
        lines.append("No finished evaluation runs found (run `crisscross finetune` or `svm`).")
    else:
        lines.append("Top-1 accuracy (%), mean over the evaluated splits (± std across them).")
        lines.append("")
        lines.append("| pretraining | " + " | ".join(columns) + " |")
        lines.append("|---" * (len(columns) + 1) + "|")
        for row in rows:
            values = [cells[(row, c)].text() if (row, c) in cells else "-" for c in columns]
            lines.append(f"| {row} | " + " | ".join(values) + " |")
    if paper:
        lines += ["", "Published (REFERENCE.md section 7; fine-tuning 3 splits, SVM 5 folds):", ""]
        lines.append("| pretraining | UCF101 | HMDB51 | ESC50 |")
        lines.append("|---|---|---|---|")
        for name, values in PAPER.items():
            lines.append(f"| {name} | " + " | ".join(f"{values[d]:.1f}" for d in ORDER) + " |")
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
