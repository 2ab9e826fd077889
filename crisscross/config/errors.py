"""ConfigError: every problem of a config, each naming its source, dotted key and reason."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from pydantic import BaseModel, ValidationError

# error types of our own validators, whose messages already quote the offending values
_SAYS_ITS_VALUE = {
    "no_terms",
    "zero_loss",
    "batch_split",
    "warmup",
    "backbone",
    "milestones",
    "empty_grid",
    "scale_order",
    "domain",
    "final",
    "empty_space",
    "domain_form",
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong: where it came from (a file or a --set item), the dotted key, the reason."""

    source: str
    key: str
    reason: str

    def __str__(self) -> str:
        return (
            f"{self.source}: {self.key}: {self.reason}"
            if self.key
            else f"{self.source}: {self.reason}"
        )


class ConfigError(ValueError):
    """An invalid experiment config; `str()` gives one line per problem."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(map(str, problems)))


def valid_keys(model: type[BaseModel]) -> list[str]:
    """The keys a section accepts, as written in YAML (aliases included)."""
    return [field.alias or name for name, field in model.model_fields.items()]


def section_at(root: type[BaseModel], path: tuple[str, ...]) -> type[BaseModel] | None:
    """The section class at a key path, or None when the path leaves the sections."""
    model: type[BaseModel] = root
    for part in path:
        field = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def unknown_key_reason(root: type[BaseModel], path: tuple[str, ...]) -> str:
    """'unknown key' with a did-you-mean and the keys valid at that level."""
    section = section_at(root, path[:-1])
    if section is None:
        return "unknown key"
    keys = valid_keys(section)
    close = difflib.get_close_matches(path[-1], keys, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    where = f"under '{'.'.join(path[:-1])}'" if len(path) > 1 else "at the top level"
    return f"unknown key{hint}; valid keys {where}: {', '.join(keys)}"


def problems_from(
    error: ValidationError, root: type[BaseModel], *, source_of: dict[str, str], default: str
) -> list[Problem]:
    """Turn pydantic's errors into Problems; `source_of` maps dotted keys to where they were set."""
    problems = []
    for item in error.errors():
        path = tuple(str(part) for part in item["loc"])
        ctx = item.get("ctx") or {}
        if "key" in ctx:  # cross-field checks name the key they are about
            path = (*path, *str(ctx["key"]).split("."))
        key = ".".join(path)
        if item["type"] == "extra_forbidden":
            reason = unknown_key_reason(root, path)
        else:
            reason = item["msg"].removeprefix("Value error, ")
            if item["type"] not in _SAYS_ITS_VALUE:
                reason += f" (got {_show(item.get('input'))})"
        related = [
            src
            for k, src in source_of.items()
            if k == key or k.startswith(key + ".") or key.startswith(k + ".")
        ]
        problems.append(Problem(", ".join(related) or default, key, reason))
    return problems


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
