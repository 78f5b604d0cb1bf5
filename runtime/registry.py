"""A generic name → entry registry shared by ops, relaxations, selectors and datasets.

One class for every extension point so that plugins register exactly the way
built-ins do, and every lookup of an unknown name ends in the same friendly
error that lists the registered names and suggests the closest.
"""

from __future__ import annotations

import inspect
import sys
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

    def __init__(self, kind: str, *, catalogue: Callable[[], Iterable[str]] | None = None,
                 accepts: tuple[Callable[[Any], bool], str] | None = None,
                 calls: Callable[[Any], str | None] | None = None):
        """`catalogue`: every name a user may give, also those whose module registers them on first use
        (the relaxations and selectors of nasc.catalog), so that an unknown name lists them all.
        `accepts`: (test, what it must be) for a value, checked when it is registered, so that a plugin
        registering the wrong kind of thing is refused at once, not when a search first uses it.
        `calls`: why nasc could not call a value the way it will (wrong parameters), or None; checked
        with `accepts`, so a builder or hook with the wrong signature fails the plugin's load, naming it,
        instead of a search failing later with a TypeError that looks like a bug in nasc."""
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}
        self._catalogue = catalogue
        self._accepts = accepts
        self._calls = calls

    def register(self, name: str, *, doc: str | None = None, replace: bool = False,
                 **defaults: Any) -> Callable[[T], T]:
        """Decorator: `@OPS.register("conv")`.

        A name another module registered (a built-in, another plugin) is refused unless
        `replace=True`; the same module registering it again (a notebook cell run twice) replaces it.
        """

        def deco(value: T) -> T:
            text = doc if doc is not None else (getattr(value, "__doc__", None) or "").strip().splitlines()
            if isinstance(text, list):
                text = text[0] if text else ""
            self.add(name, value, doc=text, origin=getattr(value, "__module__", "?"), replace=replace, **defaults)
            return value

        return deco

    def add(self, name: str, value: T, *, doc: str = "", origin: str = "?", replace: bool = False,
            **defaults: Any) -> None:
        """Register `value` under `name` (see `register` for when an existing name may be replaced)."""
        self._check(name, value, origin, replace)
        self._entries[name] = Entry(name=name, value=value, doc=doc, origin=origin, defaults=dict(defaults))

    def _check(self, name: str, value: Any, origin: str, replace: bool) -> None:
        if self._accepts is not None and not self._accepts[0](value):
            raise RegistryError(f"{origin_text(origin)} registers {value!r} as {self.kind} {name!r}, but a {self.kind} "
                                f"must be {self._accepts[1]}", hint=f"register {self._accepts[1]} under that name")
        old = self._entries.get(name)
        if not (old is None or replace or old.value is value or old.origin == origin):
            owner = ("a built-in of nasc" if is_builtin(old.origin)
                     else f"already registered by {origin_text(old.origin)}")
            raise RegistryError(f"{self.kind} {name!r} is {owner}; {origin_text(origin)} registers another one under "
                                "the same name",
                                hint="pick another name, or pass replace=True to replace it on purpose (every space, "
                                     "preset and option that names it then gets yours)")
        problem = self._calls(value) if self._calls is not None else None
        if problem is not None:
            what = f"a {self.kind} must be {self._accepts[1]}" if self._accepts is not None else "fix its parameters"
            raise RegistryError(f"{origin_text(origin)} registers {self.kind} {name!r}, but {problem}", hint=what)

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


def call_problem(fn: Any, *args: Any, **kwargs: Any) -> str | None:
    """Why `fn(*args, **kwargs)` (how nasc will call it) cannot bind its parameters, or None.

    A callable whose signature cannot be read (a C function) is taken as it is.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    try:
        sig.bind(*args, **kwargs)
    except TypeError as e:
        return f"{getattr(fn, '__qualname__', repr(fn))}{_plain(sig)} cannot be called the way nasc calls it ({e})"
    return None


def _plain(sig: inspect.Signature) -> inspect.Signature:
    """A signature without annotations, short enough for an error message."""
    return sig.replace(parameters=[p.replace(annotation=p.empty) for p in sig.parameters.values()],
                       return_annotation=sig.empty)


def hook_problem(cls: type, base: type) -> str | None:
    """The first method of `base` that `cls` overrides with parameters nasc's calls cannot bind, or None.

    nasc calls a hook with every parameter of the base method (`set_progress(epoch, epochs, step)`),
    so the override must take them all; `**context` of the base is not checked.
    """
    for name, base_fn in vars(base).items():
        if not inspect.isfunction(base_fn) or (name.startswith("_") and name != "__init__"):
            continue
        own = inspect.getattr_static(cls, name, None)
        if own is base_fn or not inspect.isfunction(own):  # inherited, or a staticmethod/property: not checked
            continue
        args, kwargs = [], {}
        for p in inspect.signature(base_fn).parameters.values():
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                args.append(None)
            elif p.kind is p.KEYWORD_ONLY:
                kwargs[p.name] = None
        problem = call_problem(own, *args, **kwargs)
        if problem is not None:
            return f"{problem}; nasc calls it as {name}{_plain(inspect.signature(base_fn))}"
    return None


def is_builtin(origin: str) -> bool:
    return origin == "nasc" or origin.startswith("nasc.")


def origin_text(origin: str) -> str:
    """A module name as a user knows it: a plugin file's path (plugin files import as nasc_plugin_*).

    An unknown origin ("?": `add` without one) is the file of the code calling the registry.
    """
    if is_builtin(origin):
        return "nasc"
    if origin == "?":
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__") in (__name__, "nasc.plugins"):
            frame = frame.f_back
        return frame.f_globals.get("__file__") or frame.f_globals.get("__name__", "?") if frame else "?"
    return getattr(sys.modules.get(origin), "__file__", None) or origin
