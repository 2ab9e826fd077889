"""Experiment configs: typed frozen sections, YAML loading, dotted overrides, clear errors."""

from crisscross.config.errors import ConfigError, Problem
from crisscross.config.loading import (
    apply_overrides,
    dump_config,
    load_config,
    parse_overrides,
    parse_yaml,
)
from crisscross.config.schema import (
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
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "LossConfig",
    "ModelConfig",
    "MonitorConfig",
    "OptimConfig",
    "Problem",
    "RunConfig",
    "TrackingConfig",
    "apply_overrides",
    "dump_config",
    "load_config",
    "parse_overrides",
    "parse_yaml",
]
