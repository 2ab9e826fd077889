"""Encoders, heads, the CrissCross objective and weight import/export (torch only).

The names below are imported on first use (PEP 562), so that `crisscross.models.factory`, which
the config schema reads for backbone names, does not import torch: the CLI starts in well under a
second for `--help` and `config validate`.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "AudioResNet18": "audio",
    "Backbone": "backbone",
    "Classifier": "classifier",
    "svm_features": "classifier",
    "CrissCross": "crisscross",
    "BACKBONES": "factory",
    "backbone_modality": "factory",
    "create_backbone": "factory",
    "list_backbones": "factory",
    "predictor": "heads",
    "projector": "heads",
    "STATS": "objective",
    "TERMS": "objective",
    "LossWeights": "objective",
    "crisscross_loss": "objective",
    "embedding_stats": "objective",
    "negative_cosine": "objective",
    "pair_loss": "objective",
    "R2Plus1D": "video",
    "BackboneSpec": "weights",
    "WeightsError": "weights",
    "backbone_from_state": "weights",
    "detect_backbone": "weights",
    "load_backbone": "weights",
    "read_state_dict": "weights",
    "save_backbone": "weights",
    "submodule_state": "weights",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'crisscross.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"crisscross.models.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
