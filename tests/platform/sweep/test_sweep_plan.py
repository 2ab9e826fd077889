"""Sweep files: validation before anything runs, the search space, concurrency, selection."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from crisscross.config import ConfigError, load_config
from crisscross.config.sweep_schema import Domain, SweepConfig
from crisscross.platform.sweep.plan import plan_sweep
from crisscross.platform.sweep.report import selection_score
from crisscross.platform.sweep.results import (
    TrialRow,
    best_trial,
    plot_heatmap,
    plot_parallel,
    write_best,
    write_table,
)
from crisscross.platform.sweep.run import SweepError, concurrency, tune_domain

REPO = Path(__file__).resolve().parents[3]
QUICKSTART = REPO / "experiments" / "pretext" / "quickstart.yaml"
MONITORED = "set:\n  monitor.video_root: /data/ucf101\n  monitor.audio_root: /data/esc50\n"


def sweep_file(tmp_path: Path, body: str, *, monitored: bool = True) -> Path:
    path = tmp_path / "sweep.yaml"
    text = f"name: s\nbase: {QUICKSTART}\noutput_dir: {tmp_path / 'out'}\n"
    path.write_text(text + (MONITORED if monitored else "") + body)
    return path


def problems(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        plan_sweep(path)
    return str(info.value)


def test_shipped_sweeps_validate():
    roots = {"data.root": "/d/ks", "monitor.video_root": "/d/ucf", "monitor.audio_root": "/d/esc"}
    for path in sorted((REPO / "experiments" / "sweeps").glob("*.yaml")):
        plan = plan_sweep(path, roots)
        assert plan.sweep.space, path


def test_paper_sweep_is_the_recipe_with_a_weight_grid_and_final_evaluations():
    roots = {"data.root": "/d/ks", "monitor.video_root": "/d/ucf", "monitor.audio_root": "/d/esc"}
    plan = plan_sweep(REPO / "experiments" / "sweeps" / "kinetics_sound_loss_weights.yaml", roots)
    assert plan.base.model.video_width == 64 and plan.base.optim.batch_size == 2048
    assert (
        len(plan.sweep.space["loss.w_sync"].grid) * len(plan.sweep.space["loss.w_async"].grid) == 16
    )
    assert plan.finals["svm"].data.root == "/d/esc"  # the monitor's sets of the same datasets
    assert plan.finals["finetune"].data.root == "/d/ucf"


def test_tiny_sweep_is_four_trials_of_w_sync_by_w_async_on_synthetic_data():
    plan = plan_sweep(REPO / "experiments" / "sweeps" / "tiny.yaml")
    grid = {k: d.grid for k, d in plan.sweep.space.items()}
    assert grid == {"loss.w_sync": [0.5, 1.0], "loss.w_async": [0.5, 1.0]}
    assert plan.sweep.search.num_samples == 1 and plan.sweep.synthetic
    assert plan.base.model.video_width == 8  # the quickstart's tiny model
    assert plan.base.data.root.endswith("synthetic/data/kinetics_sound")
    assert plan.finals["svm"].data.root.endswith("synthetic/data/esc50")


def test_unknown_search_key_lists_the_valid_keys(tmp_path):
    text = problems(sweep_file(tmp_path, "space:\n  loss.w_synk: {grid: [0.5, 1.0]}\n"))
    assert "space.loss.w_synk" in text
    assert "did you mean 'w_sync'" in text
    assert "valid keys under 'loss': w_video, w_audio, w_sync, w_async, intra, sync, async" in text


def test_empty_space_is_refused(tmp_path):
    text = problems(sweep_file(tmp_path, "space: {}\n"))
    assert "the search space is empty" in text and "loss.w_sync" in text


def test_values_out_of_range_name_the_key(tmp_path):
    text = problems(sweep_file(tmp_path, "space:\n  loss.w_sync: {grid: [1.0, -1.0]}\n"))
    assert "space.loss.w_sync" in text and "greater than or equal to 0" in text
    text = problems(
        sweep_file(
            tmp_path,
            "search: {algorithm: random}\nspace:\n  augment.flip_p: {uniform: [0.0, 1.5]}\n",
        )
    )
    assert "space.augment.flip_p" in text and "less than or equal to 1" in text


def test_a_grid_point_no_trial_could_run_is_found_before_the_sweep(tmp_path):
    body = (  # each value alone is fine; both weights 0 at once leave no loss
        "  loss.intra: false\n"
        "space:\n  loss.w_sync: {grid: [0.0, 1.0]}\n  loss.w_async: {grid: [0.0, 1.0]}\n"
    )
    text = problems(sweep_file(tmp_path, body))
    assert "the grid point loss.w_sync=0.0, loss.w_async=0.0 is invalid" in text
    assert "every enabled loss term has weight 0" in text


def test_how_trials_run_is_not_searchable(tmp_path):
    text = problems(sweep_file(tmp_path, "space:\n  run.workers: {grid: [1, 2]}\n"))
    assert "space.run.workers" in text and "set it under `set:`" in text


def test_algorithm_and_domain_forms_must_agree(tmp_path):
    text = problems(sweep_file(tmp_path, "space:\n  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}\n"))
    assert "search.algorithm grid cannot use optim.lr" in text
    body = "search: {algorithm: optuna}\nspace:\n  loss.w_sync: {grid: [0.5, 1.0]}\n"
    assert "write choice: [...] instead of grid" in problems(sweep_file(tmp_path, body))
    body = "search: {algorithm: random}\nspace:\n  optim.lr: {uniform: [0.1, 0.2], choice: [1]}\n"
    assert "give exactly one of grid, choice, uniform, loguniform, randint" in problems(
        sweep_file(tmp_path, body)
    )


def test_the_metric_needs_the_monitor(tmp_path):
    text = problems(sweep_file(tmp_path, "space:\n  loss.w_sync: {grid: [0.5]}\n", monitored=False))
    assert "search.metric: knn/mean comes from the online monitor" in text
    assert "monitor.video_root or monitor.audio_root is not set" in text
    assert "never on the pretext loss" in text


def test_a_missing_base_names_the_file(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("name: s\nbase: nowhere.yaml\nspace:\n  loss.w_sync: {grid: [0.5]}\n")
    assert "base: nowhere.yaml: no such experiment file" in problems(path)


def test_randint_includes_both_ends_and_choice_draws_listed_values():
    drawn = set(tune_domain(Domain(randint=(1, 3))).sample(size=300))
    assert drawn == {1, 2, 3}
    assert set(tune_domain(Domain(choice=["adjacent", "random"])).sample(size=50)) == {
        "adjacent",
        "random",
    }


def test_selection_score_is_downstream_accuracy():
    metrics = {"knn/video": 0.5, "knn/audio": 1.0, "epoch/loss": -0.9, "epoch": 2}
    assert selection_score(metrics, "knn/mean") == pytest.approx(0.75)
    assert selection_score(metrics, "knn/video") == 0.5
    assert selection_score({"epoch/loss": -0.9}, "knn/mean") is None
    assert selection_score(metrics, "probe/video") is None


def test_concurrency_follows_the_cluster_and_refuses_what_no_node_holds(local_ray, tmp_path):
    base = plan_sweep(sweep_file(tmp_path, "space:\n  loss.w_sync: {grid: [0.5]}\n")).base
    notes: list[str] = []
    one_cpu = base.model_copy(
        update={"run": base.run.model_copy(update={"workers": 1, "cpus_per_worker": 0.5})}
    )
    assert concurrency(one_cpu, None, local=True, say=notes.append) == 2
    assert concurrency(one_cpu, 5, local=True, say=notes.append) == 2
    assert "search.max_concurrent_trials 5 lowered to 2" in notes[-1]
    assert concurrency(one_cpu, 1, local=True, say=notes.append) == 1
    big = base.model_copy(update={"run": base.run.model_copy(update={"cpus_per_worker": 3.0})})
    with pytest.raises(SweepError, match=r"training worker asks for 3 CPU, which no node has"):
        concurrency(big, None, local=True, say=notes.append)
    many = base.model_copy(update={"run": base.run.model_copy(update={"workers": 4})})
    with pytest.raises(SweepError, match=r"one trial needs 4 CPUs .* this Ray cluster has 2 CPUs"):
        concurrency(many, None, local=True, say=notes.append)
    assert concurrency(many, None, local=False, say=notes.append) == 1  # an autoscaler may add
    assert "waiting for the autoscaler" in notes[-1]


def rows() -> list[TrialRow]:
    def row(i, status, score, sync, asyn):
        params = {"loss.w_sync": sync, "loss.w_async": asyn}
        return TrialRow(f"t{i}", f"s-t{i}", params, status, status, 3, score, f"run{i}")

    return [
        row(0, "finished", 0.70, 0.5, 0.5),
        row(1, "finished", 0.80, 0.5, 1.0),
        row(2, "stopped", 0.95, 1.0, 0.5),  # higher, but judged on fewer epochs
        row(3, "failed", None, 1.0, 1.0),
    ]


def test_best_trial_prefers_finished_trials_then_the_final_evaluation():
    trials = rows()
    assert best_trial(trials).trial_id == "t1"
    trials[0].final["svm"] = 0.9
    trials[1].final["svm"] = 0.6
    assert best_trial(trials).trial_id == "t0"


def test_best_yaml_runs_as_a_pretraining_experiment(tmp_path):
    plan = plan_sweep(sweep_file(tmp_path, "space:\n  loss.w_sync: {grid: [0.5, 1.0]}\n"))
    path = write_best(plan, rows()[1], tmp_path / "best.yaml")
    config = load_config(path)
    assert (config.loss.w_sync, config.loss.w_async) == (0.5, 1.0)
    assert config.run.name == "s-best"
    assert config.monitor.video_root == "/data/ucf101"
    assert config.model == plan.base.model and config.optim == plan.base.optim
    assert "# Run it: crisscross pretrain" in path.read_text()


def test_table_and_plots_hold_every_trial(tmp_path):
    plan = plan_sweep(
        sweep_file(
            tmp_path,
            "space:\n  loss.w_sync: {grid: [0.5, 1.0]}\n  loss.w_async: {grid: [0.5, 1.0]}\n",
        )
    )
    trials = rows()
    table = list(csv.DictReader(write_table(trials, tmp_path / "t.csv", "knn/mean").open()))
    assert [r["status"] for r in table] == ["finished", "finished", "stopped", "failed"]
    assert table[1]["knn/mean"] == "0.8000" and table[3]["knn/mean"] == ""
    assert table[2]["loss.w_sync"] == "1.0" and table[0]["mlflow_run"] == "run0"
    for plot in (plot_heatmap, plot_parallel):
        path = plot(plan, trials, tmp_path / f"{plot.__name__}.png")
        assert path.read_bytes()[:4] == b"\x89PNG"
    assert plot_heatmap(plan, [trials[3]], tmp_path / "none.png") is None


def test_sweep_kind_is_validated_by_config_validate(run_cli, tmp_path):
    path = tmp_path / "sweeps" / "bad.yaml"
    path.parent.mkdir()
    path.write_text("name: s\nbase: x.yaml\nspace: {}\n")
    result = run_cli("config", "validate", str(path))
    assert result.exit_code == 2
    assert "the search space is empty" in result.output
    assert SweepConfig.model_fields["fixed"].alias == "set"


def test_only_epoch_ends_with_the_metric_reach_tune(monkeypatch):
    from ray.tune.integration.ray_train import TuneReportCallback

    from crisscross.platform.sweep.report import ScoreReport

    sent = []
    monkeypatch.setattr(
        TuneReportCallback, "after_report", lambda self, ctx, metrics, ckpt: sent.append(metrics)
    )
    report = ScoreReport.__new__(ScoreReport)  # no Tune session here; only the filter is tested
    report.metric, report.epochs = "knn/mean", 3
    report.after_report(None, [{"step": 5, "loss": -0.3}], None)  # mid-epoch checkpoint
    report.after_report(None, [{"epoch": 1, "epoch/loss": -0.3}], None)  # monitor not run
    report.after_report(None, [{"epoch": 2, "knn/video": 0.5, "knn/audio": 0.75}], None)
    # the last epoch is held back: run_trial reports it once the run has finished
    report.after_report(None, [{"epoch": 3, "knn/video": 1.0, "knn/audio": 1.0}], None)
    assert sent == [[{"epoch": 2, "knn/video": 0.5, "knn/audio": 0.75, "score": 0.625}]]


def test_a_trial_is_the_base_with_its_values_in_its_own_run_folder(tmp_path):
    from crisscross.platform.sweep.trial import TrialJob, trial_config

    plan = plan_sweep(sweep_file(tmp_path, "space:\n  loss.w_sync: {grid: [0.5]}\n"))
    job = TrialJob(
        plan.base.model_dump(by_alias=True), "s", "/runs/s/pretraining", "p", "knn/mean", ()
    )
    config = trial_config(job, {"loss.w_sync": 0.25, "data.sampling": "adjacent"}, "ab_00001")
    assert (config.loss.w_sync, config.data.sampling) == (0.25, "adjacent")
    assert (config.run.name, config.run.output_dir) == ("s-ab_00001", "/runs/s/pretraining")
    assert config.model == plan.base.model and config.monitor == plan.base.monitor


@pytest.mark.parametrize("algorithm", ["random", "optuna"])
def test_random_and_optuna_draw_inside_the_domains(local_ray, tmp_path, algorithm):
    """Our space and search algorithm run in Ray Tune (a stand-in trainable reporting the score
    per epoch), every drawn value inside its domain, at most the allowed trials at once."""
    from ray import tune

    from crisscross.platform.sweep.run import param_space, scheduler, search_algorithm

    body = (
        f"search: {{algorithm: {algorithm}, num_samples: 6, seed: 3}}\n"
        "space:\n"
        "  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
        "  loss.w_async: {uniform: [0.0, 2.0]}\n"
        "  data.sampling: {choice: [overlapped, adjacent]}\n"
        "  optim.repeats_per_epoch: {randint: [1, 3]}\n"
    )
    sweep = plan_sweep(sweep_file(tmp_path, body)).sweep

    def trainable(params):
        for epoch in (1, 2):
            tune.report({"epoch": epoch, "score": params["loss.w_async"] * epoch})

    results = tune.Tuner(
        trainable,
        param_space=param_space(sweep),
        tune_config=tune.TuneConfig(
            metric="score",
            mode="max",
            search_alg=search_algorithm(sweep, 2),
            scheduler=scheduler(sweep, 2),
            num_samples=sweep.search.num_samples,
        ),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0),
    ).fit()
    drawn = [r.config for r in results]
    assert len(drawn) == 6 and not any(r.error for r in results)
    for params in drawn:
        assert 1e-4 <= params["optim.lr"] <= 1e-2
        assert 0.0 <= params["loss.w_async"] <= 2.0
        assert params["data.sampling"] in ("overlapped", "adjacent")
        assert params["optim.repeats_per_epoch"] in (1, 2, 3)
    assert len({p["optim.lr"] for p in drawn}) == 6  # drawn, not repeated


def _ledger_in(tmp_path):
    """An MLflow store, an experiment, a pretraining runs folder and a ledger over them."""
    from mlflow.tracking import MlflowClient

    from crisscross.platform.sweep.trial import TrialLedger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    runs_dir = tmp_path / "pretraining"
    ledger = TrialLedger(
        folder=str(tmp_path / "sweep"),
        runs_dir=str(runs_dir),
        sweep="s",
        epochs=2,
        uri=uri,
        metric="knn/mean",
    )
    return client, client.create_experiment("e"), runs_dir, ledger


def _run_record(runs_dir, trial_id: str, record: dict) -> None:
    """The run record a trial's pretraining writes (crisscross_run.json)."""
    import json

    (runs_dir / f"s-{trial_id}").mkdir(parents=True)
    (runs_dir / f"s-{trial_id}" / "crisscross_run.json").write_text(json.dumps(record))


