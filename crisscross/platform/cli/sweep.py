"""`crisscross sweep`: a Ray Tune search over pretraining configs."""

from __future__ import annotations

import time

import click

from crisscross.config import ConfigError
from crisscross.config.loading import parse_overrides
from crisscross.platform.cli.common import SET_OPTION, BadInput, RunFailed, as_exit_status


@click.command()
@click.argument("sweep_file", metavar="SWEEP", type=click.Path(dir_okay=False))
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the interrupted sweep of this file: finished trials are not run again.",
)
@SET_OPTION
def sweep(sweep_file: str, resume: bool, sets: tuple[str, ...]) -> None:
    """Search the pretraining configs SWEEP describes with Ray Tune (each trial a Ray Train run),
    stop weak trials early with ASHA, select on downstream accuracy, track it all in MLflow and
    write the best configuration as an experiment file. --set adds to the sweep's `set:`."""
    from crisscross.platform.sweep.plan import plan_sweep
    from crisscross.platform.sweep.run import run_sweep

    start = time.perf_counter()
    try:
        plan = plan_sweep(sweep_file, parse_overrides(sets))
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    with as_exit_status():
        outcome = run_sweep(plan, resume=resume, say=click.echo)
    took = f"sweep took {time.perf_counter() - start:.0f} s"
    if outcome.interrupted:
        done = sum(r.status in ("finished", "stopped", "failed") for r in outcome.rows)
        raise RunFailed(
            f"interrupted with {done} of {len(outcome.rows)} trials ended; continue with: "
            f"crisscross sweep {sweep_file} --resume ({took})"
        )
    if outcome.best is None:
        raise RunFailed(f"no trial produced a score; see {outcome.folder}/trials.csv ({took})")
    best = outcome.best
    from crisscross.platform.redact import redact

    click.echo(
        f"best: {best.name} ({plan.sweep.search.metric} {best.score:.4f}"
        + "".join(f", {k} top-1 {v:.4f}" for k, v in best.final.items())
        + f"); MLflow run {best.run_id}\n"
        f"  best config: {outcome.best_yaml}  (run it: crisscross pretrain {outcome.best_yaml})\n"
        f"  plots and table: {', '.join(str(p) for p in outcome.artifacts[:-1])}\n"
        f"  MLflow parent run {outcome.parent_run_id}: "
        f"mlflow ui --backend-store-uri {redact(outcome.uri)}\n{took}"
    )
