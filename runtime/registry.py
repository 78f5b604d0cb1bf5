"""A generic name → entry registry shared by ops, relaxations, selectors and datasets.

One class for every extension point so that plugins register exactly the way
built-ins do, and every lookup of an unknown name ends in the same friendly
error that lists the registered names and suggests the closest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import attrs

from nasc.errors import RegistryError, did_you_mean

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class Entry(Generic[T]):
    name: str
    value: T
    doc: str
    origin: str  # module (or plugin) that registered it
    defaults: dict[str, Any] = attrs.field(factory=dict)


class Registry(Generic[T]):
    """Named entries of one kind, e.g. `RELAXATIONS`."""

    def __init__(self, kind: str, *, catalogue: Callable[[], Iterable[str]] | None = None):
        """`catalogue`: every name a user may give, also those whose module registers them on first use
        (the relaxations and selectors of nasc.catalog), so that an unknown name lists them all."""
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}
        self._catalogue = catalogue

    def register(self, name: str, *, doc: str | None = None, **defaults: Any) -> Callable[[T], T]:
        """Decorator: `@OPS.register("conv")`. Re-registering a name replaces it (plugins may override)."""

        def deco(value: T) -> T:
            text = doc if doc is not None else (getattr(value, "__doc__", None) or "").strip().splitlines()
            if isinstance(text, list):
                text = text[0] if text else ""
            self._entries[name] = Entry(name=name, value=value, doc=text, origin=getattr(value, "__module__", "?"),
                                        defaults=dict(defaults))
            return value

        return deco

    def add(self, name: str, value: T, *, doc: str = "", origin: str = "?", **defaults: Any) -> None:
        self._entries[name] = Entry(name=name, value=value, doc=doc, origin=origin, defaults=dict(defaults))

    def alias(self, alias: str, name: str) -> None:
        self._aliases[alias] = name

    def canonical(self, name: str) -> str:
        name = self._aliases.get(name, name)
        return name

    def get(self, name: str) -> T:
        return self.entry(name).value

    def entry(self, name: str) -> Entry[T]:
        key = self.canonical(name)
        if key not in self._entries:
            known = sorted(set(self._entries) | set(self._catalogue() if self._catalogue else ()))
            hint = did_you_mean(name, known + list(self._aliases))
            listing = ", ".join(known)
            raise RegistryError(f"unknown {self.kind} {name!r}; registered: {listing}", hint=hint)
        return self._entries[key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.canonical(name) in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry[T]]:
        for name in self.names():
            yield self._entries[name]
