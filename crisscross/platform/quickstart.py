"""`crisscross quickstart`: the whole platform on one machine in a few minutes.

Synthesises a small audio-visual pretraining set and two labelled evaluation sets in their real
layouts, pretrains the tiny model with 2 Ray workers on CPU against the local MLflow store,
reports the kNN accuracy of the encoders before and after, then evaluates the pretrained encoders
downstream (the ESC-50 SVM over 5 folds, a short UCF101 fine-tune on split 1) and prints the
results table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from crisscross.config import ExperimentConfig, FinetuneExperiment, SvmExperiment, load_config
from crisscross.datasets.synth import SynthSpec, synthesize
from crisscross.platform.evaluation import EvalOutcome
from crisscross.platform.finetune import run_finetune
from crisscross.platform.frozen import run_svm
from crisscross.platform.pretrain import Outcome, run_pretrain
from crisscross.platform.report import write_report
from crisscross.platform.storage import EXPERIMENTS

EXPERIMENT = EXPERIMENTS / "pretext" / "quickstart.yaml"
SVM = EXPERIMENTS / "svm" / "quickstart_esc50.yaml"
FINETUNE = EXPERIMENTS / "finetune" / "quickstart_ucf101.yaml"
# dataset -> what to synthesise: the pretraining set, and the kNN monitor's labelled sets
SETS = {
    "kinetics_sound": SynthSpec(classes=4, per_class=8, seconds=4.0, seed=0),
    "ucf101": SynthSpec(classes=4, per_class=20, seconds=4.0, seed=1),
    "esc50": SynthSpec(classes=4, per_class=20, seconds=5.0, seed=2),
}
DONE = ".crisscross-synth-complete"


def quickstart_config(workdir: Path, experiment: Path = EXPERIMENT) -> ExperimentConfig:
    """The quickstart experiment pointed at the synthetic sets and run folder under `workdir`."""
    data = workdir / "data"
    return load_config(
        experiment,
        {
            "data.root": str(data / "kinetics_sound"),
            "monitor.video_root": str(data / "ucf101"),
            "monitor.audio_root": str(data / "esc50"),
            "run.output_dir": str(workdir / "runs"),
            "run.name": f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}",
        },
    )


def synthesize_sets(workdir: Path, say: Callable[[str], None]) -> None:
    """Write the synthetic sets once; a later quickstart reuses them."""
    for dataset, spec in SETS.items():
        out = workdir / "data" / dataset
        if (out / DONE).exists():
            continue
        start = time.perf_counter()
        count = synthesize(dataset, out, spec)
        (out / DONE).write_text("")
        say(f"synthesised {count} {dataset} files in {out} ({time.perf_counter() - start:.1f} s)")


@dataclass(frozen=True)
class QuickstartResult:
    pretrain: Outcome
    evaluations: list[EvalOutcome]
    report: str
    report_path: Path


def run_quickstart(workdir: Path, say: Callable[[str], None] = print) -> QuickstartResult:
    workdir = workdir.resolve()
    synthesize_sets(workdir, say)
    config = quickstart_config(workdir)
    pretrained = run_pretrain(config, say=say)
    data, uri = workdir / "data", pretrained.tracking_uri
    same_store = {"tracking.uri": uri, "run.output_dir": str(workdir / "runs")}
    say("downstream: linear SVM on the synthetic ESC-50 (5 folds)")
    svm = load_config(SVM, {"data.root": str(data / "esc50")} | same_store, schema=SvmExperiment)
    evaluations = [run_svm(svm, source=pretrained.run_id, folds="all", say=say)]
    say("downstream: fine-tuning on the synthetic UCF101 (split 1)")
    finetune = load_config(
        FINETUNE, {"data.root": str(data / "ucf101")} | same_store, schema=FinetuneExperiment
    )
    evaluations.append(run_finetune(finetune, source=pretrained.run_id, folds="1", say=say))
    text, path, _ = write_report(
        uri,
        pretrain_runs=[pretrained.run_id],
        out=workdir / "report.md",
        experiment=config.tracking.experiment,
        paper=False,
    )
    return QuickstartResult(pretrained, evaluations, text, path)
