"""Names of the built-in relaxations and selectors, known without importing torch.

`nasc compile` checks a space's `relax`/`select` names against this catalogue
(plus installed plugins' entry-point names) so that it stays instant; the
runtime imports an implementation only when a search needs it.
"""

from __future__ import annotations

import sys
from importlib import metadata

# name -> module that registers it
BUILTIN_RELAXATIONS: dict[str, str] = {
    "softmax": "nasc.runtime.relaxations.softmax",
    "gumbel": "nasc.runtime.relaxations.gumbel",
    "binary-gate": "nasc.runtime.relaxations.binary_gate",
    "partial-channel": "nasc.runtime.relaxations.partial_channel",
    "merged-kernel": "nasc.runtime.relaxations.merged_kernel",
    "dropout-group": "nasc.runtime.relaxations.dropout_group",
    "rome": "nasc.runtime.relaxations.rome",
    "parsec": "nasc.runtime.relaxations.parsec",
}

# method name -> the relaxation it is a preset of; the relaxation class holds the preset's
# options and search settings (`Relaxation.presets`), so `--relax gdas` means GDAS' defaults
PRESETS: dict[str, str] = {
    "darts": "softmax",
    "gdas": "gumbel",
    "snas": "gumbel",
    "proxylessnas": "binary-gate",
    "pcdarts": "partial-channel",
    "mergenas": "merged-kernel",
    "dropnas": "dropout-group",
    "sharpdarts": "softmax",
    "rome": "rome",
    "parsec": "parsec",
}

BUILTIN_SELECTORS: dict[str, str] = {
    "magnitude": "nasc.runtime.selectors",
    "perturbation": "nasc.runtime.perturbation",
}


def _entry_point_names(group: str) -> set[str]:
    try:
        return {ep.name for ep in metadata.entry_points(group=group)}
    except Exception:  # a broken distribution must not stop nasc from listing its own names
        return set()


# names registered by plugins loaded in this process (`nasc.plugins`), by entry-point group
PLUGIN_NAMES: dict[str, set[str]] = {"nasc.relaxations": set(), "nasc.selectors": set()}


def _registered(module: str, var: str) -> frozenset[str]:
    """Names in a runtime registry that is already imported, never importing it (it needs torch).

    A relaxation or selector registered straight from Python (`@RELAXATIONS.register` in a notebook,
    not through `load_plugins`) is in no list above, yet a search runs it: a space may name it too.
    """
    registry = getattr(sys.modules.get(module), var, None)
    return frozenset(registry.names()) if registry is not None else frozenset()


def relaxation_names() -> frozenset[str]:
    return (frozenset(BUILTIN_RELAXATIONS) | frozenset(PRESETS) | _entry_point_names("nasc.relaxations")
            | frozenset(PLUGIN_NAMES["nasc.relaxations"])
            | _registered("nasc.runtime.relaxations.base", "RELAXATIONS"))


def selector_names() -> frozenset[str]:
    return (frozenset(BUILTIN_SELECTORS) | _entry_point_names("nasc.selectors")
            | frozenset(PLUGIN_NAMES["nasc.selectors"]) | _registered("nasc.runtime.selectors", "SELECTORS"))
