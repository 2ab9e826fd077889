"""`crisscross sweep`: Ray Tune over CrissCross pretrainings, selected on downstream accuracy.

Order: the sweep file, its base experiment and every value the space can give are validated, the
data and monitor manifests are built and the cluster is checked before any trial starts. Each
trial is a multi-worker Ray Train pretraining (Tune with Train, Ray 2.60: the trial's function
starts a TorchTrainer); ASHA stops weak trials on the online monitor's metric. The sweep folder
`<output_dir>/<name>` holds Tune's state, so `--resume` continues without re-running finished
trials.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from mlflow.tracking import MlflowClient
from ray import tune

from crisscross.config import ExperimentConfig, apply_overrides
from crisscross.config.sweep_schema import CASE, Domain, SweepConfig
from crisscross.datasets.fs import atomic_write_text
from crisscross.platform.lease import Lease, LeaseError
from crisscross.platform.pretrain.job import (
    PretrainError,
    cpu_request,
    monitor_sets,
    pretext_manifest,
    steps_per_epoch,
    tracking_and_ray,
)
from crisscross.platform.pretrain.run_record import RecordError, parse_record
from crisscross.platform.redact import redact, redact_tree
from crisscross.platform.sweep.plan import SweepPlan
from crisscross.platform.sweep.report import SCORE
from crisscross.platform.sweep.results import (
    RANK,
    TrialRow,
    best_trial,
    collect,
    plot_heatmap,
    plot_parallel,
    ranked,
    table_text,
    write_best,
    write_table,
)
from crisscross.platform.sweep.trial import TrialJob, TrialLedger, run_trial
from crisscross.platform.tracking import (
    experiment_id,
    flatten,
    log_params_and_tags,
)
from crisscross.trainers.pretrain import quiet_ray

FINAL_FOLDS = {"svm": "all", "finetune": "1"}  # a final evaluation: all 5 ESC-50 folds, split 1

RECORD = "crisscross_sweep.json"


class SweepError(PretrainError):
    """Bad input or an unusable environment, found before any trial starts."""


def trial_request(config: ExperimentConfig) -> tuple[float, float, list[dict[str, float]]]:
    """(CPUs, GPUs, bundles) one trial holds: its training workers and their decode actors."""
    r, d = config.run, config.data
    worker = {"CPU": r.cpus_per_worker} | ({"GPU": 1.0} if r.use_gpu else {})
    decode = {"CPU": d.decode_cpus}
    return sum(cpu_request(config)), float(r.workers if r.use_gpu else 0), [worker, decode]


def concurrency(
    config: ExperimentConfig, cap: int | None, *, local: bool, say: Callable[[str], None]
) -> int:
    """How many trials the cluster holds at once (at most `cap`); SweepError when none fits."""
    cpus, gpus, bundles = trial_request(config)
    total = ray.cluster_resources()
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    problems = []
    for bundle, what in zip(bundles, ("training worker", "decode actor"), strict=True):
        if not any(all(node.get(k, 0) >= v for k, v in bundle.items()) for node in nodes):
            largest = max((node.get("CPU", 0) for node in nodes), default=0)
            problems.append(
                f"a trial's {what} asks for {_show(bundle)}, which no node has (the largest "
                f"has {largest:g} CPUs): lower run.cpus_per_worker / data.decode_cpus"
            )
    fits = math.floor(total.get("CPU", 0) / cpus + 1e-9)
    if gpus:
        fits = min(fits, math.floor(total.get("GPU", 0) / gpus + 1e-9))
    if fits == 0 and not problems:
        need = f"{cpus:g} CPUs" + (f" and {gpus:g} GPUs" if gpus else "")
        have = f"{total.get('CPU', 0):g} CPUs" + (
            f" and {total.get('GPU', 0):g} GPUs" if gpus else ""
        )
        problems.append(
            f"one trial needs {need} (run.workers x (run.cpus_per_worker + data.decode_workers "
            f"x data.decode_cpus), and 1 GPU per worker with run.use_gpu); this Ray cluster has "
            f"{have}: lower them, or use a larger cluster"
        )
    if problems:
        if local:
            raise SweepError("\n".join(problems))
        for problem in problems:  # an autoscaling cluster may still add the nodes
            say(f"note: {problem} (waiting for the autoscaler to add nodes)")
        fits = max(fits, 1)
    if cap is not None and cap > fits:
        say(
            f"search.max_concurrent_trials {cap} lowered to {fits}: the cluster holds {fits} "
            "trials at once"
        )
    return min(cap or fits, fits)


def _show(bundle: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in bundle.items())


def param_space(sweep: SweepConfig) -> dict[str, Any]:
    """Tune's space: each searched key's domain, and the case names (a grid, or one drawn)."""
    space = {key: tune_domain(domain) for key, domain in sweep.space.items()}
    if sweep.cases:
        names = list(sweep.cases)
        grid = sweep.search.algorithm == "grid"
        space[CASE] = tune.grid_search(names) if grid else tune.choice(names)
    return space


def tune_domain(domain: Domain) -> Any:
    form = domain.form
    if form == "grid":
        return tune.grid_search(list(domain.grid or []))
    if form == "choice":
        return tune.choice(list(domain.choice or []))
    low, high = domain.uniform or domain.loguniform or domain.randint or (0, 0)
    if form == "uniform":
        return tune.uniform(low, high)
    if form == "loguniform":
        return tune.loguniform(low, high)
    return tune.randint(int(low), int(high) + 1)  # both ends included


def search_algorithm(sweep: SweepConfig, max_concurrent: int) -> Any:
    """Tune's search algorithm, holding at most `max_concurrent` trials at once."""
    s = sweep.search
    if s.algorithm == "optuna":
        import optuna
        from ray.tune.search import ConcurrencyLimiter
        from ray.tune.search.optuna import OptunaSearch

        searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=s.seed))
        return ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
    from ray.tune.search.basic_variant import BasicVariantGenerator

    return BasicVariantGenerator(random_state=s.seed, max_concurrent=max_concurrent)


