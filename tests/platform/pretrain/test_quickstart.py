"""`crisscross quickstart` (README command 1) and the learning signal it must show.

One quickstart (pretraining, then the SVM and a fine-tune of both the pretrained encoders and
their random init), shared by the tests below. Its 10-minute budget is a measured figure, not a
timed test: the command prints "quickstart took N s", and the README reports README command 1
from a fresh clone.
"""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient


@pytest.fixture(scope="module")
def quickstart(local_ray, tmp_path_factory):
    from click.testing import CliRunner

    from crisscross.cli import cli

    workdir = tmp_path_factory.mktemp("quickstart")
    runner = CliRunner()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)  # the embedded MLflow store is ./mlflow.db
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        result = runner.invoke(cli, ["quickstart"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return workdir, result.output


def test_quickstart_pretrains_and_says_where_to_look(quickstart):
    workdir, output = quickstart
    assert "mlflow ui --backend-store-uri sqlite:///" in output
    assert (workdir / "mlflow.db").is_file()
    match = re.search(r"MLflow run (\w+)", output)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    run = client.get_run(match.group(1))
    assert run.info.status == "FINISHED"
    assert run.data.params["run.workers"] == "2"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "backbones")}
    assert {p.rsplit("/", 1)[-1][:4] for p in artifacts} == {"vid_", "aud_"}


def _figure(output: str, modality: str, kind: str = "kNN") -> tuple[float, float, float, float]:
    """(before, after, random init, chance) of one monitor figure in the quickstart's report."""
    found = re.search(
        rf"{kind} {modality}: ([\d.]+) before -> ([\d.]+) after training "
        rf"\(random init ([\d.]+), chance ([\d.]+)\)",
        output,
    )
    assert found, output[-3000:]
    return tuple(float(v) for v in found.groups())


def test_random_features_score_near_chance_and_every_figure_has_its_baselines(quickstart):
    """On the motion corpus the run's random init scores at most chance + 0.15 (kNN), and the
    report gives every kNN and probe figure with its random-init value and chance beside it;
    the collapse indicators are logged and show no collapse."""
    workdir, output = quickstart
    for modality in ("video", "audio"):
        before, _, init, chance = _figure(output, modality)
        assert before == init  # the monitor before training scores the random init
        assert init <= chance + 0.15, (modality, init, chance)
        probe_before, _, probe_init, _ = _figure(output, modality, "probe")
        assert probe_before == probe_init
    run_id = re.search(r"done: step \d+; MLflow run (\w{32})", output).group(1)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    losses = [
        m.value
        for m in sorted(client.get_metric_history(run_id, "epoch/loss"), key=lambda m: m.step)
    ]
    assert len(losses) == 5
    assert losses[-1] <= losses[0] - 0.1, losses  # the training signal: the loss falls
    metrics = client.get_run(run_id).data.metrics
    for key in ("embed_std/video", "embed_std/audio", "embed_cos/av", "chance/video"):
        assert key in metrics, key
    assert metrics["embed_std/video"] > 0.1 and metrics["embed_std/audio"] > 0.1  # no collapse
    assert "| measure | chance | random init | pretrained | gain |" in output


def test_pretraining_makes_both_encoders_better_than_their_random_init(quickstart):
    """The learning signal: the quickstart's pretraining (fixed seeds, deterministic) must raise
    the kNN accuracy of both encoders by at least 0.15 over the run's own random
    initialisation. Fails when pretraining does not help."""
    _, output = quickstart
    for modality in ("video", "audio"):
        _, after, init, _ = _figure(output, modality)
        assert after >= init + 0.15, (modality, init, after)


def test_quickstart_evaluates_downstream_and_prints_the_table(quickstart):
    """After pretraining: the ESC-50 SVM over 5 folds and a UCF101 fine-tune on split 1 of the
    pretrained encoders and, by the same protocols, of their random init (tagged as its
    baseline), the results table printed and written, and the gains beside each other."""
    workdir, output = quickstart
    pretrain_run = re.search(r"done: step \d+; MLflow run (\w{32})", output).group(1)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    evaluations = client.search_runs(
        [client.get_experiment_by_name("crisscross-quickstart").experiment_id],
        f"tags.`crisscross.pretrain_run` = '{pretrain_run}'",
    )
    by_kind = {run.data.tags["crisscross.eval"]: run for run in evaluations}
    assert set(by_kind) == {"svm", "finetune"}
    assert by_kind["svm"].data.metrics["folds"] == 5
    assert by_kind["finetune"].data.tags["crisscross.folds"] == "1"
    table = (workdir / "quickstart" / "report.md").read_text()  # the default --workdir
    assert table in output.replace("\r", "")
    assert "| Dataset | Pretraining DB | Top-1 Acc. | Protocol | Model | Evaluation run |" in table
    rows = [line for line in table.splitlines() if pretrain_run[:8] in line]
    assert [row.split(" | ")[0] for row in rows] == ["| UCF101", "| ESC50"]
    ft, svm = (by_kind[kind] for kind in ("finetune", "svm"))
    assert f"{100 * ft.data.metrics['top1_mean']:.1f}% (1 split) | finetune 8f" in rows[0]
    assert rows[0].endswith(f"| {ft.info.run_id[:8]} |")
    assert f"{100 * svm.data.metrics['top1_mean']:.1f}% ± " in rows[1]
    assert "(5 splits) | linear SVM 2s, C by CV | aud_" in rows[1]
    baselines = client.search_runs(
        [client.get_experiment_by_name("crisscross-quickstart").experiment_id],
        f"tags.`crisscross.baseline_of` = '{pretrain_run}'",
    )
    assert {run.data.tags["crisscross.eval"] for run in baselines} == {"svm", "finetune"}
    assert all(r.data.tags["crisscross.pretrain_label"] == "random_init" for r in baselines)
    assert sum("random_init" in line for line in table.splitlines()) == 2
    base = {run.data.tags["crisscross.eval"]: run.data.metrics["top1_mean"] for run in baselines}
    gains = {line.split(" | ")[0]: line for line in output.splitlines() if line.startswith("| ")}
    svm_row = gains["| ESC-50 linear SVM (5 folds)"]
    assert f"| {base['svm']:.3f} | {svm.data.metrics['top1_mean']:.3f} |" in svm_row
    ft_row = gains["| UCF101 fine-tune (split 1)"]
    assert f"| {base['finetune']:.3f} | {ft.data.metrics['top1_mean']:.3f} |" in ft_row
