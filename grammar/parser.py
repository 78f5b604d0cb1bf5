"""`parse(text, file)` → AST, turning every lark failure into a positioned `NasSyntaxError`."""

from __future__ import annotations

import functools
import re
from importlib import resources

from lark import Lark, Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from nasc.errors import NascError, NasSyntaxError, SourceSpan
from nasc.grammar import ast as A
from nasc.grammar.transform import ToAst

# How expected terminals read in a message; anonymous keyword terminals are shown by their text.
_READABLE = {
    "NAME": "a name",
    "PATTERN_NAME": "an op name pattern",
    "DASHED_NAME": "a name",
    "INT": "an integer",
    "FLOAT": "a number",
    "STRING": 'a "string"',
    "ADD_OP": "'+'/'-'",
    "MUL_OP": "'*'/'/'",
}

_STATEMENT_KEYWORDS = ("op", "ops", "cell", "network", "alpha", "relax", "select", "search", "import")


@functools.cache
def get_parser() -> Lark:
    """The LALR parser for `nas.lark`, built once per process."""
    text = resources.files("nasc.grammar").joinpath("nas.lark").read_text(encoding="utf-8")
    return Lark(text, parser="lalr", propagate_positions=True, maybe_placeholders=True, start=["start", "expr"])


def _describe(term: str) -> str:
    if term in _READABLE:
        return _READABLE[term]
    try:
        pattern = get_parser().get_terminal(term).pattern
    except KeyError:
        return term
    if pattern.type == "str":
        return f"'{pattern.value}'"
    return term.lower()


def _expected(names) -> str:
    words = sorted({_describe(n) for n in names if not n.startswith("_")})
    if len(words) > 8:
        words = words[:8] + ["…"]
    return ", ".join(words)


def _syntax_error(err: UnexpectedInput, file: str, text: str) -> NasSyntaxError:
    line, col = max(err.line, 1) if err.line != -1 else 1, max(err.column, 1) if err.column != -1 else 1
    hint = None
    if isinstance(err, UnexpectedCharacters):
        char = text[err.pos_in_stream] if 0 <= err.pos_in_stream < len(text) else "?"
        message = f"unexpected character {char!r}"
        if char == "\t":
            message = "unexpected tab character"
        elif char == "'":
            hint = 'strings use double quotes: "like this"'
        elif not char.isprintable():
            hint = "the file contains a control or binary character here"
        span = SourceSpan(file=file, line=line, col=col, end_line=line, end_col=col + 1)
        if err.allowed:
            message += f"; expected {_expected(err.allowed)}"
        return NasSyntaxError(message, span=span, hint=hint)
    if isinstance(err, UnexpectedEOF):
        lines = text.splitlines() or [""]
        span = SourceSpan(file=file, line=len(lines), col=len(lines[-1]) + 1)
        return NasSyntaxError(f"unexpected end of file; expected {_expected(err.expected)}", span=span,
                              hint="a statement or list is not finished")
    assert isinstance(err, UnexpectedToken)
    tok: Token = err.token
    if tok.type == "$END":
        lines = text.splitlines() or [""]
        span = SourceSpan(file=file, line=len(lines), col=len(lines[-1]) + 1)
        return NasSyntaxError(f"unexpected end of file; expected {_expected(err.expected)}", span=span,
                              hint="a statement or list is not finished")
    span = SourceSpan(file=file, line=tok.line, col=tok.column, end_line=tok.end_line, end_col=tok.end_column)
    shown = str(tok)
    message = f"unexpected {shown!r}; expected {_expected(err.expected)}"
    if shown in _STATEMENT_KEYWORDS:
        hint = f"the statement before '{shown}' looks unfinished"
    elif shown == "=" and "NAME" not in err.expected:
        hint = "'=' is only used for definitions and keyword arguments"
    return NasSyntaxError(message, span=span, hint=hint)


def parse(text: str, file: str = "<string>") -> A.SpaceFile:
    """Parse `.nas` source text into an AST; raises `NasSyntaxError` with a position."""
    return _parse(text, file, "start")


def parse_expr(text: str, file: str = "<string>") -> A.Expr:
    """Parse one expression (a value given on the command line, e.g. `[0, 9]` in `--set red=[0, 9]`)."""
    if not text.strip():
        raise NasSyntaxError("a value is missing", span=SourceSpan(file=file, line=1, col=1),
                             hint='write a number, true/false, a "string", a list [...] or an expression')
    try:
        return _parse(text, file, "expr")
    except NasSyntaxError as e:
        if not e.message.startswith("unexpected end of file"):
            raise
        raise NasSyntaxError(e.message.replace("end of file", "end of the value"), span=e.span,
                             hint="the value is not finished") from None


def _parse(text: str, file: str, start: str):
    if text.startswith("\ufeff"):  # a UTF-8 byte-order mark: editors hide it, so columns count without it
        text = text[1:]
    if "\r" in text:  # classic Mac line ends (a lone CR) are line ends too; one character each, so spans hold
        text = re.sub(r"\r(?!\n)", "\n", text)
    try:
        tree = get_parser().parse(text, start=start)
    except UnexpectedInput as err:
        raise _syntax_error(err, file, text) from None
    try:
        return ToAst(file).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, NascError):
            raise err.orig_exc from None
        raise
    except RecursionError:
        raise NasSyntaxError("an expression is nested too deeply", span=SourceSpan(file=file, line=1, col=1),
                             hint="simplify the expression (hundreds of nested brackets or signs)") from None


def parse_file(path: str) -> A.SpaceFile:
    """Read and parse a file; unreadable or non-UTF-8 files give a `NasSyntaxError`."""
    try:
        raw = open(path, "rb").read()
    except OSError as err:
        raise NasSyntaxError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        col = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise NasSyntaxError("the file is not valid UTF-8", span=SourceSpan(file=path, line=line, col=col),
                             hint="save the file as UTF-8 text") from None
    return parse(text, path)
