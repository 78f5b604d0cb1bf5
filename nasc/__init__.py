"""nasc: a compiler for differentiable neural-architecture-search spaces.

The Python API (docs/api.md) is importable from here: `nasc.compile_space`,
`nasc.search`, `nasc.train`, ... Each name is imported on first use, so
`import nasc` stays fast and does not import torch.
"""

__version__ = "0.1.0"

# public name -> module that defines it (see nasc/api.py)
_API = {
    "compile_space": "nasc.api",
    "build_supernet": "nasc.api",
    "search": "nasc.api",
    "resume": "nasc.api",
    "select": "nasc.api",
    "load_genotype": "nasc.api",
    "build_network": "nasc.api",
    "train": "nasc.api",
    "TrainResult": "nasc.api",
    "viz": "nasc.api",
    "export": "nasc.api",
    "load_plugins": "nasc.api",
    "register_op": "nasc.plugins",
    "register_primitive": "nasc.plugins",
    "register_schedule": "nasc.plugins",
    "NascError": "nasc.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'nasc' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
