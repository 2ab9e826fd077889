"""What a sweep leaves: the trials table, the best trial, the pictures and `best.yaml`."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crisscross.config import ExperimentConfig, apply_overrides, dump_config
from crisscross.platform.pretrain.run_record import read_record
from crisscross.platform.redact import public_config
from crisscross.platform.sweep.plan import SweepPlan
from crisscross.platform.sweep.report import SCORE
from crisscross.platform.sweep.trial import LEDGER

RANK = {"finished": 0, "stopped": 1, "interrupted": 2, "failed": 3}


@dataclass
class TrialRow:
    """One trial as the sweep ends: its values, how it ended, its score, its MLflow run."""

    trial_id: str
    name: str
    params: dict[str, Any]
    status: str  # finished | stopped | failed | interrupted
    reason: str
    epoch: int
    score: float | None
    run_id: str | None
    final: dict[str, float] = field(default_factory=dict)  # protocol -> mean top-1

    @property
    def final_score(self) -> float | None:
        return float(np.mean(list(self.final.values()))) if self.final else None


def collect(results: Any, plan: SweepPlan, runs_dir: str) -> list[TrialRow]:
    """A row per trial of Tune's ResultGrid, with the ledger's account of how it ended."""
    rows = []
    for result in results:
        name = Path(result.path).name  # the trial folder is named <sweep>-<trial id>
        trial_id = name.removeprefix(f"{plan.sweep.name}-")
        ledger = Path(plan.folder) / LEDGER / f"{trial_id}.json"
        end = json.loads(ledger.read_text()) if ledger.is_file() else None
        metrics = result.metrics or {}
        if end is not None:
            status, reason = end["status"], end["reason"]
            epoch, score = int(end["epoch"]), end["score"]
        else:
            status = "failed" if result.error else "interrupted"
            reason = (
                str(result.error).strip().splitlines()[-1]
                if result.error
                else ("the sweep was interrupted; --resume continues this trial")
            )
            epoch, score = int(metrics.get("epoch", 0)), metrics.get(SCORE)
        record = read_record(f"{runs_dir}/{name}")
        rows.append(
            TrialRow(
                trial_id,
                name,
                dict(result.config or {}),
                status,
                reason,
                epoch,
                None if score is None else float(score),
                record["mlflow_run_id"] if record else None,
            )
        )
    return sorted(rows, key=lambda r: r.name)


def ranked(rows: list[TrialRow]) -> list[TrialRow]:
    """Best first: finished trials before stopped ones, then by score (higher is better)."""
    scored = [r for r in rows if r.score is not None and r.status in ("finished", "stopped")]
    return sorted(scored, key=lambda r: (RANK[r.status], -(r.score or 0.0)))


def best_trial(rows: list[TrialRow]) -> TrialRow | None:
    """The final evaluations decide among the trials that had them, else the monitor's score."""
    evaluated = [r for r in rows if r.final_score is not None]
    if evaluated:
        return max(evaluated, key=lambda r: (r.final_score, r.score or 0.0))
    order = ranked(rows)
    return order[0] if order else None


def best_config(plan: SweepPlan, row: TrialRow) -> ExperimentConfig:
    """The base experiment with the best trial's values, named to run as a pretraining."""
    overrides = plan.sweep.overrides(row.params)
    return apply_overrides(plan.base, overrides | {"run.name": f"{plan.sweep.name}-best"})


def write_best(plan: SweepPlan, row: TrialRow, path: Path) -> Path:
    """best.yaml: a pretraining experiment `crisscross pretrain` runs as it is (logged on the
    parent run too, so credentials in its URIs are masked, and the header says so)."""
    best = best_config(plan, row)
    config = public_config(best)
    values = ", ".join(f"{k}={_value(v)}" for k, v in sorted(row.params.items()))
    score = f"{row.score:.4f}" if row.score is not None else "none"
    final = "".join(f", {k} top-1 {v:.4f}" for k, v in row.final.items())
    header = (
        f"# Best trial of sweep '{plan.sweep.name}' ({plan.file}): trial {row.trial_id}, "
        f"{plan.sweep.search.metric} {score}{final}.\n"
        f"# Searched values: {values}\n"
        f"# Run it: crisscross pretrain {path}\n"
    )
    if config is not best:
        header += "# Credentials in its URIs are masked as ***: put them back before running it.\n"
    path.write_text(header + dump_config(config))
    return path


def write_table(rows: list[TrialRow], path: Path, metric: str) -> Path:
    keys = sorted({k for r in rows for k in r.params})
    protocols = sorted({k for r in rows for k in r.final})
    with path.open("w", newline="") as stream:
        out = csv.writer(stream)
        out.writerow(
            [
                "trial",
                "status",
                "epochs",
                metric,
                *[f"{p}/top1" for p in protocols],
                *keys,
                "mlflow_run",
                "reason",
            ]
        )
        for r in rows:
            out.writerow(
                [
                    r.name,
                    r.status,
                    r.epoch,
                    _num(r.score),
                    *[_num(r.final.get(p)) for p in protocols],
                    *[r.params.get(k, "") for k in keys],
                    r.run_id or "",
                    r.reason,
                ]
            )
    return path