def scheduler(sweep: SweepConfig, epochs: int) -> Any:
    a = sweep.asha
    if not a.enabled:
        return None
    return tune.schedulers.ASHAScheduler(
        time_attr="epoch",
        max_t=epochs,
        grace_period=min(a.grace_period, epochs),
        reduction_factor=a.reduction_factor,
        stop_last_trials=False,  # a trial at its last epoch finishes: exports its backbones
    )


def read_sweep_record(folder: str) -> dict[str, Any] | None:
    """The sweep folder's record (parent run id, sweep, base, finals), None when it has none;
    SweepError naming the file when it is empty or damaged."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return None
    try:
        return parse_record(
            path.read_bytes(),
            where=str(path),
            advice="it ties the sweep folder to its MLflow parent run: delete the sweep folder "
            "to start the sweep again, or give another name",
        )
    except RecordError as exc:
        raise SweepError(str(exc)) from None


def write_sweep_record(folder: str, record: dict[str, Any]) -> None:
    """Write the record whole or not at all, credentials masked."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_write_text(str(Path(folder) / RECORD), json.dumps(redact_tree(record), indent=1))


def open_parent(client: MlflowClient, plan: SweepPlan, *, resume: bool) -> str:
    """The sweep's MLflow parent run: recorded in the sweep folder, or a new one."""
    record = read_sweep_record(plan.folder)
    dumped = redact_tree(plan.sweep.model_dump(mode="json", by_alias=True))  # as recorded
    base = redact_tree(plan.base.model_dump(mode="json", by_alias=True))
    if record is not None and not resume:
        raise SweepError(
            f"sweep '{plan.sweep.name}' already exists in {plan.folder}: add --resume to "
            "continue it, or give another name (or output_dir) to start a new one"
        )
    if record is None and resume:
        raise SweepError(f"--resume: no sweep '{plan.sweep.name}' in {plan.folder} to resume")
    if record is not None:
        a = flatten(redact_tree(record.get("sweep", {}) | {"base": record.get("base", {})}))
        b = flatten(dumped | {"base": base})
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if changed:
            raise SweepError(
                f"{plan.folder} holds sweep '{plan.sweep.name}' started with another sweep file "
                f"or base (differs at: {', '.join(changed[:8])}); resume it unchanged, or start "
                "a new sweep with another name"
            )
        if record.get("finals") is None:  # not finished: it runs again
            client.update_run(record["mlflow_run_id"], status="RUNNING")
        return record["mlflow_run_id"]
    exp = experiment_id(client, plan.base.tracking.experiment)
    run = client.create_run(exp, run_name=plan.sweep.name)
    log_params_and_tags(
        client,
        run.info.run_id,
        {f"sweep.{k}": v for k, v in flatten(dumped).items() if not k.startswith("space.")}
        | {
            f"space.{k}": json.dumps(d.model_dump(exclude_none=True))
            for k, d in plan.sweep.space.items()
        },
        {"crisscross.sweep": plan.sweep.name, "crisscross.sweep_folder": plan.folder},
    )
    write_sweep_record(
        plan.folder, {"mlflow_run_id": run.info.run_id, "sweep": dumped, "base": base}
    )
    return run.info.run_id


@dataclass(frozen=True)
class Started:
    """What the driver resolved before Tune runs: ids, sets, the trial's job."""

    client: MlflowClient
    uri: str
    parent_run_id: str
    job: TrialJob
    max_concurrent: int


