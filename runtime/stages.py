"""The `stages` search setting of a progressive search (P-DARTS; runtime/progressive.py runs it).

Apart from runtime/progressive.py (which needs torch) so that `nasc check` and `nasc compile` check a
space's stages at the `stages` line, as they check its other search settings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from nasc.errors import SearchError, did_you_mean
from nasc.runtime.config import SearchConfig

STAGE_OPTIONS = ("keep", "skip_dropout")


@attrs.frozen(kw_only=True)
class Stage:
    index: int
    params: dict[str, Any]  # space parameters for this stage (layers, C, ...)
    keep: int | None  # ops kept per edge from the previous stage (None: all)
    skip_dropout: float  # the stage's rate r of Dropout after skip_connect


def parse_stages(config: SearchConfig, param_names: Iterable[str]) -> list[Stage]:
    """The `stages` setting, checked: options keep/skip_dropout, everything else a space parameter."""
    names = list(param_names)
    stages = []
    for i, spec in enumerate(config.stages):
        where = f"stages[{i}]"
        for key in spec:
            if key not in STAGE_OPTIONS and key not in names:
                known = list(STAGE_OPTIONS) + names
                raise SearchError(f"{where}: stage() has no option {key!r}",
                                  hint=did_you_mean(key, known) or f"options: {', '.join(known)}")
        keep = spec.get("keep")
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 2):
            raise SearchError(f"{where}: keep must be an integer ≥ 2 (ops kept per edge), got {keep!r}")
        rate = spec.get("skip_dropout", 0.0)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise SearchError(f"{where}: skip_dropout must be a number in [0, 1), got {rate!r}")
        params = {k: v for k, v in spec.items() if k not in STAGE_OPTIONS}
        stages.append(Stage(index=i, params=params, keep=keep, skip_dropout=float(rate)))
    if config.skip_limit is not None and config.skip_limit < 0:
        raise SearchError(f"skip_limit must be ≥ 0, got {config.skip_limit}")
    return stages
