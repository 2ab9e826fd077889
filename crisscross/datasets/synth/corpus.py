"""The learning corpus: the synthetic sets the quickstart, `bench learning` and synthetic sweeps
train and monitor on, in the motion content (only shared motion carries the class).

A Kinetics-Sound-layout pretraining set, and the online monitor's labelled sets: UCF101 layout
(split 1: neighbours from its train list, queries from its test list) and ESC-50 layout
(neighbours from folds 2-5, queries from fold 1), all 4 classes. Small frames (64x48), 16 fps
and 16 kHz mono keep decoding cheap beside training on 2 cores.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from crisscross.datasets.synth.writers import SynthSpec, synthesize

_FORMAT = {"width": 64, "height": 48, "fps": 16.0, "sample_rate": 16000, "channels": 1}
# dataset -> what to synthesise; the seeds keep the three sets' clips apart
SETS = {
    "kinetics_sound": SynthSpec(classes=4, per_class=100, seconds=4.0, seed=0, **_FORMAT),
    "ucf101": SynthSpec(classes=4, per_class=40, seconds=4.0, seed=1, **_FORMAT),
    "esc50": SynthSpec(classes=4, per_class=80, seconds=5.0, seed=2, **_FORMAT),
}
DONE = ".crisscross-synth-complete"


def corpus_roots(workdir: Path) -> dict[str, Path]:
    """Where each set of the corpus goes under `workdir`."""
    return {dataset: workdir / "data" / dataset for dataset in SETS}


def write_corpus(workdir: Path, say: Callable[[str], None] = print) -> dict[str, Path]:
    """Write the corpus once under `workdir` (a later call reuses what matches its spec);
    returns `corpus_roots`."""
    roots = corpus_roots(workdir)
    for dataset, spec in SETS.items():
        out, made = roots[dataset], repr(spec)
        marker = out / DONE
        if marker.is_file() and marker.read_text() == made:
            continue
        if marker.is_file():  # ours, from another spec (an older quickstart's): replace it
            say(f"{out}: made from another spec; writing it again")
            shutil.rmtree(out)
        start = time.perf_counter()
        count = synthesize(dataset, out, spec)
        marker.write_text(made)
        say(f"synthesised {count} {dataset} files in {out} ({time.perf_counter() - start:.1f} s)")
    return roots
