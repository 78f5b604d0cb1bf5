"""Plugins: ops, relaxations, selectors, schedules and datasets from outside nasc.

A plugin is a Python module whose import registers entries into the same
registries the built-ins use: `OPS` (with the compiler's `PRIMITIVES` table),
`RELAXATIONS`, `SELECTORS`, `SCHEDULES` and `DATASETS`. nasc finds plugins in
two ways, and never through a `.nas` file (a space is data; it runs no code):

* entry points of an installed distribution, in one of the `GROUPS`:

      [project.entry-points."nasc.relaxations"]
      dirichlet = "nasc_dirichlet"            # a module whose import registers

  An entry point may also name an object (`"pkg.mod:Dirichlet"`); a relaxation
  or selector class, a dataset loader or a schedule that its import did not
  register is then registered under the entry point's name.
* explicit modules or files: `nasc --plugin my_ops.py search ...`, or
  `load_plugins(["my_ops.py", "pkg.module"])` from Python.

A plugin that fails to import becomes a `LoadedPlugin` whose `error` (a
`PluginError`, warning level) names it; whatever it registered before failing
is rolled back, so the built-ins keep working. Every entry a plugin registers
records the plugin as its `origin`, which `nasc ops`, `nasc relaxations` and
`nasc selectors` show.

A custom op needs both sides of nasc: a compile-time rule (channels, size,
parameters and multiply-adds, computed without torch) and a torch builder.
`register_op` does both in one decorator:

    @register_op("se", params={"reduction": 4}, n_params=se_params, doc="squeeze-and-excitation")
    def build_se(c_in, c_out, args, *, affine): ...

This module imports neither torch nor the runtime until a plugin is loaded.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs

from nasc.compiler.primitives import PRIMITIVES, Param, Primitive
from nasc.errors import NascError, RegistryError
from nasc.runtime.registry import call_problem

log = logging.getLogger(__name__)

GROUPS: tuple[str, ...] = ("nasc.ops", "nasc.relaxations", "nasc.selectors", "nasc.schedules", "nasc.datasets")
BUILTIN_ORIGIN = "nasc"

# registry variable -> (module that defines it, what its entries are called in listings)
_REGISTRIES: dict[str, tuple[str, str]] = {
    "OPS": ("nasc.runtime.ops", "op"),
    "RELAXATIONS": ("nasc.runtime.relaxations.base", "relaxation"),
    "SELECTORS": ("nasc.runtime.selectors", "selector"),
    "SCHEDULES": ("nasc.runtime.schedules", "schedule"),
    "DATASETS": ("nasc.runtime.data", "dataset"),
}

_PRIMITIVE_ORIGINS: dict[str, str] = {}  # primitive name -> plugin origin (absent: built in)
_BUILTIN_PRIMITIVES = frozenset(PRIMITIVES)  # before any plugin: registering one happens through this module
_LOADED: dict[tuple[str, ...], "LoadedPlugin"] = {}  # one record per plugin, so a second load is a no-op
_ENTRY_POINTS: list[metadata.EntryPoint] | None = None


class PluginError(NascError):
    """A plugin could not be loaded; reported as a warning, the built-ins keep working."""

    def render(self, source: str | None = None) -> str:
        return f"warning: {self.message}" + (f"\n  hint: {self.hint}" if self.hint else "")


class PluginCodeError(NascError):
    """A loaded plugin's own code raised an exception while nasc ran it (see `blame`)."""


@attrs.frozen(kw_only=True)
class LoadedPlugin:
    """What loading one plugin did."""

    name: str  # entry-point name, or the module / file as given
    origin: str  # what listings show as the origin of its entries, e.g. "nasc-dirichlet 0.1.0"
    source: str  # how it was found: "entry point nasc.relaxations", "file", "module"
    registered: tuple[str, ...] = ()  # "relaxation dirichlet", "primitive se", ...
    error: PluginError | None = None
    path: str | None = None  # the plugin's source file (a package: its __init__.py), to blame its errors on it

    @property
    def ok(self) -> bool:
        return self.error is None


# ---------------------------------------------------------------- loading


