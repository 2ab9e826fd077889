"""Credentials in a tracking URI never reach the run record, MLflow params, tags or artifacts,
nor a message; the connection still uses the real URI."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from mlflow.artifacts import download_artifacts
from mlflow.tracking import MlflowClient

from crisscross.config import load_config
from crisscross.platform.redact import public_config, redact, redact_tree, scrub

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "experiments" / "pretext" / "quickstart.yaml"
SECRETS = ("s3cr3t-pw", "tok-123456", "sig-abcdef")
SECRET_URI = (
    "http://alice:s3cr3t-pw@mlflow.internal:5000/?token=tok-123456&X-Amz-Signature=sig-abcdef"
)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://user:secret@host:5000", "http://user:***@host:5000"),
        ("https://host/?token=abc&experiment=1", "https://host/?token=***&experiment=1"),
        ("https://host/p?access_token=a&api_key=b", "https://host/p?access_token=***&api_key=***"),
        ("postgresql://u:p%40ss@db:5432/mlflow", "postgresql://u:***@db:5432/mlflow"),
        ("s3://AKIA:SECRET@bucket/runs", "s3://AKIA:***@bucket/runs"),
        (
            "https://b.s3.aws/x?X-Amz-Signature=zz&X-Amz-Date=1",
            "https://b.s3.aws/x?X-Amz-Signature=***&X-Amz-Date=1",
        ),
        ("sqlite:////home/me/mlflow.db", "sqlite:////home/me/mlflow.db"),
        ("http://host:5000", "http://host:5000"),
        ("runs", "runs"),
        ("http://u:pw@[::1", "http://***"),  # unparseable: nothing after the scheme is shown
    ],
)
def test_redact_masks_passwords_and_token_like_query_values(uri, shown):
    assert redact(uri) == shown


def test_scrub_masks_the_secrets_wherever_a_message_quotes_them():
    text = f"API request to {SECRET_URI.split('?')[0]}api/2.0/x failed: token tok-123456"
    clean = scrub(text, SECRET_URI)
    assert not any(s in clean for s in SECRETS)
    assert "mlflow.internal:5000" in clean


def test_redact_tree_and_public_config_leave_everything_else_alone():
    tree = {"a": [SECRET_URI, 1, ("http://x:y@h",)], "b": {"c": "plain"}}
    assert redact_tree(tree) == {
        "a": [redact(SECRET_URI), 1, ("http://x:***@h",)],
        "b": {"c": "plain"},
    }
    config = load_config(QUICKSTART, {"tracking.uri": SECRET_URI})
    public = public_config(config)
    assert public.tracking.uri == redact(SECRET_URI) and public.optim == config.optim
    plain = load_config(QUICKSTART)
    assert public_config(plain) is plain


class SecretClient(MlflowClient):
    """A sqlite-backed client that says it talks to SECRET_URI, as a client of a real server
    with credentials in its URI would."""

    @property
    def tracking_uri(self) -> str:
        return SECRET_URI


def everything_stored(store: str, run_id: str, folder: Path) -> str:
    """The run's params, tags and config.yaml artifact in the tracking store `store`."""
    run = MlflowClient(store).get_run(run_id)
    config = download_artifacts(
        run_id=run_id, artifact_path="config.yaml", dst_path=str(folder / "dl"), tracking_uri=store
    )
    return json.dumps([run.data.params, run.data.tags]) + Path(config).read_text()


def test_a_pretraining_stores_no_credential_of_its_tracking_uri(tmp_path):
    from crisscross.platform.pretrain.job import open_run
    from crisscross.platform.pretrain.resume import resume_target
    from crisscross.platform.pretrain.run_record import RUN_RECORD

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = SecretClient(store)
    config = load_config(
        QUICKSTART, {"tracking.uri": SECRET_URI, "run.output_dir": str(tmp_path / "runs")}
    )
    run_dir = str(tmp_path / "runs" / config.run.name)
    run_id, _ = open_run(client, config, run_dir, "digest", "/m.parquet")
    record = (Path(run_dir) / RUN_RECORD).read_text()
    stored = record + everything_stored(store, run_id, tmp_path)
    assert not any(s in stored for s in SECRETS), stored
    assert json.loads(record)["tracking_uri"] == redact(SECRET_URI)
    assert client.get_run(run_id).data.params["tracking.uri"] == redact(SECRET_URI)
    # the same command again resumes the same run: the masked record still matches the config
    again, _ = open_run(client, config, run_dir, "digest", "/m.parquet")
    assert again == run_id
    # --resume RUN_ID: the logged config has the URI masked, so the run continues in the store
    # it was found in rather than in a URI with *** for a password
    saved, where = resume_target(run_id, str(tmp_path / "scratch"), uri=store)
    assert "***" in yaml.safe_load(Path(saved).read_text())["tracking"]["uri"]
    assert where["tracking.uri"] == store


