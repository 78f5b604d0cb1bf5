"""nasc: a compiler for differentiable neural-architecture-search spaces."""

__version__ = "0.1.0"