def prepare(plan: SweepPlan, *, resume: bool, say: Callable[[str], None]) -> Started:
    """Synthesise (if asked), build the manifests, check tracking and the cluster, open the
    parent run; SweepError for anything that would stop a trial."""
    config = plan.base
    if plan.synthetic is not None:
        from crisscross.datasets.synth.corpus import write_corpus

        write_corpus(plan.synthetic, say)
    manifest = pretext_manifest(config, say)
    steps_per_epoch(config, manifest)
    sets = monitor_sets(config)
    uri, local = tracking_and_ray(config, say)
    # Ray Data's statistics actor is created by the first dataset that runs; trials starting
    # side by side would race to create it (KeyError tracebacks), so one tiny dataset goes first.
    quiet_ray()
    ray.data.range(1).materialize()
    most = concurrency(config, plan.sweep.search.max_concurrent_trials, local=local, say=say)
    client = MlflowClient(uri)
    parent = open_parent(client, plan, resume=resume)
    # Tune starts each trial in its own folder: every path a trial reads must be absolute
    base = apply_overrides(config, {"data.manifest": manifest, "tracking.uri": uri})
    job = TrialJob(
        base=base.model_dump(by_alias=True),
        sweep=plan.sweep.name,
        runs_dir=plan.trial_runs,
        parent_run_id=parent,
        metric=plan.sweep.search.metric,
        monitor_sets=sets,
        cases={name: dict(values) for name, values in plan.sweep.cases.items()},
    )
    return Started(client, uri, parent, job, most)


def tuner(plan: SweepPlan, started: Started, *, resume: bool) -> tune.Tuner:
    """A new Tuner for the plan, or the one saved in the sweep folder (--resume)."""
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, job=started.job),
        # The trial's own process only starts the TorchTrainer, whose workers and decode actors
        # hold the CPUs; a CPU share here would leave a 2-CPU machine short of its last trial.
        {"CPU": 0, "memory": 2**20},
    )
    if resume and tune.Tuner.can_restore(plan.folder):
        return tune.Tuner.restore(
            plan.folder, trainable, resume_unfinished=True, resume_errored=True
        )
    sweep, epochs = plan.sweep, plan.base.optim.epochs
    ledger = TrialLedger(
        folder=plan.folder,
        runs_dir=started.job.runs_dir,
        sweep=sweep.name,
        epochs=epochs,
        uri=started.uri,
        metric=sweep.search.metric,
    )
    return tune.Tuner(
        trainable,
        param_space=param_space(sweep),
        tune_config=tune.TuneConfig(
            metric=SCORE,
            mode="max",
            search_alg=search_algorithm(sweep, started.max_concurrent),
            scheduler=scheduler(sweep, epochs),
            num_samples=sweep.search.num_samples,
            trial_name_creator=functools.partial(_trial_name, sweep.name),
            trial_dirname_creator=functools.partial(_trial_name, sweep.name),
        ),
        run_config=tune.RunConfig(
            name=sweep.name,
            storage_path=str(Path(plan.folder).parent),
            failure_config=tune.FailureConfig(max_failures=0),
            callbacks=[ledger],
            verbose=1,
        ),
    )


def _trial_name(sweep: str, trial: Any) -> str:
    return f"{sweep}-{trial.trial_id}"


@dataclass(frozen=True)
class SweepOutcome:
    parent_run_id: str
    uri: str
    folder: str
    rows: list[TrialRow]
    best: TrialRow | None
    best_yaml: Path | None
    artifacts: list[Path]
    interrupted: bool


def run_sweep(
    plan: SweepPlan, *, resume: bool = False, say: Callable[[str], None] = print
) -> SweepOutcome:
    """Check, search, select, write; SweepError for bad input before any trial starts, or
    when another sweep process holds the sweep folder."""
    try:
        lease = Lease(plan.folder, what="sweep", other="another sweep name", say=say)
        lease.acquire()
    except LeaseError as exc:
        raise SweepError(str(exc)) from None
    try:
        return _run_sweep(plan, resume=resume, say=say)
    finally:
        lease.release()


def _run_sweep(plan: SweepPlan, *, resume: bool, say: Callable[[str], None]) -> SweepOutcome:
    started = prepare(plan, resume=resume, say=say)
    sweep = plan.sweep
    say(
        f"sweep '{sweep.name}': {sweep.search.algorithm} search over "
        f"{', '.join([*sweep.space, *([f'{len(sweep.cases)} cases'] if sweep.cases else [])])}; "
        f"at most {started.max_concurrent} trial(s) at once, each {plan.base.run.workers} "
        f"worker(s); selected on {sweep.search.metric}; MLflow parent run "
        f"{started.parent_run_id} in {redact(started.uri)}; folder {plan.folder}"
    )
    record = read_sweep_record(plan.folder) or {}
    if record.get("finals") is not None:  # a finished sweep: show its results, run nothing
        say(f"sweep '{sweep.name}' already finished; nothing to run. Its trials:")
        rows = collect(tuner(plan, started, resume=True).get_results(), plan, started.job.runs_dir)
        for row in rows:
            row.final = dict(record["finals"].get(row.trial_id, {}))
        return conclude(plan, started, rows, interrupted=False, say=say, log=False)
    results = tuner(plan, started, resume=resume).fit()
    rows = collect(results, plan, started.job.runs_dir)
    interrupted = any(r.status == "interrupted" for r in rows)
    mark_interrupted_runs(started.client, rows)
    if not interrupted:
        final_evaluations(plan, rows, say=say)
    return conclude(plan, started, rows, interrupted=interrupted, say=say)


