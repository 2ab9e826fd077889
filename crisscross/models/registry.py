"""A small named-factory registry: configs name registered entries, never import paths."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownEntryError(KeyError):
    """Raised for a name that is not registered; the message lists the registered names."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to factories of one kind (for example, backbones)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._meta: dict[str, dict[str, object]] = {}

    def register(self, name: str, **meta: object) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register `factory` under `name`, with metadata such as its modality."""

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            self._meta[name] = dict(meta)
            return factory

        return decorator

    def names(self, **meta: object) -> list[str]:
        """Registered names, optionally only those whose metadata matches every given item."""
        return sorted(
            name
            for name, entry in self._meta.items()
            if all(entry.get(key) == value for key, value in meta.items())
        )

    def meta(self, name: str) -> dict[str, object]:
        self.get(name)
        return dict(self._meta[name])

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._factories[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownEntryError(
                f"unknown {self.kind} {name!r}{hint}; registered: {', '.join(self.names())}"
            ) from None

    def create(self, name: str, **kwargs: object) -> T:
        return self.get(name)(**kwargs)
