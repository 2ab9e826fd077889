"""`crisscross bench learning`: does pretraining make the encoders better, measured side by side.

On the learning corpus (synthetic, only the shared motion carries the class), for each seed,
through the real `crisscross pretrain` path (Ray Train workers, the Ray Data pipeline, MLflow):
kNN and linear-probe top-1 of both encoders at the run's random initialisation and after
pretraining, beside chance and beside a supervised reference (the same encoders trained on the
labels with the same views, batch and steps). Also the share of each run's wall time spent
outside training steps. With an ablation: the loss families and two window sampling modes at
the same budget, as one Ray Tune sweep through `crisscross sweep`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from mlflow.tracking import MlflowClient

from crisscross.bench.supervised import train_supervised
from crisscross.config import ExperimentConfig, load_config
from crisscross.datasets.manifest import read_manifest
from crisscross.datasets.pipeline import usable_rows
from crisscross.datasets.synth.corpus import SETS, prepare_corpus, write_corpus
from crisscross.platform.pretrain.job import (
    announce_ray,
    monitor_sets,
    pretext_manifest,
    run_pretrain,
    steps_per_epoch,
)
from crisscross.platform.storage import EXPERIMENTS
from crisscross.trainers.builders import clip_spec
from crisscross.trainers.monitor import KnnMonitor

EXPERIMENT = EXPERIMENTS / "pretext" / "learning.yaml"
GAIN_GOAL = 0.25  # kNN after pretraining at least random init + this, both modalities, mean
OUTSIDE_GOAL = 0.20  # at most this share of a run's wall time outside training steps
MEASURES = ("knn/video", "knn/audio", "probe/video", "probe/audio")
# the ablation: the loss families, and the sampling modes with all three families
CASES = {
    "intra_only": {"loss.intra": True, "loss.sync": False, "loss.async": False},
    "sync_only": {"loss.intra": False, "loss.sync": True, "loss.async": False},
    "async_only": {"loss.intra": False, "loss.sync": False, "loss.async": True},
    "sync_async": {"loss.intra": False, "loss.sync": True, "loss.async": True},
    "all_three": {"loss.intra": True, "loss.sync": True, "loss.async": True},
    "all_three_same_timestamp": {
        "loss.intra": True,
        "loss.sync": True,
        "loss.async": True,
        "data.sampling": "same_timestamp",
    },
}


@dataclass(frozen=True)
class LearningSpec:
    """What `bench learning` runs."""

    workdir: Path
    seeds: tuple[int, ...] = (0, 1, 2)
    experiment: Path = EXPERIMENT
    overrides: tuple[tuple[str, Any], ...] = ()  # --set pairs, after the corpus' roots
    supervised: bool = True
    ablation: bool = False


def seed_config(spec: LearningSpec, seed: int, *, name: str) -> ExperimentConfig:
    """The experiment on the corpus, seeded, tracked in the workdir's own MLflow store."""
    roots = {k: str(v) for k, v in write_corpus(spec.workdir, lambda _: None).items()}
    return load_config(
        spec.experiment,
        {
            "data.root": roots["kinetics_sound"],
            "data.manifest": prepare_corpus(spec.workdir, lambda _: None),
            "monitor.video_root": roots["ucf101"],
            "monitor.audio_root": roots["esc50"],
            "monitor.probe": True,
            "run.seed": seed,
            "run.name": name,
            "run.output_dir": str(spec.workdir / "runs"),
            "tracking.uri": f"sqlite:///{spec.workdir / 'mlflow.db'}",
            "tracking.experiment": "crisscross-bench-learning",
        }
        | dict(spec.overrides),
    )


def run_seed(spec: LearningSpec, seed: int, stamp: str, say: Callable[[str], None]) -> dict:
    """One seed: pretraining (random init and after), then the supervised reference."""
    config = seed_config(spec, seed, name=f"learning-{stamp}-seed{seed}")
    start = time.perf_counter()
    outcome = run_pretrain(config, say=say)
    wall = time.perf_counter() - start
    timing = outcome.timing
    row: dict[str, Any] = {
        "seed": seed,
        "run_id": outcome.run_id,
        "steps": outcome.final_step,
        "chance": {
            k.removeprefix("chance/"): v
            for k, v in outcome.baseline.items()
            if k.startswith("chance/")
        },
        "random_init": {k: outcome.baseline.get(f"init/{k}") for k in MEASURES},
        "pretrained": {k: outcome.knn_after.get(k) for k in MEASURES},
        "pretrain_seconds": wall,
        "step_seconds": timing.get("step_seconds"),
        "wait_seconds": timing.get("wait_seconds"),
        "outside_share": 1 - timing["step_seconds"] / wall if timing.get("step_seconds") else None,
        "curves": curves(config.tracking.uri, outcome.run_id),
    }
    if spec.supervised:
        start = time.perf_counter()
        row["supervised"] = supervised_reference(config, steps=outcome.final_step, say=say)
        row["supervised_seconds"] = time.perf_counter() - start
    return row