def load_plugins(explicit: Sequence[str | os.PathLike] | str | os.PathLike = (), *, entry_points: bool = True,
                 refresh: bool = False) -> list[LoadedPlugin]:
    """Import installed entry-point plugins (unless `entry_points=False`) and the `explicit` modules or files.

    `explicit` is a list of files or module names, or one of them. Returns one record per
    plugin, in load order. Loading is idempotent: a plugin already loaded in this process
    returns its earlier record. `refresh` re-reads the installed entry points (after a
    `pip install` in the same process).
    """
    explicit = _plugin_specs(explicit)
    records = []
    if entry_points:
        for ep in _discover(refresh):
            records.append(_load_entry_point(ep))
    for spec in explicit:
        records.append(_load_explicit(spec))
    return records


def _plugin_specs(explicit: Any) -> list[str]:
    """A list of plugin specs from one file / module name or a sequence of them."""
    if isinstance(explicit, (str, os.PathLike)):
        return [os.fspath(explicit)]
    if not isinstance(explicit, Iterable) or isinstance(explicit, (bytes, Mapping)):
        raise NascError(f"plugins must be a .py file or module name, or a list of them; got {explicit!r}",
                        hint='e.g. load_plugins("my_ops.py") or load_plugins(["my_ops.py", "pkg.module"])')
    specs = list(explicit)
    for spec in specs:
        if not isinstance(spec, (str, os.PathLike)):
            raise NascError(f"a plugin must be a .py file or module name (a str or Path); got {spec!r}",
                            hint='e.g. load_plugins(["my_ops.py", "pkg.module"])')
    return [os.fspath(spec) for spec in specs]


def loaded_plugins() -> list[LoadedPlugin]:
    """Every plugin this process has tried to load, in order."""
    return list(_LOADED.values())


def explicit_plugins() -> list[str]:
    """The `--plugin` files (as absolute paths) and modules loaded without error, for a run to record.

    Installed (entry-point) plugins are left out: they load by themselves in every process.
    """
    return [key[1] for key, record in _LOADED.items() if key[0] in ("file", "module") and record.ok]


def resuming_with(recorded: Sequence[str], prepare: Callable[[], Any]) -> Any:
    """Load the plugins a run recorded (`explicit_plugins`), then `prepare()` what reuses the run: a resumed
    search or training, a selector run again on it (`nasc select`), a training of its genotype (`nasc train RUN`).

    A plugin that no longer loads is not an error by itself (`--plugin` may have
    loaded it from its new place); it is named when `prepare` then fails.
    """
    failed = [r for r in load_plugins(recorded, entry_points=False) if not r.ok]
    try:
        return prepare()
    except NascError as e:
        if not failed:
            raise
        # a plugin loaded now from its new place (--plugin) under the same file name is not the missing one
        here = {Path(p).name for p in explicit_plugins()}
        missing = [r for r in failed if Path(r.name).name not in here] or failed
        names = ", ".join(r.name for r in missing)
        raise type(e)(f"{e.message}; the run was started with plugin{'s' if len(missing) > 1 else ''} {names}, "
                      f"which did not load ({missing[0].error.message})",
                      span=e.span, hint="put the plugin back where it was, or load it from its new place with "
                                                 "--plugin FILE.py") from e


def _discover(refresh: bool) -> list[metadata.EntryPoint]:
    global _ENTRY_POINTS
    if _ENTRY_POINTS is None or refresh:
        found: dict[tuple[str, str, str], metadata.EntryPoint] = {}
        try:
            eps = metadata.entry_points()
            for group in GROUPS:
                for ep in eps.select(group=group):
                    found.setdefault((ep.group, ep.name, ep.value), ep)  # one distribution may be on sys.path twice
        except Exception as e:  # noqa: BLE001 - a broken distribution must not stop nasc
            log.warning("cannot read installed entry points: %s", e)
        _ENTRY_POINTS = list(found.values())
    return list(_ENTRY_POINTS)


def _load_entry_point(ep: metadata.EntryPoint) -> LoadedPlugin:
    key = ("entry point", ep.group, ep.name, ep.value)
    if key in _LOADED:
        return _LOADED[key]
    dist = getattr(ep, "dist", None)
    origin = f"{dist.name} {dist.version}" if dist is not None else ep.value.split(":")[0]
    record = _run(name=ep.name, origin=origin, source=f"entry point {ep.group}",
                  load=ep.load, group=ep.group, register_as=ep.name if ":" in ep.value else None)
    _LOADED[key] = record
    return record


