"""Read experiment YAML, apply dotted `key=value` overrides, and write the resolved config back.

`apply_overrides` is the one override path: the CLI's `--set` and Ray Tune's search space both
go through it, and it re-validates the whole config.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from crisscross.config.errors import ConfigError, Problem, problems_from, unknown_key_reason
from crisscross.config.eval_schema import FinetuneExperiment, ProbeExperiment, SvmExperiment
from crisscross.config.schema import ExperimentConfig, Section
from crisscross.config.sweep_schema import SweepConfig

C = TypeVar("C", bound=Section)
# experiment kinds, named like the experiments/ folders that hold them
KINDS: dict[str, type[Section]] = {
    "pretext": ExperimentConfig,
    "finetune": FinetuneExperiment,
    "svm": SvmExperiment,
    "probe": ProbeExperiment,
    "sweeps": SweepConfig,
}


def guess_kind(path: str | os.PathLike[str]) -> str:
    """The kind of an experiment file from its folder (experiments/svm/... -> "svm") or the one
    above it (experiments/finetune/audioset/... -> "finetune"), else "pretext"."""
    parents = Path(path).parents
    for folder in (parents[0].name, parents[1].name if len(parents) > 1 else ""):
        if folder in KINDS:
            return folder
    return "pretext"


# YAML 1.1 reads 1e-4 as a string; researchers write learning rates that way, so accept it.
_FLOAT = re.compile(
    r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?(?:[eE][-+]?\d+)$|^[-+]?\d[\d_]*\.\d*$|^[-+]?\.\d+$"
)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reads 1e-4 as a float."""


_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first at line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def parse_yaml(text: str, *, source: str) -> Any:
    """YAML text -> Python data; a syntax error becomes a ConfigError with its line and column."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = exc.problem or exc.context or "invalid YAML"
        raise ConfigError([Problem(source, "", f"YAML syntax error at {where}{what}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(source, "", f"YAML syntax error: {exc}")]) from None


def load_config(
    path: str | os.PathLike[str],
    overrides: Mapping[str, Any] | None = None,
    *,
    schema: type[C] = ExperimentConfig,
) -> C:
    """Read and validate an experiment file, then apply `overrides` ({dotted key: value}).

    `schema` is the experiment kind: pretraining (the default) or an evaluation protocol.
    """
    source = str(path)
    file = Path(path)
    if not file.is_file():
        reason = "is a folder, not an experiment file" if file.is_dir() else "no such file"
        raise ConfigError([Problem(source, "", reason)])
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(source, "", f"cannot read: {exc}")]) from None
    data = parse_yaml(text, source=source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [Problem(source, "", f"the top level must be a mapping of sections, got {_kind(data)}")]
        )
    config = _validate(schema, data, source_of={}, default=source)
    return apply_overrides(config, overrides) if overrides else config


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """`["loss.w_sync=0.5", "loss.async=false"]` -> {"loss.w_sync": 0.5, "loss.async": False}.

    Values are read as YAML scalars or flow collections, so types match what a file would give.
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                [Problem(f"--set {item}", "", "expected KEY=VALUE, e.g. loss.w_sync=0.5")]
            )
        overrides[key] = parse_yaml(raw, source=f"--set {item}") if raw.strip() else None
    return overrides


def apply_overrides(config: C, overrides: Mapping[str, Any]) -> C:
    """A new, re-validated config with each dotted key set to its value (the config is frozen)."""
    data = config.model_dump(by_alias=True)
    problems: list[Problem] = []
    for key, value in overrides.items():
        source = f"--set {key}={_format(value)}"
        path = tuple(key.split("."))
        node: Any = data
        for depth, part in enumerate(path):
            if not isinstance(node, dict):
                parent = ".".join(path[:depth])
                problems.append(Problem(source, key, f"'{parent}' is a value, not a section"))
                break
            if part not in node:
                problems.append(
                    Problem(source, key, unknown_key_reason(type(config), path[: depth + 1]))
                )
                break
            if depth == len(path) - 1:
                node[part] = value
            node = node[part]
    if problems:
        raise ConfigError(problems)
    source_of = {key: f"--set {key}={_format(value)}" for key, value in overrides.items()}
    return _validate(type(config), data, source_of=source_of, default=", ".join(source_of.values()))


def dump_config(config: Section) -> str:
    """The resolved config as YAML that `load_config` reads back to an equal config."""
    data = config.model_dump(mode="json", by_alias=True)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def _validate(
    schema: type[C], data: dict[str, Any], *, source_of: dict[str, str], default: str
) -> C:
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            problems_from(exc, schema, source_of=source_of, default=default)
        ) from None


def _format(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string"}.get(type(value), type(value).__name__)