def mark_interrupted_runs(client: MlflowClient, rows: list[TrialRow]) -> None:
    """Close the runs of trials the interruption cut short as KILLED, saying --resume continues
    them. A run that already FINISHED stays so: its pretraining completed just before Ctrl-C,
    before Tune heard of it, and --resume only reports it."""
    for r in rows:
        if r.status == "interrupted" and r.run_id:
            if client.get_run(r.run_id).info.status == "FINISHED":
                continue
            client.set_tag(r.run_id, "crisscross.stop_reason", r.reason)
            client.set_terminated(r.run_id, status="KILLED")


def final_evaluations(plan: SweepPlan, rows: list[TrialRow], *, say: Callable[[str], None]):
    """The configured downstream evaluations on the top-k finished trials, into `row.final`."""
    from crisscross.platform.evaluation.common import EvalError
    from crisscross.platform.evaluation.protocols import evaluate
    from crisscross.platform.pretrain.closing import RunFailedError

    top = [r for r in ranked(rows) if r.status == "finished" and r.run_id]
    for row in top[: plan.sweep.final.top_k]:
        for protocol, config in plan.finals.items():
            say(f"final evaluation of {row.name}: {protocol}")
            try:
                folds = FINAL_FOLDS[protocol]
                outcome = evaluate(protocol, config, source=row.run_id, folds=folds, say=say)
            except (EvalError, RunFailedError) as exc:  # the search's results stay
                say(f"final evaluation of {row.name}: {protocol} failed: {exc}")
                row.reason += f"; {protocol} failed: {str(exc).splitlines()[0]}"
                continue
            row.final[protocol] = outcome.mean


def conclude(
    plan: SweepPlan,
    started: Started,
    rows: list[TrialRow],
    *,
    interrupted: bool,
    say: Callable[[str], None],
    log: bool = True,
) -> SweepOutcome:
    """Pick the best trial, write the table, plots and best.yaml, log them on the parent run
    (unless `log` is false: a finished sweep shown again)."""
    client, parent, folder = started.client, started.parent_run_id, Path(plan.folder)
    metric = plan.sweep.search.metric
    best = None if interrupted else best_trial(rows)
    artifacts = [write_table(rows, folder / "trials.csv", metric)]
    artifacts += [
        p
        for p in (
            plot_heatmap(plan, rows, folder / "heatmap_w_sync_w_async.png"),
            plot_parallel(plan, rows, folder / "parallel_coordinates.png"),
        )
        if p is not None
    ]
    best_yaml = write_best(plan, best, folder / "best.yaml") if best else None
    if best_yaml:
        artifacts.append(best_yaml)
    if log:
        log_conclusion(client, parent, rows, best, metric, artifacts, interrupted=interrupted)
    if not interrupted:
        record = read_sweep_record(plan.folder) or {}
        record["finals"] = {r.trial_id: r.final for r in rows}
        write_sweep_record(plan.folder, record)
    say("trials, best first:\n" + table_text(rows, metric))
    return SweepOutcome(
        parent, started.uri, plan.folder, rows, best, best_yaml, artifacts, interrupted
    )


def log_conclusion(
    client: MlflowClient,
    parent: str,
    rows: list[TrialRow],
    best: TrialRow | None,
    metric: str,
    artifacts: list[Path],
    *,
    interrupted: bool,
) -> None:
    """Counts, the best trial's figures and tags, the files; then the parent run's status."""
    counts = {s: sum(r.status == s for r in rows) for s in RANK}
    metrics = {f"trials_{s}": float(n) for s, n in counts.items()}
    if best is not None and best.score is not None:
        metrics[f"best/{metric}"] = best.score
        for protocol, value in best.final.items():
            metrics[f"best/{protocol}_top1"] = value
        client.set_tag(parent, "crisscross.best_trial", best.name)
        client.set_tag(parent, "crisscross.best_run", best.run_id or "")
    for key, value in metrics.items():
        client.log_metric(parent, key, value)
    for path in artifacts:
        client.log_artifact(parent, str(path))
    status = "KILLED" if interrupted else ("FINISHED" if best else "FAILED")
    client.set_terminated(parent, status=status)
