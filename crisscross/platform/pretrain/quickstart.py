"""`crisscross quickstart`: the whole platform on one machine in minutes, and the gain it makes.

Writes the learning corpus (synthetic sets in the real layouts where only the shared motion
carries the class, so random features score near chance), pretrains the tiny model with 2 Ray
workers on CPU against the local MLflow store, then evaluates the pretrained encoders and the
run's own random initialisation by the same protocols (the ESC-50 SVM over 5 folds, a short
UCF101 fine-tune on split 1), and prints the gain: kNN and probe before and after pretraining,
chance, and both downstream results.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from mlflow.tracking import MlflowClient

from crisscross.config import ExperimentConfig, FinetuneExperiment, SvmExperiment, load_config
from crisscross.datasets.manifest import default_manifest_path, read_manifest
from crisscross.datasets.synth.corpus import corpus_roots, prepare_corpus, write_corpus
from crisscross.models import save_backbone
from crisscross.platform.evaluation.common import EvalOutcome
from crisscross.platform.evaluation.protocols import evaluate
from crisscross.platform.evaluation.report import BASELINE_OF, write_report
from crisscross.platform.pretrain.closing import Outcome
from crisscross.platform.pretrain.job import announce_ray, run_pretrain
from crisscross.platform.storage import EXPERIMENTS
from crisscross.trainers.builders import seeded_model

EXPERIMENT = EXPERIMENTS / "pretext" / "quickstart.yaml"
SVM = EXPERIMENTS / "svm" / "quickstart_esc50.yaml"
FINETUNE = EXPERIMENTS / "finetune" / "quickstart_ucf101.yaml"
RANDOM_INIT = "random_init"  # the baseline's label: files vid_/aud_crisscross_random_init.pth.tar


def quickstart_config(
    workdir: Path, experiment: Path = EXPERIMENT, *, manifest: str | None = None
) -> ExperimentConfig:
    """The quickstart experiment pointed at the corpus (or `manifest`, its prepared copy's) and
    the run folder under `workdir`."""
    roots = corpus_roots(workdir)
    return load_config(
        experiment,
        {
            "data.root": str(roots["kinetics_sound"]),
            "data.manifest": manifest,
            "monitor.video_root": str(roots["ucf101"]),
            "monitor.audio_root": str(roots["esc50"]),
            "run.output_dir": str(workdir / "runs"),
            "run.name": f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}",
        },
    )


def save_random_init(config: ExperimentConfig, folder: Path) -> dict[str, Path]:
    """The run's initial weights (its seed, before any step) in the released format."""
    model = seeded_model(config)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for modality, module in (("video", model.video), ("audio", model.audio)):
        path = folder / f"{modality[:3]}_crisscross_{RANDOM_INIT}.pth.tar"
        save_backbone(module, path)
        files[modality] = path
    return files


@dataclass(frozen=True)
class Downstream:
    """One protocol run on the pretrained encoder and on the random init, and its chance."""

    title: str
    pretrained: EvalOutcome
    random_init: EvalOutcome
    chance: float


@dataclass(frozen=True)
class QuickstartResult:
    pretrain: Outcome
    evaluations: list[EvalOutcome]
    downstream: list[Downstream]
    gains: str  # the table of the gain pretraining made
    report: str
    report_path: Path


def run_quickstart(workdir: Path, say: Callable[[str], None] = print) -> QuickstartResult:
    workdir = workdir.resolve()
    roots = write_corpus(workdir, say)
    announce_ray(say)  # before `prepare` would start a Ray of its own
    config = quickstart_config(workdir, manifest=prepare_corpus(workdir, say))
    pretrained = run_pretrain(config, say=say)
    baseline = save_random_init(config, workdir / "runs" / config.run.name / RANDOM_INIT)
    uri = pretrained.tracking_uri
    same_store = {"tracking.uri": uri, "run.output_dir": str(workdir / "runs")}
    svm = load_config(SVM, {"data.root": str(roots["esc50"])} | same_store, schema=SvmExperiment)
    finetune = load_config(
        FINETUNE, {"data.root": str(roots["ucf101"])} | same_store, schema=FinetuneExperiment
    )
    downstream = []
    for title, experiment, protocol, source, folds in (
        ("ESC-50 linear SVM (5 folds)", svm, "svm", "audio", "all"),
        ("UCF101 fine-tune (split 1)", finetune, "finetune", "video", "1"),
    ):
        outcomes = {}
        for name, weights in (("pretrained", pretrained.run_id), (RANDOM_INIT, baseline[source])):
            say(f"downstream: {title}, {name.replace('_', ' ')} weights")
            outcomes[name] = evaluate(
                protocol, experiment, source=str(weights), folds=folds, say=say
            )
        MlflowClient(uri).set_tag(outcomes[RANDOM_INIT].run_id, BASELINE_OF, pretrained.run_id)
        chance = _chance(experiment.data.root, source, folds)
        downstream.append(Downstream(title, outcomes["pretrained"], outcomes[RANDOM_INIT], chance))
    text, path, _ = write_report(
        uri,
        pretrain_runs=[pretrained.run_id],
        out=workdir / "report.md",
        experiment=config.tracking.experiment,
        paper=False,
    )
    evaluations = [d.pretrained for d in downstream] + [d.random_init for d in downstream]
    gains = gain_table(pretrained, downstream)
    return QuickstartResult(pretrained, evaluations, downstream, gains, text, path)


def _chance(root: str | None, modality: str, folds: str) -> float:
    """The largest class share of the test files, averaged over the evaluated folds."""
    dataset = "esc50" if modality == "audio" else "ucf101"
    table = read_manifest(default_manifest_path(dataset, str(root))).usable()
    shares = []
    for fold in range(1, 6) if folds == "all" else [int(folds)]:
        if dataset == "esc50":
            test = table.filter(pc.equal(table.column("fold"), fold))
        else:
            test = table.filter(pc.equal(table.column(f"fold{fold}"), "test"))
        labels = np.array(test.column("label").to_pylist())
        shares.append(np.bincount(labels).max() / len(labels))
    return float(np.mean(shares))


def gain_table(pretrain: Outcome, downstream: list[Downstream]) -> str:
    """Markdown: every figure before and after pretraining, beside chance, and the gain."""
    lines = [
        "| measure | chance | random init | pretrained | gain |",
        "| ------- | ------ | ----------- | ---------- | ---- |",
    ]
    titles = {"video": "UCF101 split 1", "audio": "ESC-50 fold 1"}
    for key in sorted(pretrain.knn_after):
        kind, _, modality = key.partition("/")
        init = pretrain.baseline.get(f"init/{key}", pretrain.knn_before.get(key))
        after = pretrain.knn_after[key]
        chance = pretrain.baseline.get(f"chance/{modality}")
        name = f"{modality} {'kNN' if kind == 'knn' else 'linear probe'} ({titles[modality]})"
        lines.append(_row(name, chance, init, after))
    for d in downstream:
        lines.append(_row(d.title, d.chance, d.random_init.mean, d.pretrained.mean))
    return "\n".join(lines)


def _row(name: str, chance: float | None, init: float | None, after: float) -> str:
    def show(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    gain = "-" if init is None else f"{after - init:+.3f}"
    return f"| {name} | {show(chance)} | {show(init)} | {show(after)} | {gain} |"