CURVES = (*MEASURES, "epoch/loss", "epoch/embed_std/video", "epoch/embed_std/audio")


def curves(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value), ...]} of the monitor's scores and the per-epoch loss and
    collapse indicators, read back from the run's MLflow history."""
    client = MlflowClient(uri)
    out = {}
    for key in CURVES:
        history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        out[key] = [(int(m.step), float(m.value)) for m in history]
    return out


def supervised_reference(
    config: ExperimentConfig, *, steps: int, say: Callable[[str], None]
) -> dict:
    """kNN and probe of the encoders trained on the labels for `steps` steps, as the monitor
    scores them."""
    manifest = read_manifest(pretext_manifest(config, lambda _: None))
    table = usable_rows(manifest, clip_spec(config))
    device = torch.device("cpu")
    model = train_supervised(config, table, steps=steps, device=device, say=say)
    monitor = KnnMonitor(list(monitor_sets(config)), config)
    return dict(monitor(model, device))


def summarise(rows: Sequence[dict]) -> dict[str, Any]:
    """Mean and std over seeds of every figure, the gains, and whether the goals are met."""
    out: dict[str, Any] = {}
    for key in MEASURES:
        figures = {}
        for kind in ("random_init", "pretrained", "supervised"):
            values = [r[kind][key] for r in rows if kind in r and r[kind].get(key) is not None]
            figures[kind] = _spread(values)
        gains = [r["pretrained"][key] - r["random_init"][key] for r in rows if _has(r, key)]
        figures["gain"] = _spread(gains)
        modality = key.partition("/")[2]
        figures["chance"] = _spread(
            [r["chance"][modality] for r in rows if modality in r["chance"]]
        )
        out[key] = figures
    outside = [r["outside_share"] for r in rows if r.get("outside_share") is not None]
    out["outside_share"] = _spread(outside)
    out["pretrain_seconds"] = _spread([r["pretrain_seconds"] for r in rows])
    knn_gains = [out[k]["gain"]["mean"] for k in ("knn/video", "knn/audio")]
    out["goals"] = {
        "knn_gain_at_least": GAIN_GOAL,
        "knn_gain_met": all(g is not None and g >= GAIN_GOAL for g in knn_gains),
        "outside_share_at_most": OUTSIDE_GOAL,
        "outside_share_met": bool(outside) and max(outside) <= OUTSIDE_GOAL,
        "minutes_per_seed_at_most": 15,
        "minutes_met": max(r["pretrain_seconds"] for r in rows) <= 15 * 60,
    }
    return out


def _has(row: dict, key: str) -> bool:
    return row["pretrained"].get(key) is not None and row["random_init"].get(key) is not None


def _spread(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"mean": None, "std": None, "values": []}
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "values": list(values)}


def run_ablation(spec: LearningSpec, stamp: str, say: Callable[[str], None]) -> dict[str, Any]:
    """Every case of CASES with every seed, at the recipe's budget, as one `crisscross sweep`;
    {case: {measure: spread over seeds}}."""
    from crisscross.platform.sweep.plan import plan_sweep
    from crisscross.platform.sweep.run import run_sweep

    base = seed_config(spec, spec.seeds[0], name="ablation-base")
    sweep_file = spec.workdir / f"ablation-{stamp}.yaml"
    sweep = {
        "name": f"ablation-{stamp}",
        "base": str(spec.experiment.resolve()),
        "output_dir": str(spec.workdir / "sweeps"),
        "set": {
            "data.root": base.data.root,
            "data.manifest": base.data.manifest,
            "monitor.video_root": base.monitor.video_root,
            "monitor.audio_root": base.monitor.audio_root,
            "monitor.probe": True,
            "tracking.uri": base.tracking.uri,
            "tracking.experiment": "crisscross-bench-learning",
        }
        | dict(spec.overrides),
        "cases": CASES,
        "space": {"run.seed": {"grid": list(spec.seeds)}},
        "search": {"algorithm": "grid", "metric": "knn/mean"},
        "asha": {"enabled": False},
    }
    sweep_file.write_text(yaml.safe_dump(sweep, sort_keys=False))
    say(
        f"ablation: {len(CASES)} cases x {len(spec.seeds)} seeds through "
        f"`crisscross sweep {sweep_file}`"
    )
    outcome = run_sweep(plan_sweep(sweep_file), say=say)
    client = MlflowClient(base.tracking.uri)
    table: dict[str, Any] = {}
    for row in outcome.rows:
        if row.run_id is None or row.status != "finished":
            continue
        metrics = client.get_run(row.run_id).data.metrics
        case = table.setdefault(str(row.params["case"]), {k: [] for k in MEASURES})
        for key in MEASURES:
            if key in metrics:
                case[key].append(metrics[key])
    return {case: {k: _spread(v) for k, v in values.items()} for case, values in table.items()}


