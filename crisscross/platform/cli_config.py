"""`crisscross config validate|show`: check and inspect experiment files."""

from __future__ import annotations

import click

from crisscross.config import ExperimentConfig, dump_config
from crisscross.platform.clickutil import SET_OPTION, load_experiment


@click.group()
def config() -> None:
    """Check and inspect experiment files."""


@config.command("validate")
@click.argument("file", type=click.Path(dir_okay=True))
@SET_OPTION
def config_validate(file: str, sets: tuple[str, ...]) -> None:
    """Validate FILE (with any --set overrides); exit status 2 with the reasons when invalid."""
    cfg = load_experiment(file, sets)
    click.echo(f"{file}: valid ({_summary(cfg)})")


@config.command("show")
@click.argument("file", type=click.Path(dir_okay=True))
@SET_OPTION
def config_show(file: str, sets: tuple[str, ...]) -> None:
    """Print the resolved config of FILE (defaults filled in, overrides applied) as YAML."""
    click.echo(dump_config(load_experiment(file, sets)), nl=False)


def _summary(cfg: ExperimentConfig) -> str:
    m, loss, o = cfg.model, cfg.loss, cfg.optim
    switches = (("intra", loss.intra), ("sync", loss.sync), ("async", loss.async_))
    families = [name for name, on in switches if on]
    return (
        f"video {m.video_backbone} width {m.video_width}, audio {m.audio_backbone} width "
        f"{m.audio_width}; loss terms {'+'.join(families)}; global batch {o.batch_size} on "
        f"{cfg.run.workers} worker(s), {o.epochs} epochs"
    )
