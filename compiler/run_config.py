"""The JSON types of a run's config.json entries that commands read back.

`nasc search`/`train` write config.json; `--resume`, `select`, `train RUN`, `export RUN` and `viz RUN` read it
back. An edited value of another type (null for the space file, a string where `request` holds an object) was
used as it was and failed in Python, an internal error; `wrong_type` names it so the reader can say so.
Here, not in the runtime, because genotype sources (compiler) read a run's config too.
"""

from __future__ import annotations

from typing import Any

_NULL = type(None)
TYPES: dict[str, tuple[type, ...]] = {
    "kind": (str,), "space": (str,), "space_file": (str,), "fingerprint": (str,), "request": (dict,),
    "resolved_params": (dict,), "input": (list,), "plugins": (list,),
}
REQUEST_TYPES: dict[str, tuple[type, ...]] = {
    "params": (dict, _NULL), "overrides": (dict, _NULL), "relax": (str, _NULL), "relax_options": (dict, _NULL),
    "select": (str, _NULL), "select_options": (dict, _NULL),
}
_NAMES = {dict: "an object", list: "a list", str: "a string", _NULL: "null", bool: "true or false",
          int: "a number", float: "a number"}


def _name(kinds: tuple[type, ...]) -> str:
    return " or ".join(dict.fromkeys(_NAMES[k] for k in kinds))


def wrong_type(config: Any) -> str | None:
    """What is wrong with a parsed config.json's shape ('request is a string, not an object'), or None."""
    if not isinstance(config, dict):
        return f"it is {_name((type(config),))}, not an object"
    request = config.get("request")
    for where, values, types in (("", config, TYPES), ("request.", request if isinstance(request, dict) else {},
                                                        REQUEST_TYPES)):
        for key, kinds in types.items():
            if key in values and not isinstance(values[key], kinds):
                return f"{where}{key} is {_name((type(values[key]),))}, not {_name(kinds)}"
    return None