def run_learning_benchmark(
    spec: LearningSpec, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """Every seed, the summary, and the ablation when asked for."""
    spec.workdir.mkdir(parents=True, exist_ok=True)
    write_corpus(spec.workdir, say)
    announce_ray(say)  # before `prepare` would start a Ray of its own
    prepare_corpus(spec.workdir, say)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    check = seed_config(spec, spec.seeds[0], name="check")
    steps, clips, _ = steps_per_epoch(check, pretext_manifest(check, lambda _: None))
    say(
        f"bench learning: {len(spec.seeds)} seed(s) of {spec.experiment.name}, {clips} clips, "
        f"{steps} steps/epoch x {check.optim.epochs} epochs each"
    )
    rows = []
    for seed in spec.seeds:
        rows.append(run_seed(spec, seed, stamp, say))
        say(seed_line(rows[-1]))
    results: dict[str, Any] = {
        "experiment": str(spec.experiment),
        "overrides": [f"{k}={v}" for k, v in spec.overrides],
        "corpus": {
            name: {"classes": s.classes, "per_class": s.per_class} for name, s in SETS.items()
        },
        "seeds": list(spec.seeds),
        "runs": rows,
        "summary": summarise(rows),
    }
    if spec.ablation:
        results["ablation"] = run_ablation(spec, stamp, say)
    return results


def seed_line(row: dict) -> str:
    parts = []
    for key in MEASURES:
        init, after = row["random_init"].get(key), row["pretrained"].get(key)
        if init is not None and after is not None:
            parts.append(f"{key} {init:.3f} -> {after:.3f}")
    share = row.get("outside_share")
    tail = f"; outside steps {share:.0%}" if share is not None else ""
    return f"seed {row['seed']}: " + ", ".join(parts) + f" ({row['pretrain_seconds']:.0f} s{tail})"


def markdown(results: dict[str, Any], command: str) -> str:
    """The tables of docs/learning.md: per measure, mean ± std over seeds; the ablation."""
    summary = results["summary"]
    lines = [
        f"`{command}` ({len(results['seeds'])} seeds: {', '.join(map(str, results['seeds']))})",
        "",
        "| measure | chance | random init | pretrained | gain | supervised |",
        "| ------- | ------ | ----------- | ---------- | ---- | ---------- |",
    ]
    for key in MEASURES:
        f = summary[key]
        lines.append(
            f"| {key} | {_pm(f['chance'])} | {_pm(f['random_init'])} | {_pm(f['pretrained'])} | "
            f"{_pm(f['gain'], signed=True)} | {_pm(f['supervised'])} |"
        )
    goals = summary["goals"]
    lines += [
        "",
        f"Goal: kNN gain >= {goals['knn_gain_at_least']} on both modalities (mean): "
        f"{'met' if goals['knn_gain_met'] else 'NOT met'}. Pretraining time per seed "
        f"{_pm(summary['pretrain_seconds'], digits=0)} s (goal <= 15 min: "
        f"{'met' if goals['minutes_met'] else 'NOT met'}); wall time outside training steps "
        f"{_pm(summary['outside_share'], percent=True)} (goal <= 20 %: "
        f"{'met' if goals['outside_share_met'] else 'NOT met'}).",
    ]
    lines += _curve_table(results["runs"])
    if "ablation" in results:
        lines += [
            "",
            "| case | kNN video | kNN audio | probe video | probe audio |",
            "| ---- | --------- | --------- | ----------- | ----------- |",
        ]
        for case, figures in results["ablation"].items():
            cells = " | ".join(_pm(figures[k]) for k in MEASURES)
            lines.append(f"| {case} | {cells} |")
    return "\n".join(lines) + "\n"


def _curve_table(runs: Sequence[dict]) -> list[str]:
    """kNN per monitor step, one row per (seed, step): the learning curves."""
    lines = [
        "",
        "| seed | step | kNN video | kNN audio | probe video | probe audio |",
        "| ---- | ---- | --------- | --------- | ----------- | ----------- |",
    ]
    for run in runs:
        by_step: dict[int, dict[str, float]] = {}
        for key in MEASURES:
            for step, value in run.get("curves", {}).get(key, []):
                by_step.setdefault(step, {})[key] = value
        for step in sorted(by_step):
            cells = " | ".join(
                f"{by_step[step][k]:.3f}" if k in by_step[step] else "-" for k in MEASURES
            )
            lines.append(f"| {run['seed']} | {step} | {cells} |")
    return lines


def _pm(f: dict, *, signed: bool = False, percent: bool = False, digits: int = 3) -> str:
    mean, std = f.get("mean"), f.get("std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if percent:
        return f"{100 * mean:.1f} % ± {100 * std:.1f}"
    sign = "+" if signed else ""
    return f"{mean:{sign}.{digits}f} ± {std:.{digits}f}"
