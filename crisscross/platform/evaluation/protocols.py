"""The registry of evaluation protocols: one entry each (its experiment schema, the modality it
scores, its runner), and `evaluate`, which every caller (the commands, the quickstart, a sweep's
final evaluations) goes through instead of dispatching on protocol names by hand.

A runner is imported when it runs, so that reading the registry (the sweep file's checks) does
not import torch or Ray.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from crisscross.config import FinetuneExperiment, ProbeExperiment, SvmExperiment

if TYPE_CHECKING:
    from crisscross.platform.evaluation.common import EvalOutcome


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol."""

    name: str
    title: str  # for people: tables, logs
    schema: type  # its experiment file's schema
    modality: str  # the encoder it scores: "video", "audio", or "both" (the dataset decides)
    runner: str  # "module:function", called (config, source=, folds=, say=) -> EvalOutcome


PROTOCOLS = {
    p.name: p
    for p in (
        Protocol(
            "finetune",
            "full fine-tuning",
            FinetuneExperiment,
            "video",
            "crisscross.platform.evaluation.finetune:run_finetune",
        ),
        Protocol(
            "svm",
            "linear SVM",
            SvmExperiment,
            "audio",
            "crisscross.platform.evaluation.frozen:run_svm",
        ),
        Protocol(
            "probe",
            "linear probe",
            ProbeExperiment,
            "both",
            "crisscross.platform.evaluation.frozen:run_probe",
        ),
    )
}


def protocol(name: str) -> Protocol:
    """The registered protocol `name`; ValueError naming the known ones otherwise."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(
            f"unknown evaluation protocol {name!r}; one of {', '.join(PROTOCOLS)}"
        ) from None


def evaluate(
    name: str, config, *, source: str, folds: str, say: Callable[[str], None] = print
) -> EvalOutcome:
    """Run protocol `name` on `config` (an experiment of its schema) with the weights `source`
    on `folds` ("all", "1" or "1,3")."""
    entry = protocol(name)
    if not isinstance(config, entry.schema):
        raise TypeError(f"protocol {name} takes a {entry.schema.__name__}, not {type(config)}")
    module, _, function = entry.runner.partition(":")
    run = getattr(importlib.import_module(module), function)
    return run(config, source=source, folds=folds, say=say)
