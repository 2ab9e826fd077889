"""`crisscross quickstart`: the whole platform on one machine in a few minutes.

Synthesises a small audio-visual pretraining set and two labelled evaluation sets in their real
layouts, pretrains the tiny model with 2 Ray workers on CPU against the local MLflow store, and
reports the kNN accuracy of the encoders before and after.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from crisscross.config import ExperimentConfig, load_config
from crisscross.datasets.synth import SynthSpec, synthesize
from crisscross.platform.pretrain import Outcome, run_pretrain

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "pretext" / "quickstart.yaml"
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


def run_quickstart(workdir: Path, say: Callable[[str], None] = print) -> Outcome:
    workdir = workdir.resolve()
    synthesize_sets(workdir, say)
    return run_pretrain(quickstart_config(workdir), say=say)
