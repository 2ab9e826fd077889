"""Sweep files checked before anything runs: the base experiment with the fixed overrides, every
value the search space can give, the metric's monitor sets, and the final evaluations' configs."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crisscross.config import (
    ConfigError,
    ExperimentConfig,
    Problem,
    apply_overrides,
    load_config,
)
from crisscross.config.schema import runs_how
from crisscross.config.sweep_schema import CASE, SweepConfig
from crisscross.datasets.synth.corpus import corpus_roots
from crisscross.platform.evaluation.protocols import PROTOCOLS
from crisscross.platform.storage import is_uri, local_output_folder, output_location

# besides how a trial runs (config.schema.HOW): where it writes and on which data, the sweep's
SWEEP_OWNED = ("run.name", "run.output_dir", "data.dataset", "data.classes_file")


@dataclass(frozen=True)
class SweepPlan:
    """A validated sweep: the file, the base config with the fixed overrides, the folder, and
    where the synthetic sets go when the sweep asks for them."""

    sweep: SweepConfig
    file: Path
    base: ExperimentConfig
    folder: str  # <output_dir>/<name>, absolute: Tune's state, the ledger, tables, plots
    finals: dict[str, Any]  # protocol (svm, finetune) -> its validated experiment
    synthetic: Path | None = None  # the quickstart-style workdir: <output_dir>/synthetic
    runs_dir: str = ""  # the trials' run folders (checkpoints), on shared storage when set

    @property
    def trial_runs(self) -> str:
        return self.runs_dir or f"{self.folder}/pretraining"


def plan_sweep(file: str | Path, extra: Mapping[str, Any] | None = None) -> SweepPlan:
    """Read and check a sweep file; `extra` ({dotted key: value}) joins its `set:` overrides.

    ConfigError names the file, the key and the reason for anything a trial could trip on."""
    path = Path(file)
    sweep = load_config(path, schema=SweepConfig)
    if is_uri(sweep.output_dir):
        raise ConfigError(
            [
                Problem(
                    str(path),
                    "output_dir",
                    f"{sweep.output_dir}: a sweep folder must be a "
                    "file-system path (on a cluster, a shared file system mounted on every "
                    "node); object-store URIs are not supported for sweeps",
                )
            ]
        )
    # like run.output_dir: relative to here, or to $CRISSCROSS_STORAGE on a cluster; the trials'
    # run folders go to the shared storage itself, since their workers run on other nodes
    output = local_output_folder(sweep.output_dir)
    runs_dir = f"{output_location(sweep.output_dir)}/{sweep.name}/pretraining"
    fixed = dict(sweep.fixed) | dict(extra or {})
    if sweep.synthetic:
        roots = corpus_roots(output / "synthetic")  # the quickstart's corpus
        fixed = {
            "data.root": str(roots["kinetics_sound"]),
            "monitor.video_root": str(roots["ucf101"]),
            "monitor.audio_root": str(roots["esc50"]),
        } | fixed
    base_file = _beside(path, sweep.base, "base")
    try:
        base = load_config(base_file, fixed)
    except ConfigError as exc:
        raise ConfigError(
            [Problem(f"{path} (base {p.source})", p.key, p.reason) for p in exc.problems]
        ) from None
    check_space(sweep, base, source=str(path))
    check_monitor(sweep, base, source=str(path))
    finals = final_configs(sweep, path, base)
    synthetic = output / "synthetic" if sweep.synthetic else None
    return SweepPlan(sweep, path, base, str(output / sweep.name), finals, synthetic, runs_dir)


def _beside(sweep_file: Path, name: str, key: str) -> Path:
    path = Path(name) if Path(name).is_absolute() else sweep_file.parent / name
    if not path.is_file():
        raise ConfigError([Problem(str(sweep_file), key, f"{name}: no such experiment file")])
    return path


def check_space(sweep: SweepConfig, base: ExperimentConfig, *, source: str) -> None:
    """Every key exists and may be searched; every value the space can give validates."""
    problems = _case_problems(sweep, base, source)
    for key, domain in sweep.space.items():
        where = f"space.{key}"
        if _fixed(key):
            problems.append(
                Problem(
                    source,
                    where,
                    "how trials run and where they write is the same for "
                    "every trial: set it under `set:` instead of searching it",
                )
            )
            continue
        for value in domain.candidates():
            try:
                apply_overrides(base, {key: value})
            except ConfigError as exc:
                problems += [Problem(source, where, p.reason) for p in exc.problems]
                break
    if not problems:
        problems = _grid_problems(sweep, base, source)
    if problems:
        raise ConfigError(problems)


def _fixed(key: str) -> bool:
    return runs_how(key) or key in SWEEP_OWNED


def _case_problems(sweep: SweepConfig, base: ExperimentConfig, source: str) -> list[Problem]:
    """Every case sets searchable keys to values the base accepts."""
    problems = []
    for name, overrides in sweep.cases.items():
        where = f"cases.{name}"
        fixed = [key for key in overrides if _fixed(key)]
        if fixed:
            problems.append(
                Problem(
                    source,
                    f"{where}.{fixed[0]}",
                    "how trials run and where they write is the same for every trial: set it "
                    "under `set:` instead",
                )
            )
            continue
        try:
            apply_overrides(base, dict(overrides))
        except ConfigError as exc:
            problems += [Problem(source, f"{where}.{p.key}", p.reason) for p in exc.problems]
    return problems


def _grid_problems(sweep: SweepConfig, base: ExperimentConfig, source: str) -> list[Problem]:
    """Combinations of grid values (and cases) that no trial could run (all loss weights 0)."""
    grid: dict[str, list[Any]] = {k: d.grid for k, d in sweep.space.items() if d.grid is not None}
    if sweep.cases:
        grid[CASE] = list(sweep.cases)
    if not grid or math.prod(len(v) for v in grid.values()) > 10_000:
        return []
    for values in itertools.product(*grid.values()):
        combo = dict(zip(grid, values, strict=True))
        try:
            apply_overrides(base, sweep.overrides(combo))
        except ConfigError as exc:
            reason = "; ".join(p.reason for p in exc.problems)
            shown = ", ".join(f"{k}={v}" for k, v in combo.items())
            return [Problem(source, "space", f"the grid point {shown} is invalid: {reason}")]
    return []


def check_monitor(sweep: SweepConfig, base: ExperimentConfig, *, source: str) -> None:
    """The selection metric needs the online monitor, on the right sets."""
    m, metric = base.monitor, sweep.search.metric
    kind, _, what = metric.partition("/")
    needs = {"video": ["monitor.video_root"], "audio": ["monitor.audio_root"]}.get(what, [])
    missing = [k for k in needs if getattr(m, k.split(".")[1]) is None]
    if what == "mean" and m.video_root is None and m.audio_root is None:
        missing = ["monitor.video_root or monitor.audio_root"]
    reasons = []
    if not m.every:
        reasons.append("monitor.every is 0")
    if missing:
        reasons.append(f"{' and '.join(missing)} is not set")
    if kind == "probe" and not m.probe:
        reasons.append("monitor.probe is false")
    if reasons:
        raise ConfigError(
            [
                Problem(
                    source,
                    "search.metric",
                    f"{metric} comes from the online monitor, but "
                    f"{'; '.join(reasons)}: set it in the base experiment or under `set:` "
                    "(trials are selected on downstream accuracy, never on the pretext loss)",
                )
            ]
        )


def final_configs(sweep: SweepConfig, path: Path, base: ExperimentConfig) -> dict[str, Any]:
    """The final evaluations' experiments, on the base's tracking store; their data is
    final.roots, else the monitor's set of the same dataset (ESC-50, UCF101/HMDB51)."""
    f, m = sweep.final, base.monitor
    if not f.top_k:
        return {}
    finals = {}
    for protocol, name in (("svm", f.svm), ("finetune", f.finetune)):
        schema = PROTOCOLS[protocol].schema
        if name is None:
            continue
        file = _beside(path, name, f"final.{protocol}")
        overrides: dict[str, Any] = {"tracking.experiment": base.tracking.experiment}
        if base.tracking.uri:
            overrides["tracking.uri"] = base.tracking.uri
        try:
            config = load_config(file, overrides, schema=schema)
            same = (
                m.audio_root
                if protocol == "svm"
                else (m.video_root if config.data.dataset == m.video_dataset else None)
            )
            root = f.roots.get(protocol) or config.data.root or same
            finals[protocol] = load_config(file, overrides | {"data.root": root}, schema=schema)
        except ConfigError as exc:
            raise ConfigError(
                [Problem(f"{path} (final {p.source})", p.key, p.reason) for p in exc.problems]
            ) from None
        if root is None:
            raise ConfigError(
                [
                    Problem(
                        str(path),
                        f"final.roots.{protocol}",
                        f"{file} has no data.root and "
                        "the monitor has no set of its dataset: give the dataset folder here",
                    )
                ]
            )
    return finals
