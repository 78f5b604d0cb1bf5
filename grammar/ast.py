"""The AST of a `.nas` file: frozen attrs nodes, each with the span it came from.

The AST mirrors the text (no name resolution, no evaluation); it exists so
that the compiler can report every later error at the exact place the user
wrote the offending thing.
"""

from __future__ import annotations

from typing import Union

import attrs

from nasc.errors import SourceSpan

node = attrs.frozen(kw_only=True)


# ---- expressions ----------------------------------------------------------------

@node
class Num:
    value: int | float
    span: SourceSpan


@node
class Str:
    value: str
    span: SourceSpan


@node
class Bool:
    value: bool
    span: SourceSpan


@node
class Name:
    id: str
    span: SourceSpan


@node
class BinOp:
    op: str  # + - * / // % ** and or
    left: "Expr"
    right: "Expr"
    span: SourceSpan


@node
class Unary:
    op: str  # - not
    operand: "Expr"
    span: SourceSpan


@node
class Arrow:
    """`start -> end`: a value that changes over the search (e.g. a temperature)."""

    start: "Expr"
    end: "Expr"
    span: SourceSpan


@node
class CallExpr:
    name: str
    args: tuple["Expr", ...]
    kwargs: tuple[tuple[str, "Expr"], ...]
    span: SourceSpan


@node
class ListExpr:
    items: tuple["Expr", ...]
    span: SourceSpan


@node
class TupleExpr:
    items: tuple["Expr", ...]
    span: SourceSpan


Expr = Union[Num, Str, Bool, Name, BinOp, Unary, Arrow, CallExpr, ListExpr, TupleExpr]


# ---- operations -----------------------------------------------------------------

@node
class OpCall:
    """A reference to a primitive or op, with arguments: `dw_conv(k, stride)`, `sep_conv_3x3`."""

    name: str
    args: tuple[Expr, ...]
    kwargs: tuple[tuple[str, Expr], ...]
    span: SourceSpan


@node
class Step:
    call: OpCall
    guard: Expr | None  # `bn if searching`
    span: SourceSpan


@node
class Pipeline:
    steps: tuple[Step, ...]
    span: SourceSpan


@node
class Alternative:
    stride: int
    pipeline: Pipeline
    span: SourceSpan


@node
class OpBody:
    pipeline: Pipeline
    alternatives: tuple[Alternative, ...]
    span: SourceSpan


@node
class OpDef:
    name: str  # may be a pattern such as `sep_conv_{k}x{k}`
    formals: tuple[str, ...]
    body: OpBody
    span: SourceSpan

    @property
    def is_pattern(self) -> bool:
        return "{" in self.name


@node
class OpsDef:
    name: str
    items: tuple[OpCall, ...]
    span: SourceSpan


@node
class OpList:
    items: tuple[OpCall, ...]
    span: SourceSpan


Candidates = Union[OpList, OpCall]  # an OpCall here may name an `ops` set


# ---- cells ------------------------------------------------------------------------

@node
class NodesStmt:
    names: tuple[str, ...]
    combine: str | None
    span: SourceSpan


@node
class EdgesDense:
    candidates: Candidates
    span: SourceSpan


@node
class EdgeStmt:
    sources: tuple[str, ...]
    dest: str
    candidates: Candidates
    span: SourceSpan


@node
class OutputStmt:
    kind: str  # "node" or "concat"
    names: tuple[str, ...] | None  # None: every intermediate node
    span: SourceSpan


CellStmt = Union[NodesStmt, EdgesDense, EdgeStmt, OutputStmt]


@node
class CellDef:
    name: str
    inputs: tuple[str, ...]
    body: tuple[CellStmt, ...]
    span: SourceSpan


@node
class CellDerive:
    """`cell reduce = normal with stride 2 on inputs [: edge overrides]`."""

    name: str
    base: str
    input_stride: Expr | None
    body: tuple[CellStmt, ...]
    span: SourceSpan


# ---- macro network ------------------------------------------------------------------

@node
class InputStmt:
    channels: Expr
    height: Expr
    width: Expr
    span: SourceSpan


@node
class StemStmt:
    pipeline: Pipeline
    span: SourceSpan


@node
class PreprocessStmt:
    body: OpBody
    span: SourceSpan


@node
class StackStmt:
    count: Expr
    cell: str
    width: Expr | None
    reduce_cell: str | None
    reduce_at: Expr | None
    widen: Expr | None
    span: SourceSpan


@node
class LayerStmt:
    pipeline: Pipeline
    span: SourceSpan


@node
class ChoiceStmt:
    count: Expr
    candidates: Candidates
    out: Expr | None
    stride: Expr | None
    residual: bool
    skippable: bool
    span: SourceSpan


@node
class HeadStmt:
    pipeline: Pipeline
    span: SourceSpan


@node
class AuxStmt:
    pipeline: Pipeline
    after: Expr
    weight: Expr | None
    span: SourceSpan


NetStmt = Union[InputStmt, StemStmt, PreprocessStmt, StackStmt, LayerStmt, ChoiceStmt, HeadStmt, AuxStmt]


@node
class Network:
    stmts: tuple[NetStmt, ...]
    span: SourceSpan


# ---- search settings ------------------------------------------------------------------

@node
class AlphaStmt:
    mode: str  # "per_cell" or "per_instance"
    span: SourceSpan


@node
class MethodStmt:
    """`relax NAME(args)` or `select NAME(args)` (sugared forms are desugared to this)."""

    kind: str  # "relax" or "select"
    name: str
    args: tuple[Expr, ...]
    kwargs: tuple[tuple[str, Expr], ...]
    span: SourceSpan


@node
class Setting:
    name: str
    value: Expr
    span: SourceSpan


@node
class SearchBlock:
    settings: tuple[Setting, ...]
    span: SourceSpan


@node
class TrainBlock:
    """`train:` settings for the derived network; names of space parameters override them."""

    settings: tuple[Setting, ...]
    span: SourceSpan


@node
class Param:
    name: str
    value: Expr
    span: SourceSpan


@node
class SpaceHeader:
    name: str
    params: tuple[Param, ...]
    extends: str | None
    span: SourceSpan


@node
class Import:
    path: str
    span: SourceSpan


Statement = Union[Import, OpDef, OpsDef, CellDef, CellDerive, Network, AlphaStmt, MethodStmt, SearchBlock,
                  TrainBlock]


@node
class SpaceFile:
    path: str
    header: SpaceHeader | None
    statements: tuple[Statement, ...]
