"""The learning corpus: the synthetic sets the quickstart, `bench learning` and synthetic sweeps
train and monitor on, in the motion content (only shared motion carries the class).

A Kinetics-Sound-layout pretraining set, and the online monitor's labelled sets: UCF101 layout
(split 1: neighbours from its train list, queries from its test list) and ESC-50 layout
(neighbours from folds 2-5, queries from fold 1), all 4 classes. Small frames (64x48), 16 fps
and 16 kHz mono keep decoding cheap beside training on 2 cores; `prepare_corpus` adds the
pretraining set's frames copy (`crisscross prepare --video-format frames`), from which a sample
costs no video decoding at all.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from crisscross.datasets.prepare import PrepareSpec, prepare_dataset
from crisscross.datasets.synth.writers import SynthSpec, synthesize

_FORMAT = {"width": 64, "height": 48, "fps": 16.0, "sample_rate": 16000, "channels": 1}
# dataset -> what to synthesise; the seeds keep the three sets' clips apart
SETS = {
    "kinetics_sound": SynthSpec(classes=4, per_class=100, seconds=4.0, seed=0, **_FORMAT),
    "ucf101": SynthSpec(classes=4, per_class=40, seconds=4.0, seed=1, **_FORMAT),
    "esc50": SynthSpec(classes=4, per_class=80, seconds=5.0, seed=2, **_FORMAT),
}
DONE = ".crisscross-synth-complete"
PREPARED = PrepareSpec(short_side=48, fps=16.0, video_format="frames")  # the frames as they are


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


def prepare_corpus(workdir: Path, say: Callable[[str], None] = print) -> str:
    """The frames copy of the corpus' pretraining set (made once, remade when the set or the
    copy's spec changed); the path of its manifest. Starts Ray if no caller has."""
    source = corpus_roots(workdir)["kinetics_sound"]
    out = workdir / "data" / "kinetics_sound-frames"
    made = f"{SETS['kinetics_sound']!r} {PREPARED!r}"
    marker = out / DONE
    manifest = out / "crisscross_manifest_kinetics_sound.parquet"
    if marker.is_file() and marker.read_text() == made and manifest.is_file():
        return str(manifest)
    if out.exists():
        shutil.rmtree(out)
    report = prepare_dataset("kinetics_sound", str(source), str(out), spec=PREPARED)
    if report.failed:
        raise RuntimeError(
            f"{out}: {report.failed} of the corpus' files could not be prepared (the manifest "
            f"{report.path} says why); delete {source} to synthesise the corpus again"
        )
    marker.write_text(made)
    say(f"prepared the frames copy of {source} in {out} ({report.seconds:.1f} s)")
    return report.path
