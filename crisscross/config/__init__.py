"""Experiment configs: typed frozen sections, YAML loading, dotted overrides, clear errors."""

from crisscross.config.errors import ConfigError, Problem
from crisscross.config.eval_schema import FinetuneExperiment, ProbeExperiment, SvmExperiment
from crisscross.config.loading import (
    KINDS,
    apply_overrides,
    dump_config,
    guess_kind,
    load_config,
    parse_overrides,
    parse_yaml,
)
from crisscross.config.schema import (
    AugmentConfig,
    DataConfig,
    ExperimentConfig,
    LossConfig,
    ModelConfig,
    MonitorConfig,
    OptimConfig,
    RunConfig,
    TrackingConfig,
)

__all__ = [
    "KINDS",
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "FinetuneExperiment",
    "LossConfig",
    "ModelConfig",
    "MonitorConfig",
    "OptimConfig",
    "ProbeExperiment",
    "Problem",
    "RunConfig",
    "SvmExperiment",
    "TrackingConfig",
    "apply_overrides",
    "dump_config",
    "guess_kind",
    "load_config",
    "parse_overrides",
    "parse_yaml",
]