def test_ledger_counts_a_trial_finished_only_when_its_run_finished(tmp_path):
    """ASHA can stop a trial at a rung on its last epoch; unless the pretraining had exported its
    backbones and closed its run (the run record's finished_step), the trial was stopped."""
    import json
    from types import SimpleNamespace

    client, exp, runs_dir, ledger = _ledger_in(tmp_path)
    for trial_id, finished in (("t_00000", True), ("t_00001", False)):
        run = client.create_run(exp)
        if finished:  # as run_pretrain's finish() leaves it
            client.set_terminated(run.info.run_id, status="FINISHED")
        record = {"mlflow_run_id": run.info.run_id} | ({"finished_step": 4} if finished else {})
        _run_record(runs_dir, trial_id, record)
        trial = SimpleNamespace(
            trial_id=trial_id, config={}, last_result={"epoch": 2, "score": 0.75}
        )
        ledger.on_trial_complete(0, [], trial)
    ends = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "sweep" / "ledger").iterdir()}
    assert ends["t_00000"]["status"] == "finished"
    assert ends["t_00000"]["reason"] == "completed 2 epochs"
    assert ends["t_00001"]["status"] == "stopped"
    assert ends["t_00001"]["reason"] == "stopped early by ASHA after epoch 2 (knn/mean 0.750)"
    statuses = {
        r.data.tags["crisscross.stop_reason"]: r.info.status for r in client.search_runs([exp])
    }
    assert statuses == {
        "completed 2 epochs": "FINISHED",
        "stopped early by ASHA after epoch 2 (knn/mean 0.750)": "KILLED",
    }


