"""One error hierarchy for every stage, each error able to point at source.

Users see these errors, never tracebacks: the CLI catches `NascError` and
prints `render()`. Compile-time errors carry a `SourceSpan` so the message can
show the offending line with a caret, the way a compiler does.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

import attrs


@attrs.frozen(kw_only=True)
class SourceSpan:
    """A region of a source file; lines and columns are 1-based."""

    file: str
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class NascError(Exception):
    """Base of every error nasc reports to a user."""

    #: set where every rank of a distributed run raises this error alike (it read the same files, or was told
    #: by rank 0): the command line then prints it once, from rank 0, not once per process
    every_rank: bool = False

    def __init__(self, message: str, *, span: SourceSpan | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint

    def render(self, source: str | None = None) -> str:
        """`file:line:col: error: message`, then the source line with a caret and the hint."""
        return render_one(self, source)


class NasSyntaxError(NascError):
    """The text does not follow the grammar."""


class NasSemanticError(NascError):
    """The text parses but does not describe a valid space; may carry several errors."""

    def __init__(self, message: str, *, span: SourceSpan | None = None, hint: str | None = None,
                 errors: list[NascError] | None = None):
        super().__init__(message, span=span, hint=hint)
        self.errors: list[NascError] = errors if errors else [self]

    def render(self, source: str | None = None) -> str:
        return "\n".join(render_one(e, source) for e in self.errors)


class RegistryError(NascError):
    """An unknown name was asked of a registry (op, relaxation, selector, dataset)."""


class BuildError(NascError):
    """The IR cannot be lowered to a network (e.g. a relaxation that does not fit the space)."""


class SearchError(NascError):
    """A search run cannot start or continue (bad run directory, foreign checkpoint, ...)."""


class DataError(NascError):
    """A dataset is missing, unreadable or corrupt."""


class GenotypeError(NascError):
    """A genotype cannot be read or does not fit its space."""


def suggest(name: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to `name`, for "did you mean" hints."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    best = suggest(name, candidates)
    return f"did you mean {best!r}?" if best else None


def _source_line(span: SourceSpan, source: str | None) -> str | None:
    if source is None:
        try:
            source = Path(span.file).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    lines = source.removeprefix("\ufeff").splitlines()  # columns count without a byte-order mark
    if not 1 <= span.line <= len(lines):
        return None
    return lines[span.line - 1]


def render_one(error: NascError, source: str | None = None) -> str:
    """Format one error like a compiler: location, message, source line, caret, hint."""
    span = error.span
    head = f"{span}: error: {error.message}" if span else f"error: {error.message}"
    out = [head]
    if span is not None:
        line = _source_line(span, source)
        if line is not None:
            line = line.expandtabs(4).rstrip("\n")
            width = 1
            if span.end_line == span.line and span.end_col and span.end_col > span.col:
                width = span.end_col - span.col
            out.append(f"  {line}")
            out.append("  " + " " * (span.col - 1) + "^" * max(1, min(width, max(1, len(line) - span.col + 1))))
    if error.hint:
        out.append(f"  hint: {error.hint}")
    return "\n".join(out)
