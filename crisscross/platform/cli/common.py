"""Pieces every command shares: the bad-input exception and the --set option."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from crisscross.config import ConfigError, ExperimentConfig, load_config
from crisscross.config.loading import parse_overrides
from crisscross.config.schema import Section

C = TypeVar("C", bound=Section)


class LazyChoice(click.Choice):
    """A click.Choice whose choices come from `load()` when first needed (a subcommand's help or
    its parsing), so that the module that owns them, and what it imports, is not loaded just to
    build the command line."""

    def __init__(self, load: Callable[[], Sequence[str]], case_sensitive: bool = True) -> None:
        self._load = load
        self._choices: tuple[str, ...] | None = None
        self.case_sensitive = case_sensitive

    @property
    def choices(self) -> tuple[str, ...]:
        if self._choices is None:
            self._choices = tuple(self._load())
        return self._choices

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:
        self._choices = tuple(value)


class BadInput(click.ClickException):
    """Bad input from the user: printed as one clear message, exit status 2, no traceback."""

    exit_code = 2


class RunFailed(click.ClickException):
    """A job started and stopped early: exit status 1, one message."""

    exit_code = 1


class Interrupted(click.ClickException):
    """Stopped by a signal: exit status 128 + its number (130 SIGINT, 143 SIGTERM), one message."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


@contextmanager
def as_exit_status() -> Iterator[None]:
    """Bad input -> exit 2, a run stopped in training or a full disk -> exit 1, stopped by a
    signal -> 128 + its number; one message, no traceback."""
    import signal

    from crisscross.platform.evaluation.common import EvalError
    from crisscross.platform.pretrain.closing import RunFailedError, RunInterruptedError
    from crisscross.platform.pretrain.job import PretrainError

    try:
        yield
    except (PretrainError, EvalError) as exc:
        raise BadInput(str(exc)) from None
    except RunInterruptedError as exc:
        raise Interrupted(str(exc), exc.signum) from None
    except RunFailedError as exc:
        raise RunFailed(str(exc)) from None
    except KeyboardInterrupt:  # Ctrl-C before or after training: nothing half-written to keep
        raise Interrupted("interrupted (SIGINT)", signal.SIGINT) from None
    except OSError as exc:
        raise_if_no_space(exc)
        raise


def raise_if_no_space(exc: OSError) -> None:
    """RunFailed with `no_space`'s message when `exc` is a full disk (or a spent quota)."""
    from crisscross.datasets.fs import NO_SPACE  # here: the CLI starts without pyarrow

    if exc.errno in NO_SPACE:
        raise no_space(exc) from None


def no_space(exc: OSError) -> RunFailed:
    """The message for a full disk: which file, and that its previous version is kept."""
    return RunFailed(
        f"no space left on the device: {exc.filename or 'a file'} was not written; free some "
        "space and run the same command again (records, manifests and other small state are "
        "replaced whole or not at all, and it goes on from the last checkpoint or part)"
    )


def load_experiment(
    file: str,
    sets: Sequence[str],
    extra: Mapping[str, Any] | None = None,
    *,
    schema: type[C] = ExperimentConfig,
) -> C:
    """The validated config of `file` with `--set` overrides, then `extra` (from options)."""
    try:
        return load_config(file, parse_overrides(sets) | dict(extra or {}), schema=schema)
    except ConfigError as exc:
        raise BadInput(str(exc)) from None


SET_OPTION = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value by dotted key, e.g. --set loss.w_sync=0.5 (repeatable).",
)
