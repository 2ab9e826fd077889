"""`crisscross quickstart` (README command 1) and the learning signal it must show.

One quickstart (pretraining, SVM, fine-tune; about 4 minutes on 2 cores), shared by the tests below.
"""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient


@pytest.fixture(scope="module")
def quickstart(local_ray, tmp_path_factory):
    from click.testing import CliRunner

    from crisscross.platform.cli import cli

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


def test_pretraining_lowers_the_pretext_loss_and_reports_knn_before_and_after(quickstart):
    """The training signal: the epoch-mean CrissCross loss falls well below its first epoch's
    (a broken gradient, optimiser or schedule would leave it near 0). The kNN accuracy of both
    encoders is printed before and after. On these synthetic sets and this short schedule it is
    no learning signal: random video features already separate the classes by colour (0.83 to
    0.88 before training, seeds 0 and 1) and 160 steps of colour-jittered SimSiam did not raise
    it (0.58 and 0.83 after, measured); audio is separable by pitch from initialisation."""
    workdir, output = quickstart
    run_id = re.search(r"done: step \d+; MLflow run (\w{32})", output).group(1)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    losses = [
        m.value
        for m in sorted(client.get_metric_history(run_id, "epoch/loss"), key=lambda m: m.step)
    ]
    assert len(losses) == 3
    assert losses[-1] <= losses[0] - 0.1, losses
    for modality in ("video", "audio"):
        found = re.search(rf"kNN {modality}: ([\d.]+) before -> ([\d.]+) after", output)
        assert found and all(0.0 <= float(v) <= 1.0 for v in found.groups()), output[-2000:]


def test_quickstart_evaluates_downstream_and_prints_the_table(quickstart):
    """After pretraining: the ESC-50 SVM over 5 folds and a UCF101 fine-tune on split 1, both
    MLflow runs tagged with the pretraining, and the results table printed and written."""
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
    seconds = int(re.search(r"quickstart took (\d+) s", output).group(1))
    assert seconds < 600