def test_a_sweep_stores_no_credential_of_its_tracking_uri(tmp_path):
    from crisscross.platform.sweep.plan import plan_sweep
    from crisscross.platform.sweep.run import RECORD, open_parent

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        f"name: s\nbase: {QUICKSTART}\noutput_dir: {tmp_path / 'out'}\n"
        f"set:\n  monitor.video_root: /data/ucf101\n  monitor.audio_root: /data/esc50\n"
        f"  tracking.uri: '{SECRET_URI}'\n"
        "space:\n  loss.w_sync: {grid: [0.5, 1.0]}\n"
    )
    plan = plan_sweep(sweep)
    assert plan.base.tracking.uri == SECRET_URI  # the trials connect with the real URI
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = open_parent(client, plan, resume=False)
    run = client.get_run(parent)
    stored = (Path(plan.folder) / RECORD).read_text() + json.dumps([run.data.params, run.data.tags])
    assert not any(s in stored for s in SECRETS), stored
    assert open_parent(client, plan, resume=True) == parent  # the masked record still matches


def test_a_sweeps_best_yaml_masks_the_credentials_and_says_so(tmp_path):
    from crisscross.platform.sweep.plan import plan_sweep
    from crisscross.platform.sweep.results import TrialRow, write_best

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        f"name: s\nbase: {QUICKSTART}\noutput_dir: {tmp_path / 'out'}\n"
        f"set:\n  monitor.video_root: /data/ucf101\n  tracking.uri: '{SECRET_URI}'\n"
        "space:\n  loss.w_sync: {grid: [0.5, 1.0]}\n"
    )
    row = TrialRow("t0", "s-t0", {"loss.w_sync": 0.5}, "finished", "", 2, 0.5, "r")
    text = write_best(plan_sweep(sweep), row, tmp_path / "best.yaml").read_text()
    assert not any(s in text for s in SECRETS), text
    assert "# Credentials in its URIs are masked as ***: put them back" in text
    assert load_config(tmp_path / "best.yaml").loss.w_sync == 0.5


def test_an_evaluation_stores_no_credential_of_its_tracking_uri(tmp_path):
    from crisscross.config import KINDS
    from crisscross.platform.evaluation.common import open_eval_run
    from crisscross.platform.evaluation.sources import Pretrained

    svm = REPO / "experiments" / "svm" / "quickstart_esc50.yaml"
    config = load_config(svm, {"tracking.uri": SECRET_URI}, schema=KINDS["svm"])
    pretrained = Pretrained({}, "w.pth", "file", "/w.pth", None, "w", None)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = open_eval_run(
        store, config, kind="svm", dataset="esc50", protocol="p", pretrained=pretrained, folds=[1]
    )
    stored = everything_stored(store, run.run_id, tmp_path)
    assert not any(s in stored for s in SECRETS), stored
    assert run.uri == store  # the run is logged through the real store


def test_an_unreachable_server_is_named_without_its_credentials():
    from crisscross.platform.tracking import TrackingError, check_tracking

    uri = "http://alice:s3cr3t-pw@127.0.0.1:9/?token=tok-123456"  # port 9: nothing listens
    with pytest.raises(TrackingError) as info:
        check_tracking(uri)
    assert "tracking server http://alice:***@127.0.0.1:9/?token=*** is unreachable" in str(
        info.value
    )
    assert not any(s in str(info.value) for s in SECRETS)


def test_the_tracking_server_state_file_holds_no_database_password(tmp_path, monkeypatch):
    from crisscross.platform.cluster import tracking_server as ts

    monkeypatch.setattr(ts, "healthy", lambda *_a, **_k: True)
    monkeypatch.setattr(
        ts.subprocess, "Popen", lambda *_a, **_k: SimpleNamespace(pid=999999, poll=lambda: None)
    )
    spec = ts.default_spec(
        host="10.0.0.5",
        backend_store_uri="postgresql://mlflow:s3cr3t-pw@rds.internal:5432/mlflow",
        artifacts_destination=str(tmp_path / "artifacts"),
        state_dir=str(tmp_path),
    )
    assert "s3cr3t-pw" in " ".join(ts.server_command(spec))  # the server gets the real one
    ts.start_detached(spec)
    state = (tmp_path / ts.STATE_FILE).read_text()
    assert "s3cr3t-pw" not in state
    assert (
        json.loads(state)["backend_store_uri"] == "postgresql://mlflow:***@rds.internal:5432/mlflow"
    )


def test_the_training_loops_tracker_shows_no_credential():
    from crisscross.platform.tracking import MlflowTracker

    tracker = MlflowTracker(SECRET_URI, "r1")
    assert not any(s in repr(tracker) for s in SECRETS)
    assert tracker.uri == SECRET_URI  # the workers connect with the real URI


def test_the_commands_summaries_print_no_credential():
    """The last lines of `pretrain` and of the evaluations name the store, not its password."""
    from types import SimpleNamespace

    from crisscross.platform.cli.eval import summary
    from crisscross.platform.cli.train import report
    from crisscross.platform.evaluation.common import EvalOutcome

    secret_uri = "http://alice:s3cr3t-pw@mlflow.internal:5000"
    outcome = EvalOutcome(
        "r" * 32, secret_uri, "svm", "esc50", "linear SVM 2s", "x", {1: 0.5}, 0.5, 0
    )
    text = summary(outcome)
    assert "s3cr3t-pw" not in text and "mlflow.internal:5000" in text
    pretrain = SimpleNamespace(
        run_id="r" * 32, run_dir="runs/x", tracking_uri=secret_uri, final_step=1,
        backbones={"video": "vid.pth.tar"}, knn_before={}, knn_after={}, baseline={},
    )  # fmt: skip
    text = report(pretrain)
    assert "s3cr3t-pw" not in text and "mlflow.internal:5000" in text
