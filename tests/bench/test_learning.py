"""`crisscross bench learning`: the figures side by side, the goals' verdicts, and one short run
through the real pretraining path (a small corpus; the machinery, not the gain, under test)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import replace

import pytest

from crisscross.bench import learning as bench_learning
from crisscross.bench.learning import MEASURES, markdown, summarise


def row(seed: int, init: float, after: float, *, seconds: float = 600.0, outside=0.1) -> dict:
    return {
        "seed": seed,
        "chance": {"video": 0.25, "audio": 0.25},
        "random_init": dict.fromkeys(MEASURES, init),
        "pretrained": dict.fromkeys(MEASURES, after),
        "supervised": dict.fromkeys(MEASURES, 0.95),
        "pretrain_seconds": seconds,
        "outside_share": outside,
        "curves": {"knn/video": [(0, init), (100, after)]},
    }


def test_summary_gains_are_per_seed_differences_and_goals_judge_the_mean():
    rows = [row(0, 0.3, 0.6), row(1, 0.3, 0.5), row(2, 0.3, 0.55)]
    summary = summarise(rows)
    gain = summary["knn/video"]["gain"]
    assert gain["mean"] == pytest.approx(0.25) and gain["values"] == pytest.approx([0.3, 0.2, 0.25])
    assert summary["knn/audio"]["chance"]["mean"] == 0.25
    assert summary["goals"]["knn_gain_met"] and summary["goals"]["outside_share_met"]
    assert summary["goals"]["minutes_met"]


@pytest.mark.parametrize(
    ("rows", "goal"),
    [
        ([row(0, 0.3, 0.5), row(1, 0.3, 0.54)], "knn_gain_met"),  # mean gain 0.22
        ([row(0, 0.3, 0.6), row(1, 0.3, 0.6, outside=0.25)], "outside_share_met"),  # worst run
        ([row(0, 0.3, 0.6, seconds=901.0)], "minutes_met"),
    ],
)
def test_a_goal_short_by_any_seed_or_on_the_mean_is_not_met(rows, goal):
    summary = summarise(rows)
    assert summary["goals"][goal] is False
    text = markdown({"summary": summary, "seeds": [r["seed"] for r in rows], "runs": rows}, "cmd")
    assert "NOT met" in text


def test_markdown_tables_carry_every_measure_and_the_curves():
    rows = [row(0, 0.3, 0.6), row(1, 0.35, 0.65)]
    text = markdown({"summary": summarise(rows), "seeds": [0, 1], "runs": rows}, "crisscross x")
    for key in MEASURES:
        assert f"| {key} | 0.250 ± 0.000 | 0.325 ± 0.025 | 0.625 ± 0.025 | +0.300 ± 0.000 |" in text
    assert "| 0 | 100 | 0.600 | - | - | - |" in text and "| 1 | 0 | 0.350 |" in text


# one epoch of two steps: the machinery, not the gain
SHORT = {
    "optim.epochs": 1,
    "optim.warmup_epochs": 0,
    "optim.repeats_per_epoch": 1,
    "optim.batch_size": 16,
    "monitor.every": 1,
}


@contextmanager
def small_corpus(**patches):
    """The corpus at 8 clips a class (32 pretraining clips), with any other bench_learning
    attributes patched beside it."""
    from crisscross.datasets.synth import corpus

    small = {name: replace(spec, per_class=8) for name, spec in corpus.SETS.items()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(corpus, "SETS", small)
        for name, value in {"SETS": small, **patches}.items():
            mp.setattr(bench_learning, name, value)
        yield


@pytest.fixture(scope="module")
def short_bench(local_ray, tmp_path_factory):
    """One seed of two steps on a 32-clip corpus, through `crisscross bench learning`."""
    from click.testing import CliRunner

    from crisscross.cli import cli

    work = tmp_path_factory.mktemp("bench-learning")
    args = ["bench", "learning", "--seeds", "0", "--workdir", str(work / "w")]
    args += ["--json", str(work / "out.json"), "--markdown", str(work / "out.md")]
    for key, value in SHORT.items():
        args += ["--set", f"{key}={value}"]
    with small_corpus():
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return work, result


def test_one_seed_reports_init_pretrained_supervised_and_time(short_bench):
    work, result = short_bench
    assert result.exit_code == 0, result.output[-3000:]
    results = json.loads((work / "out.json").read_text())
    (run,) = results["runs"]
    assert run["steps"] == 2  # 32 clips / 16
    for kind in ("random_init", "pretrained", "supervised"):
        assert set(MEASURES) <= set(run[kind]), kind
        assert all(0.0 <= run[kind][k] <= 1.0 for k in MEASURES), kind
    assert run["chance"] == {"video": 0.25, "audio": 0.25}
    assert 0.0 < run["outside_share"] < 1.0 and run["step_seconds"] > 0
    assert [step for step, _ in run["curves"]["knn/video"]] == [0, 2]
    assert run["curves"]["knn/video"][0][1] == run["random_init"]["knn/video"]
    assert len(run["curves"]["epoch/embed_std/audio"]) == 1
    text = (work / "out.md").read_text()
    assert text in result.output and "| knn/audio |" in text and "--seeds 0" in text
    assert f"--workdir {work / 'w'}" in text  # the command it echoes is the one that ran


def test_the_ablation_runs_its_cases_as_one_sweep_and_tables_them(short_bench, local_ray):
    """Two of the cases (a loss family alone, and the other sampling mode) through the real
    `crisscross sweep` path on the short bench's corpus: each case's figures come back from its
    trial's MLflow run and land in the markdown's ablation table."""
    work, _ = short_bench
    cases = {k: bench_learning.CASES[k] for k in ("intra_only", "all_three_same_timestamp")}
    spec = bench_learning.LearningSpec(
        workdir=work / "w", seeds=(0,), overrides=tuple(SHORT.items()), ablation=True
    )
    lines: list[str] = []
    with small_corpus(CASES=cases):
        table = bench_learning.run_ablation(spec, "test", lines.append)
    assert set(table) == set(cases), lines[-20:]
    for case, figures in table.items():
        for key in MEASURES:
            assert len(figures[key]["values"]) == 1, (case, key)
            assert 0.0 <= figures[key]["mean"] <= 1.0, (case, key)
    sweep = (work / "w" / "ablation-test.yaml").read_text()
    assert "same_timestamp" in sweep and "loss.intra" in sweep
    rows = [row(0, 0.3, 0.6)]
    results = {"summary": summarise(rows), "seeds": [0], "runs": rows, "ablation": table}
    text = markdown(results, "cmd")
    assert "| intra_only |" in text and "| all_three_same_timestamp |" in text
