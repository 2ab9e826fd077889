"""Shared fixtures: the repository root and a CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from crisscross.datasets.synth import SynthSpec, synthesize

REPO = Path(__file__).resolve().parent.parent
# sizes for seconds-long pretext steps: width-4 encoders, 32 px crops, 4 frames, 40 mel bins
TINY_SIZES = {
    "data.crop_size": 32,
    "data.frames": 4,
    "data.n_mels": 40,
    "model.video_width": 4,
    "model.audio_width": 4,
    "model.projector_dim": 32,
    "model.predictor_hidden": 8,
}


# The modules that take minutes first (README, under command 2): `pytest -n 2 --dist loadfile` hands
# out whole modules in this order, so the longest ones start at once instead of ending last.
LONG_FIRST = (
    "tests/platform/pretrain/test_quickstart.py",
    "tests/platform/sweep/test_sweep.py",
    "tests/platform/pretrain/test_pretrain.py",
    "tests/platform/cluster/test_cluster_job.py",
    "tests/platform/cluster/test_two_nodes.py",
    "tests/bench/test_learning.py",
    "tests/platform/pretrain/test_stop.py",
    "tests/platform/evaluation/test_evaluation.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.partition("::")[0]  # relative to the root folder
        return LONG_FIRST.index(path) if path in LONG_FIRST else len(LONG_FIRST)

    items.sort(key=rank)  # stable: every module keeps its own order


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture
def run_cli():
    """Invoke the real click CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    from crisscross.cli import cli

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray with 2 CPUs for the whole test session (started on first use)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory):
    """dataset name -> root of a small synthetic copy (3 classes x 5 clips, 4 s; ESC-50 5 s)."""
    base = tmp_path_factory.mktemp("synthetic")
    roots = {}
    for name in ("kinetics_sound", "kinetics400", "audioset", "ucf101", "hmdb51", "esc50"):
        spec = SynthSpec(classes=3, per_class=5, seconds=5.0 if name == "esc50" else 4.0)
        synthesize(name, base / name, spec)
        roots[name] = base / name
    return roots
