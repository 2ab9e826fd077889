"""The `crisscross` command line: parse -> build -> run -> close, one subcommand per job."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import click

from crisscross import __version__
from crisscross.config import ConfigError, ExperimentConfig, dump_config, load_config
from crisscross.config.loading import parse_overrides

log = logging.getLogger(__name__)


class BadInput(click.ClickException):
    """Bad input from the user: printed as one clear message, exit status 2, no traceback."""

    exit_code = 2


def _load(file: str, sets: Sequence[str]) -> ExperimentConfig:
    try:
        return load_config(file, parse_overrides(sets))
    except ConfigError as exc:
        raise BadInput(str(exc)) from None


SET_OPTION = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value by dotted key, e.g. --set loss.w_sync=0.5 (repeatable).",
)


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


@cli.group()
def config() -> None:
    """Check and inspect experiment files."""


@config.command("validate")
@click.argument("file", type=click.Path(dir_okay=True))
@SET_OPTION
def config_validate(file: str, sets: tuple[str, ...]) -> None:
    """Validate FILE (with any --set overrides); exit status 2 with the reasons when invalid."""
    cfg = _load(file, sets)
    click.echo(f"{file}: valid ({_summary(cfg)})")


@config.command("show")
@click.argument("file", type=click.Path(dir_okay=True))
@SET_OPTION
def config_show(file: str, sets: tuple[str, ...]) -> None:
    """Print the resolved config of FILE (defaults filled in, overrides applied) as YAML."""
    click.echo(dump_config(_load(file, sets)), nl=False)


def _summary(cfg: ExperimentConfig) -> str:
    m, loss, o = cfg.model, cfg.loss, cfg.optim
    families = [
        name
        for name, on in (("intra", loss.intra), ("sync", loss.sync), ("async", loss.async_))
        if on
    ]
    return (
        f"video {m.video_backbone} width {m.video_width}, audio {m.audio_backbone} width "
        f"{m.audio_width}; loss terms {'+'.join(families)}; global batch {o.batch_size} on "
        f"{cfg.run.workers} worker(s), {o.epochs} epochs"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point."""
    cli.main(args=list(argv) if argv is not None else sys.argv[1:], prog_name="crisscross")