def _load_explicit(spec: str) -> LoadedPlugin:
    spec = str(spec)
    if spec.endswith(".py") or "/" in spec or "\\" in spec:
        path = Path(spec).expanduser()
        key = ("file", str(path.resolve()))
        if key in _LOADED:
            return _LOADED[key]
        if not path.is_file():
            record = LoadedPlugin(name=spec, origin=spec, source="file", error=PluginError(
                f"plugin {spec!r} failed to load: no such file", hint="--plugin takes a .py file or a module name"))
        else:
            record = _run(name=spec, origin=spec, source="file", load=lambda: _import_file(path))
    else:
        module, _, attr = spec.partition(":")
        key = ("module", spec)
        if key in _LOADED:
            return _LOADED[key]

        def load() -> Any:
            mod = importlib.import_module(module)
            return getattr(mod, attr) if attr else mod

        record = _run(name=spec, origin=module, source="module", load=load)
    _LOADED[key] = record
    return record


def _import_file(path: Path) -> Any:
    """Import a .py file as a module of its own (registered in sys.modules, so pickling and dataclasses work)."""
    resolved = path.resolve()
    stem = re.sub(r"\W", "_", resolved.stem)
    name = f"nasc_plugin_{stem}_{hashlib.sha1(str(resolved).encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _run(*, name: str, origin: str, source: str, load: Callable[[], Any], group: str | None = None,
         register_as: str | None = None) -> LoadedPlugin:
    """Import one plugin with a registry snapshot around it: origins on success, a rollback on failure."""
    before = _snapshot()
    try:
        obj = load()
        if register_as is not None and group is not None:
            _register_object(group, register_as, obj)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - a plugin may fail any way (a script's sys.exit too)
        _restore(before)
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        fix = f"fix or uninstall {origin}" if source.startswith("entry point") else "fix it"
        hint = f"nasc's built-ins still work; {fix} (NASC_DEBUG=1 shows the traceback)"
        if isinstance(e, NascError):  # nasc refused what the plugin registered: its own words say why
            detail = e.message
            hint = f"{e.hint}; {hint}" if e.hint else hint
        error = PluginError(f"plugin {name!r} ({source}) failed to load: {detail}", hint=hint)
        error.__cause__ = e
        log.debug("%s", error.message)
        return LoadedPlugin(name=name, origin=origin, source=source, error=error)
    clash = _preset_clash(before)
    if clash is not None:
        _restore(before)
        error = PluginError(f"plugin {name!r} ({source}) {clash}",
                            hint="pick another name; nasc's built-ins still work")
        return LoadedPlugin(name=name, origin=origin, source=source, error=error)
    registered = _claim(before, origin)
    orphans = [n for n in _registries()["OPS"].names() if n not in PRIMITIVES]
    if orphans:
        _restore(before)
        error = PluginError(f"plugin {name!r} ({source}) registers op builder {orphans[0]!r} without a primitive, "
                            "so no .nas file could use it",
                            hint="register both sides with nasc.plugins.register_op(...)")
        return LoadedPlugin(name=name, origin=origin, source=source, error=error)
    if not registered:
        log.info("plugin %s registered nothing", name)
    return LoadedPlugin(name=name, origin=origin, source=source, registered=tuple(registered),
                        path=_source_file(obj))


def _source_file(obj: Any) -> str | None:
    """The file a loaded plugin (a module, or an object an entry point names) was defined in."""
    module = obj if isinstance(obj, type(sys)) else sys.modules.get(getattr(obj, "__module__", None) or "")
    path = getattr(module, "__file__", None)
    return str(Path(path).resolve()) if path else None


def blame(error: BaseException) -> PluginCodeError | None:
    """A `PluginCodeError` when `error` was raised in a loaded plugin's own code (its traceback passes
    through the plugin's file; a package's: any file of the package), else None.

    The CLI calls this before calling an unexpected exception a bug in nasc.
    """
    plugins = [r for r in _LOADED.values() if r.ok and r.path]
    if not plugins:
        return None
    for frame in reversed(traceback.extract_tb(error.__traceback__)):  # the innermost plugin frame
        try:
            file = Path(frame.filename).resolve()
        except (OSError, ValueError):
            continue
        for record in plugins:
            own = Path(record.path)
            if file == own or (own.name == "__init__.py" and own.parent in file.parents):
                detail = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                return PluginCodeError(
                    f"plugin {record.name!r} raised {detail} (in {frame.name}, {frame.filename}:{frame.lineno})",
                    hint=f"the plugin's own code failed, not nasc; fix {record.origin} "
                         "(NASC_DEBUG=1 shows the traceback)")
    return None


def _register_object(group: str, name: str, obj: Any) -> None:
    """An entry point naming an object: register it under the entry point's name unless its import did."""
    registries = _registries()
    if group == "nasc.ops":
        if name not in PRIMITIVES:
            raise PluginError(f"entry point {name!r} names an object, but no primitive {name!r} was registered",
                              hint="decorate the builder with nasc.plugins.register_op(...)")
        return
    if group == "nasc.schedules":
        if name not in registries["SCHEDULES"]:
            register_schedule(name, obj)
        return
    kind = {"nasc.relaxations": "RELAXATIONS", "nasc.selectors": "SELECTORS", "nasc.datasets": "DATASETS"}[group]
    registry = registries[kind]
    if name in registry and registry.get(name) is obj:
        return
    if not callable(obj):
        raise PluginError(f"entry point {name!r} names {obj!r}, which nasc cannot register as a {kind.lower()[:-1]}")
    registry.add(name, obj, doc=_first_line(obj), origin=getattr(obj, "__module__", "?"))


def _first_line(obj: Any) -> str:
    lines = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    return lines[0] if lines else ""


# ---------------------------------------------------------------- snapshots and origins


def _registries() -> dict[str, Any]:
    """The runtime registries by variable name, every built-in registered (imports the runtime, hence torch).

    Built-in relaxations and selectors register when first used; importing them all here
    first means an entry that appears while a plugin loads is the plugin's, never a late built-in.
    """
    from nasc import catalog

    for module in {*catalog.BUILTIN_RELAXATIONS.values(), *catalog.BUILTIN_SELECTORS.values()}:
        try:
            importlib.import_module(module)
        except ImportError:  # reported by `nasc relaxations`; not a plugin's problem
            pass
    return {var: getattr(importlib.import_module(mod), var) for var, (mod, _) in _REGISTRIES.items()}


def _snapshot() -> dict[str, Any]:
    from nasc import catalog
    from nasc.compiler import settings

    # Registry keeps its entries in `_entries`/`_aliases`; a snapshot is the only place that reaches in
    regs = {var: (dict(r._entries), dict(r._aliases)) for var, r in _registries().items()}
    return {"registries": regs, "primitives": dict(PRIMITIVES), "origins": dict(_PRIMITIVE_ORIGINS),
            "presets": dict(catalog.PRESETS), "names": {g: set(n) for g, n in catalog.PLUGIN_NAMES.items()},
            "settings": (dict(settings.SEARCH_SETTINGS), dict(settings.TRAIN_SETTINGS))}


def _restore(snap: Mapping[str, Any]) -> None:
    from nasc import catalog
    from nasc.compiler import settings

    for var, r in _registries().items():
        entries, aliases = snap["registries"][var]
        r._entries.clear()
        r._entries.update(entries)
        r._aliases.clear()
        r._aliases.update(aliases)
    for target, saved in ((PRIMITIVES, snap["primitives"]), (_PRIMITIVE_ORIGINS, snap["origins"]),
                          (catalog.PRESETS, snap["presets"]), (settings.SEARCH_SETTINGS, snap["settings"][0]),
                          (settings.TRAIN_SETTINGS, snap["settings"][1])):
        target.clear()
        target.update(saved)
    for group, names in snap["names"].items():
        catalog.PLUGIN_NAMES[group] = set(names)


def _claim(before: Mapping[str, Any], origin: str) -> list[str]:
    """Mark every entry added or replaced since `before` as coming from `origin`; returns what changed."""
    from nasc import catalog

    changed: list[str] = []
    for name, prim in PRIMITIVES.items():
        if before["primitives"].get(name) is not prim:
            _PRIMITIVE_ORIGINS[name] = origin
            changed.append(f"primitive {name}")
    for var, registry in _registries().items():
        old, _ = before["registries"][var]
        kind = _REGISTRIES[var][1]
        for name, entry in list(registry._entries.items()):
            if old.get(name) is entry:
                continue
            registry._entries[name] = attrs.evolve(entry, origin=origin)
            if var != "OPS":  # ops are listed as their primitives
                changed.append(f"{kind} {name}")
            if var == "RELAXATIONS":
                catalog.PLUGIN_NAMES["nasc.relaxations"].add(name)
                for preset in getattr(entry.value, "presets", None) or {}:
                    if preset != name and preset not in catalog.PRESETS:
                        catalog.PRESETS[preset] = name  # `--relax PRESET` resolves to this relaxation
            elif var == "SELECTORS":
                catalog.PLUGIN_NAMES["nasc.selectors"].add(name)
            elif var == "SCHEDULES":
                _allow_schedule(name)
    return changed


def _preset_clash(before: Mapping[str, Any]) -> str | None:
    """Why a relaxation registered since `before` would silently lose or take over a name, or None.

    `--relax NAME` looks a name up in the presets first (`relaxation_class`), so a relaxation named like
    another relaxation's preset (`gdas`) is never reached, a preset named like a relaxation (`softmax`)
    takes over every space and option that names it, and a preset another relaxation already has is
    dropped; the registry's own duplicate check sees none of these (presets are not registry entries).
    """
    from nasc import catalog

    registry = _registries()["RELAXATIONS"]
    old, _ = before["registries"]["RELAXATIONS"]
    for name, entry in registry._entries.items():
        if old.get(name) is entry:
            continue
        target = catalog.PRESETS.get(name, name)
        if target != name:
            return (f"registers relaxation {name!r}, but {name!r} is a preset of relaxation {target!r}, "
                    f"so --relax {name} would still mean {target!r}")
        for preset in getattr(entry.value, "presets", None) or {}:
            if preset == name:
                continue
            taken = catalog.PRESETS.get(preset)
            if taken is not None and taken != name:
                return (f"gives relaxation {name!r} a preset {preset!r}, which is already a preset of "
                        f"relaxation {taken!r}")
            if preset in registry._entries or preset in catalog.BUILTIN_RELAXATIONS:
                return (f"gives relaxation {name!r} a preset {preset!r}, which is the name of a relaxation, "
                        f"so --relax {preset} would silently mean {name!r}")
    return None


def origin_of(kind: str, name: str) -> str:
    """Where an entry came from: "nasc" for built-ins, else the plugin. `kind` is "primitive" or a registry's."""
    if kind == "primitive":
        return _PRIMITIVE_ORIGINS.get(name, BUILTIN_ORIGIN)
    var = {k: var for var, (_, k) in _REGISTRIES.items()}[kind]
    registry = _registries()[var]
    return _short_origin(registry.entry(name).origin)


def _short_origin(origin: str) -> str:
    return BUILTIN_ORIGIN if origin == "nasc" or origin.startswith("nasc.") else origin


# ---------------------------------------------------------------- registration API for plugin authors


ParamSpec = Mapping[str, Any] | Iterable[Param]


def _params(spec: ParamSpec | None) -> tuple[Param, ...]:
    """`{"reduction": 4, "k": int}`: a value is the default (its type the kind); a type means required."""
    if spec is None:
        return ()
    if isinstance(spec, Mapping):
        out = []
        for name, value in spec.items():
            if isinstance(value, Param):
                out.append(value)
            elif value in (int, float, bool):
                out.append(Param(name=name, kind=value, required=True))
            elif isinstance(value, (bool, int, float)):
                out.append(Param(name=name, kind=type(value), default=value))
            else:
                raise NascError(f"primitive parameter {name!r}: give a default (int, float or bool) or a type, "
                                f"got {value!r}")
        return tuple(out)
    if not isinstance(spec, Iterable) or isinstance(spec, str) or not all(isinstance(p, Param) for p in spec):
        raise NascError(f"primitive parameters must be a dict of NAME: default (or type), got {spec!r}",
                        hint='e.g. params={"reduction": 4, "k": int}')
    return tuple(spec)


# how the compiler calls each rule of a Primitive
_RULE_ARGS = {"channels": "(c_in, c, args)", "spatial": "(h, args)", "n_params": "(c_in, c_out, args, affine)",
              "madds": "(c_in, c_out, h_out, args)", "stride": "(args)"}
_RULE_ARITY = {key: text.count(",") + 1 for key, text in _RULE_ARGS.items()}


def register_primitive(name: str, *, params: ParamSpec | None = None,
                       channels: Callable[[int, int, dict], int] | None = None,
                       spatial: Callable[[int, dict], int | None] | None = None,
                       n_params: Callable[[int, int, dict, bool], int] | None = None,
                       madds: Callable[[int, int, int | None, dict], int] | None = None,
                       stride: Callable[[dict], int] | None = None, doc: str = "",
                       replace: bool = False) -> Primitive:
    """Add a primitive to the compiler's table, so `.nas` op bodies may call it (no torch needed).

    The rules mirror `nasc.compiler.primitives.Primitive`: `channels(c_in, c, args)`
    (default: keeps `c_in`), `spatial(h, args)` (default: keeps `h`),
    `n_params(c_in, c_out, args, affine)` and `madds(c_in, c_out, h_out, args)`
    (default 0). `args` holds every parameter, defaults filled in. The name of a
    built-in or of another plugin's primitive is refused unless `replace=True`.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise NascError(f"primitive name {name!r} is not a valid .nas name")
    if name in PRIMITIVES and not replace:
        owner = _PRIMITIVE_ORIGINS.get(name)
        if owner is not None or name in _BUILTIN_PRIMITIVES:
            who = "a built-in of nasc" if owner is None else f"already registered by plugin {owner}"
            raise RegistryError(f"primitive {name!r} is {who}; {_caller()} registers another one under the same "
                                "name",
                                hint="pick another name, or pass replace=True to replace it on purpose (every "
                                     "space that uses the name then gets yours)")
    fields: dict[str, Any] = {"name": name, "doc": doc, "params": _params(params)}
    for key, rule in (("channels", channels), ("spatial", spatial), ("n_params", n_params), ("madds", madds),
                      ("stride", stride)):
        if rule is not None:
            problem = call_problem(rule, *[None] * _RULE_ARITY[key])
            if problem is not None:  # else a compile would stop with a TypeError blamed on nasc
                raise RegistryError(f"{_caller()} registers primitive {name!r} with a {key} rule: {problem}",
                                    hint=f"the {key} rule takes {_RULE_ARGS[key]} (nasc.compiler.primitives.Primitive)")
            fields[key] = rule
    prim = Primitive(**fields)
    PRIMITIVES[name] = prim
    return prim


def register_op(name: str, *, params: ParamSpec | None = None, doc: str | None = None, replace: bool = False,
                **rules: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a primitive's compile-time rules and its torch builder in one go.

    The builder has the built-ins' signature `(c_in, c_out, args, *, affine) -> nn.Module`;
    the rules are `register_primitive`'s keyword arguments. Its parameter count must
    equal `n_params` (a test of yours should check it, as nasc's own do). A built-in's
    name (`conv`) is refused unless `replace=True`.
    """
    unknown = sorted(set(rules) - set(_RULE_ARGS))
    if unknown:  # else a raw TypeError from register_primitive
        raise RegistryError(f"register_op({name!r}) has no rule {unknown[0]!r}",
                            hint=f"the rules are {', '.join(_RULE_ARGS)} (nasc.compiler.primitives.Primitive)")

    def deco(builder: Callable[..., Any]) -> Callable[..., Any]:
        from nasc.runtime.ops import OPS

        if not callable(builder):
            raise RegistryError(f"register_op({name!r}) decorates {builder!r}, which is not a builder function",
                                hint="decorate a function (c_in, c_out, args, *, affine) -> nn.Module")
        text = doc if doc is not None else _first_line(builder)
        before = PRIMITIVES.get(name)
        register_primitive(name, params=params, doc=text, replace=replace, **rules)
        try:
            OPS.register(name, doc=text, replace=replace)(builder)
        except NascError:  # both sides or neither
            if before is None:
                PRIMITIVES.pop(name, None)
            else:
                PRIMITIVES[name] = before
            raise
        return builder

    return deco


def _caller() -> str:
    """The plugin file (or module) whose code is registering: the first frame outside this module."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
    if frame is None:
        return "a plugin"
    return frame.f_globals.get("__file__") or frame.f_globals.get("__name__") or "a plugin"


def unregister_primitive(name: str) -> None:
    """Remove a plugin primitive from both sides (for tests and notebooks that redefine one)."""
    PRIMITIVES.pop(name, None)
    _PRIMITIVE_ORIGINS.pop(name, None)
    ops = sys.modules.get("nasc.runtime.ops")
    if ops is not None:
        ops.OPS._entries.pop(name, None)


def _allow_schedule(name: str) -> None:
    """Let `.nas` files name the schedule: `lr_schedule = NAME(...)` in search and train blocks."""
    from nasc.compiler import settings

    for table in (settings.SEARCH_SETTINGS, settings.TRAIN_SETTINGS):
        types, calls, meaning = table["lr_schedule"]
        if calls is not None and name not in calls:
            table["lr_schedule"] = (types, calls + (name,), meaning)


def register_schedule(name: str, fn: Callable[..., float] | None = None, *, doc: str | None = None,
                      replace: bool = False) -> Any:
    """Register a learning-rate schedule `(epoch, epochs, lr, lr_min, *, exponent, warmup) -> lr`.

    Usable as `register_schedule("warm", fn)` or as a decorator `@register_schedule("warm")`.
    The schedule is then valid in `--opt schedule=NAME` and in `.nas` (`lr_schedule = NAME(min = 0)`).
    A built-in's name (`cosine`) is refused unless `replace=True`.
    """

    def deco(f: Callable[..., float]) -> Callable[..., float]:
        from nasc.runtime.schedules import SCHEDULES

        SCHEDULES.add(name, f, doc=doc if doc is not None else _first_line(f), origin=getattr(f, "__module__", "?"),
                      replace=replace)
        _allow_schedule(name)
        return f

    return deco(fn) if fn is not None else deco


# ---------------------------------------------------------------- listings (`nasc relaxations`, `nasc selectors`)


def relaxation_rows() -> list[dict[str, Any]]:
    """Every relaxation nasc knows (built-in, plugin, or an entry point that did not load), with presets."""
    from nasc import catalog
    from nasc.runtime.relaxations.base import RELAXATIONS, relaxation_class

    names = set(catalog.BUILTIN_RELAXATIONS) | set(RELAXATIONS.names()) | _unloaded("nasc.relaxations")
    rows = []
    for name in sorted(names):
        if name not in RELAXATIONS and name not in catalog.BUILTIN_RELAXATIONS:
            rows.append({"name": name, "error": "its plugin did not load",
                         "origin": _entry_origin("nasc.relaxations", name)})
            continue
        try:
            cls = relaxation_class(name)
        except NascError as e:
            rows.append({"name": name, "error": e.message, "origin": _entry_origin("nasc.relaxations", name)})
            continue
        entry = RELAXATIONS.entry(name)
        own = getattr(cls, "presets", None) or {}
        # a preset named like its relaxation (rome, parsec) is listed too: `--relax rome` applies its settings
        presets = {p: tuple(dict(x) for x in own.get(p, ({}, {})))
                   for p, target in sorted(catalog.PRESETS.items()) if target == name}
        rows.append({"name": name, "doc": entry.doc, "defaults": dict(getattr(cls, "defaults", None) or {}),
                     "presets": presets,
                     "origin": _short_origin(entry.origin)})
    return rows


def selector_rows() -> list[dict[str, Any]]:
    """Every selector nasc knows, with its options and their defaults."""
    from nasc import catalog
    from nasc.runtime.selectors import SELECTORS

    rows = []
    for name in sorted(set(catalog.BUILTIN_SELECTORS) | set(SELECTORS.names()) | _unloaded("nasc.selectors")):
        if name not in SELECTORS and name in catalog.BUILTIN_SELECTORS:
            try:
                importlib.import_module(catalog.BUILTIN_SELECTORS[name])
            except ImportError as e:
                rows.append({"name": name, "error": f"not available in this build ({e})", "origin": BUILTIN_ORIGIN})
                continue
        if name not in SELECTORS:
            rows.append({"name": name, "error": "its plugin did not load",
                         "origin": _entry_origin("nasc.selectors", name)})
            continue
        entry = SELECTORS.entry(name)
        rows.append({"name": name, "doc": entry.doc, "defaults": dict(getattr(entry.value, "defaults", {}) or {}),
                     "origin": _short_origin(entry.origin)})
    return rows


def _unloaded(group: str) -> set[str]:
    """Entry-point names of `group` whose plugin failed (or was never loaded in this process)."""
    out = set()
    for ep in _discover(False):
        record = _LOADED.get(("entry point", ep.group, ep.name, ep.value))
        if ep.group == group and (record is None or not record.ok):
            out.add(ep.name)
    return out


def _entry_origin(group: str, name: str) -> str:
    for ep in _discover(False):
        if ep.group == group and ep.name == name:
            dist = getattr(ep, "dist", None)
            return f"{dist.name} {dist.version}" if dist is not None else ep.value
    return BUILTIN_ORIGIN