def table_text(rows: list[TrialRow], metric: str) -> str:
    """The trials as console lines, best first, then the ones without a score."""
    order = ranked(rows)
    rest = [r for r in rows if r not in order]
    lines = []
    for r in order + rest:
        values = ", ".join(f"{k}={_value(v)}" for k, v in sorted(r.params.items()))
        final = "".join(f" | {k} {v:.3f}" for k, v in r.final.items())
        lines.append(
            f"  {r.name}: {r.status} at epoch {r.epoch} | {metric} {_num(r.score) or '-'}{final}"
            f" | {values}" + ("" if r.status == "finished" else f" | {r.reason}")
        )
    return "\n".join(lines)


def plot_heatmap(plan: SweepPlan, rows: list[TrialRow], path: Path) -> Path | None:
    """Mean score of the trials in each (w_sync, w_async) cell; None when no trial scored."""
    cells: dict[tuple[float, float], list[float]] = {}
    stopped: set[tuple[float, float]] = set()
    for r in rows:
        if r.score is None:
            continue
        loss = apply_overrides(plan.base, plan.sweep.overrides(r.params)).loss
        cells.setdefault((loss.w_sync, loss.w_async), []).append(r.score)
        if r.status != "finished":
            stopped.add((loss.w_sync, loss.w_async))
    if not cells:
        return None
    plt = _pyplot()
    syncs = sorted({k[0] for k in cells})
    asyncs = sorted({k[1] for k in cells})
    grid = np.full((len(asyncs), len(syncs)), np.nan)
    for (s, a), scores in cells.items():
        grid[asyncs.index(a), syncs.index(s)] = np.mean(scores)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(syncs), 1.4 + 0.9 * len(asyncs)))
    image = ax.imshow(grid, origin="lower", cmap="viridis", aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        if math.isfinite(value):
            mark = "*" if (syncs[j], asyncs[i]) in stopped else ""
            ax.text(j, i, f"{value:.3f}{mark}", ha="center", va="center", color="w", fontsize=9)
    ax.set_xticks(range(len(syncs)), [f"{v:g}" for v in syncs])
    ax.set_yticks(range(len(asyncs)), [f"{v:g}" for v in asyncs])
    ax.set_xlabel("loss.w_sync")
    ax.set_ylabel("loss.w_async")
    ax.set_title(
        f"{plan.sweep.name}: last {plan.sweep.search.metric} (mean over trials)\n"
        "* a trial there was stopped early",
        fontsize=8,
    )
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_parallel(plan: SweepPlan, rows: list[TrialRow], path: Path) -> Path | None:
    """Parallel coordinates: one axis per searched key and one for the score, a line per trial."""
    scored = [r for r in rows if r.score is not None]
    keys = sorted(plan.sweep.space)
    if not scored:
        return None
    plt = _pyplot()
    axes_values = []
    labels = []
    for key in keys:
        values = [r.params.get(key) for r in scored]
        position, ticks = _axis(values, log=plan.sweep.space[key].form == "loguniform")
        axes_values.append(position)
        labels.append((key, ticks))
    scores = np.array([r.score for r in scored], float)
    axes_values.append(_unit(scores))
    labels.append(
        (plan.sweep.search.metric, [(0.0, f"{scores.min():.3f}"), (1.0, f"{scores.max():.3f}")])
    )
    data = np.array(axes_values).T  # (trials, axes)
    fig, ax = plt.subplots(figsize=(2.0 + 1.8 * len(labels), 4.5))
    colours = plt.get_cmap("viridis")(_unit(scores))
    for line, colour, r in zip(data, colours, scored, strict=True):
        style = "-" if r.status == "finished" else "--"
        ax.plot(range(len(labels)), line, style, color=colour, alpha=0.85, marker="o")
    for i, (_, ticks) in enumerate(labels):
        ax.axvline(i, color="0.7", linewidth=0.8)
        for y, text in ticks:
            ax.text(i + 0.03, y, text, fontsize=7, va="center")
    ax.set_xticks(range(len(labels)), [k for k, _ in labels], rotation=15, fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.08, 1.08)
    ax.set_title(f"{plan.sweep.name}: every trial (dashed: stopped early)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _axis(values: list[Any], *, log: bool) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Positions in [0, 1] and tick labels: numbers scaled (log for loguniform), others by rank."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        x = np.array(values, float)
        x = np.log10(x) if log and (x > 0).all() else x
        pos = _unit(x)
        low, high = min(values), max(values)
        return pos, [(0.0, f"{low:g}"), (1.0, f"{high:g}")] if low != high else [(0.5, f"{low:g}")]
    levels = sorted({str(v) for v in values})
    pos = np.array([levels.index(str(v)) for v in values], float)
    pos = pos / max(len(levels) - 1, 1)
    return pos, [(i / max(len(levels) - 1, 1), text) for i, text in enumerate(levels)]


def _unit(x: np.ndarray) -> np.ndarray:
    span = float(x.max() - x.min()) if x.size else 0.0
    return (x - x.min()) / span if span > 0 else np.full_like(x, 0.5, dtype=float)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