def test_ctrl_c_right_after_a_trial_completed_leaves_its_run_finished(tmp_path):
    """Ctrl-C can land after a trial's pretraining finished its run but before Tune heard of
    it: the trial counts as interrupted, yet its run must stay FINISHED, and when --resume then
    reports it finished, a run an interruption had closed as KILLED becomes FINISHED."""
    from types import SimpleNamespace

    from crisscross.platform.sweep.results import TrialRow
    from crisscross.platform.sweep.run import mark_interrupted_runs

    client, exp, runs_dir, ledger = _ledger_in(tmp_path)
    done, cut = client.create_run(exp).info.run_id, client.create_run(exp).info.run_id
    client.set_terminated(done, status="FINISHED")

    def row(trial_id: str, run_id: str) -> TrialRow:
        reason = "the sweep was interrupted; --resume continues this trial"
        return TrialRow(trial_id, trial_id, {}, "interrupted", reason, 1, None, run_id)

    mark_interrupted_runs(client, [row("t_00000", done), row("t_00001", cut)])
    assert client.get_run(done).info.status == "FINISHED"
    assert client.get_run(cut).info.status == "KILLED"
    assert "--resume" in client.get_run(cut).data.tags["crisscross.stop_reason"]

    _run_record(runs_dir, "t_00001", {"mlflow_run_id": cut, "finished_step": 4})  # on --resume
    trial = SimpleNamespace(trial_id="t_00001", config={}, last_result={"epoch": 2, "score": 0.5})
    ledger.on_trial_complete(0, [], trial)
    run = client.get_run(cut)
    assert run.info.status == "FINISHED"
    assert run.data.tags["crisscross.stop_reason"] == "completed 2 epochs"
    end_time = client.get_run(done).info.end_time
    _run_record(runs_dir, "t_00000", {"mlflow_run_id": done, "finished_step": 4})
    ledger.on_trial_complete(0, [], SimpleNamespace(trial_id="t_00000", config={}, last_result={}))
    assert client.get_run(done).info.end_time == end_time  # a finished run is not touched


