"""The evaluation registry: every protocol resolves to its runner, bad names and configs say so."""

from __future__ import annotations

import importlib
import inspect

import pytest

from crisscross.config import FinetuneExperiment, SvmExperiment
from crisscross.platform.evaluation import protocols
from crisscross.platform.evaluation.protocols import PROTOCOLS, evaluate, protocol


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_every_protocol_names_a_runner_of_its_schema(name):
    entry = PROTOCOLS[name]
    module, _, function = entry.runner.partition(":")
    run = getattr(importlib.import_module(module), function)
    params = inspect.signature(run).parameters
    assert list(params)[:1] == ["config"] and {"source", "folds", "say"} <= set(params)
    assert params["config"].annotation in (entry.schema, entry.schema.__name__)


def test_evaluate_calls_the_runner_with_the_config(monkeypatch):
    seen = {}

    def fake(config, *, source, folds, say):
        seen.update(config=config, source=source, folds=folds)
        return "outcome"

    monkeypatch.setitem(
        PROTOCOLS, "svm", protocols.Protocol("svm", "t", SvmExperiment, "audio", "x:y")
    )
    monkeypatch.setattr(protocols.importlib, "import_module", lambda m: type("M", (), {"y": fake}))
    config = SvmExperiment()
    assert evaluate("svm", config, source="run", folds="all") == "outcome"
    assert seen == {"config": config, "source": "run", "folds": "all"}


def test_unknown_protocols_and_foreign_configs_are_refused():
    with pytest.raises(ValueError, match="unknown evaluation protocol 'knn'; one of finetune"):
        protocol("knn")
    with pytest.raises(TypeError, match="protocol svm takes a SvmExperiment"):
        evaluate("svm", FinetuneExperiment(), source="x", folds="all")
