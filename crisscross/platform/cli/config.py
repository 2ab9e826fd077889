"""`crisscross config validate|show`: check and inspect experiment files."""

from __future__ import annotations

import click

from crisscross.config import KINDS, ExperimentConfig, dump_config, guess_kind
from crisscross.platform.cli.common import SET_OPTION, load_experiment

KIND_OPTION = click.option(
    "--kind",
    type=click.Choice(sorted(KINDS)),
    help="Experiment kind [from the file's folder: experiments/<kind>/, else pretext].",
)


@click.group()
def config() -> None:
    """Check and inspect experiment files."""


@config.command("validate")
@click.argument("file", type=click.Path(dir_okay=True))
@SET_OPTION
@KIND_OPTION
def config_validate(file: str, sets: tuple[str, ...], kind: str | None) -> None:
    """Validate FILE (with any --set overrides); exit status 2 with the reasons when invalid."""
    kind = kind or guess_kind(file)
    cfg = load_experiment(file, sets, schema=KINDS[kind])
    about = _summary(cfg) if isinstance(cfg, ExperimentConfig) else f"{kind} experiment"
    click.echo(f"{file}: valid ({about})")


@config.command("show")
@click.argument("file", type=click.Path(dir_okay=True))
@SET_OPTION
@KIND_OPTION
def config_show(file: str, sets: tuple[str, ...], kind: str | None) -> None:
    """Print the resolved config of FILE (defaults filled in, overrides applied) as YAML."""
    schema = KINDS[kind or guess_kind(file)]
    click.echo(dump_config(load_experiment(file, sets, schema=schema)), nl=False)


def _summary(cfg: ExperimentConfig) -> str:
    m, loss, o = cfg.model, cfg.loss, cfg.optim
    switches = (("intra", loss.intra), ("sync", loss.sync), ("async", loss.async_))
    families = [name for name, on in switches if on]
    return (
        f"video {m.video_backbone} width {m.video_width}, audio {m.audio_backbone} width "
        f"{m.audio_width}; loss terms {'+'.join(families)}; global batch {o.batch_size} on "
        f"{cfg.run.workers} worker(s), {o.epochs} epochs"
    )