CASES = (
    "cases:\n"
    "  intra_only: {loss.sync: false, loss.async: false}\n"
    "  sync_only: {loss.intra: false, loss.async: false}\n"
    "  same_timestamp: {data.sampling: same_timestamp}\n"
    "space:\n  run.seed: {grid: [0, 1]}\n"
)


def test_named_cases_are_trials_crossed_with_the_grid(tmp_path):
    from ray import tune

    from crisscross.platform.sweep.run import param_space
    from crisscross.platform.sweep.trial import TrialJob, trial_config

    plan = plan_sweep(sweep_file(tmp_path, CASES))
    space = param_space(plan.sweep)
    assert space["case"] == tune.grid_search(["intra_only", "sync_only", "same_timestamp"])
    job = TrialJob(
        base=plan.base.model_dump(by_alias=True),
        sweep="s",
        runs_dir=str(tmp_path),
        parent_run_id="p",
        metric="knn/mean",
        monitor_sets=(),
        cases={k: dict(v) for k, v in plan.sweep.cases.items()},
    )
    config = trial_config(job, {"case": "sync_only", "run.seed": 1}, "t1")
    assert (config.loss.intra, config.loss.sync, config.loss.async_) == (False, True, False)
    assert config.run.seed == 1 and config.data.sampling == "overlapped"
    assert trial_config(job, {"case": "same_timestamp", "run.seed": 0}, "t2").data.sampling == (
        "same_timestamp"
    )
    row = TrialRow("t1", "s-t1", {"case": "sync_only", "run.seed": 1}, "finished", "", 2, 0.5, "r")
    best = write_best(plan, row, tmp_path / "best.yaml")
    assert load_config(best).loss.intra is False


def test_a_case_is_checked_like_the_space(tmp_path):
    body = "cases:\n  broken: {loss.w_snyc: 0.5}\n  none: {}\n"
    text = problems(sweep_file(tmp_path, body))
    assert "cases.none" in text and "sets nothing" in text
    body = "cases:\n  broken: {loss.w_snyc: 0.5}\n"
    assert "cases.broken.loss.w_snyc" in problems(sweep_file(tmp_path, body))
    body = "cases:\n  moved: {run.workers: 2}\n"
    assert "set it under `set:`" in problems(sweep_file(tmp_path, body))
    body = "cases:\n  nothing_on: {loss.intra: false, loss.sync: false, loss.async: false}\n"
    assert "every loss term is switched off" in problems(sweep_file(tmp_path, body))
