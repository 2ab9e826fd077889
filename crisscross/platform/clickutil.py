"""Pieces every command shares: the bad-input exception and the --set option."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import click

from crisscross.config import ConfigError, ExperimentConfig, load_config
from crisscross.config.loading import parse_overrides


class BadInput(click.ClickException):
    """Bad input from the user: printed as one clear message, exit status 2, no traceback."""

    exit_code = 2


def load_experiment(
    file: str, sets: Sequence[str], extra: Mapping[str, Any] | None = None
) -> ExperimentConfig:
    """The validated config of `file` with `--set` overrides, then `extra` (from options)."""
    try:
        return load_config(file, parse_overrides(sets) | dict(extra or {}))
    except ConfigError as exc:
        raise BadInput(str(exc)) from None


SET_OPTION = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value by dotted key, e.g. --set loss.w_sync=0.5 (repeatable).",
)
