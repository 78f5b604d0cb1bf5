"""Names of the built-in relaxations and selectors, known without importing torch.

`nasc compile` checks a space's `relax`/`select` names against this catalogue
(plus installed plugins' entry-point names) so that it stays instant; the
runtime imports an implementation only when a search needs it.
"""

from __future__ import annotations

from importlib import metadata

# name -> module that registers it
BUILTIN_RELAXATIONS: dict[str, str] = {
    "softmax": "nasc.runtime.relaxations.softmax",
}

# method name -> (relaxation, default options): what `--relax darts` means
PRESETS: dict[str, tuple[str, dict]] = {
    "darts": ("softmax", {}),
}

BUILTIN_SELECTORS: dict[str, str] = {
    "magnitude": "nasc.runtime.selectors",
}


def _entry_point_names(group: str) -> set[str]:
    try:
        return {ep.name for ep in metadata.entry_points(group=group)}
    except Exception:  # a broken distribution must not stop nasc from listing its own names
        return set()


def relaxation_names() -> frozenset[str]:
    return frozenset(BUILTIN_RELAXATIONS) | frozenset(PRESETS) | _entry_point_names("nasc.relaxations")


def selector_names() -> frozenset[str]:
    return frozenset(BUILTIN_SELECTORS) | _entry_point_names("nasc.selectors")
