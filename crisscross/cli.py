"""The `crisscross` command line: parse -> build -> run -> close, one subcommand per job."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import click

from crisscross import __version__
from crisscross.bench.cli import bench
from crisscross.platform.cli.cluster import cluster
from crisscross.platform.cli.config import config
from crisscross.platform.cli.data import manifest, prepare, synth
from crisscross.platform.cli.eval import finetune, probe, report, svm
from crisscross.platform.cli.sweep import sweep
from crisscross.platform.cli.train import pretrain, quickstart, sync


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="crisscross")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
)
def cli(log_level: str) -> None:
    """CrissCross: self-supervised audio-visual representation learning on Ray."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


for command in (
    config,
    synth,
    manifest,
    prepare,
    pretrain,
    quickstart,
    sync,
    sweep,
    finetune,
    svm,
    probe,
    report,
    bench,
    cluster,
):
    cli.add_command(command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    cli.main(args=list(argv) if argv is not None else sys.argv[1:], prog_name="crisscross")


if __name__ == "__main__":
    main()
