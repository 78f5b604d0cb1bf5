"""Parse tree → AST. Purely structural: no names are resolved and nothing is evaluated."""

from __future__ import annotations

import re

from lark import Token, Transformer, v_args

from nasc.grammar import ast as A
from nasc.errors import NasSyntaxError, SourceSpan


def token_span(tok: Token, file: str) -> SourceSpan:
    return SourceSpan(file=file, line=tok.line or 1, col=tok.column or 1,
                      end_line=tok.end_line, end_col=tok.end_column)


def meta_span(meta, file: str) -> SourceSpan:
    if getattr(meta, "empty", True):
        return SourceSpan(file=file, line=1, col=1)
    return SourceSpan(file=file, line=meta.line, col=meta.column, end_line=meta.end_line, end_col=meta.end_column)


def _split_args(items) -> tuple[tuple, tuple]:
    args, kwargs = [], []
    for item in items:
        if item is None:
            continue
        if isinstance(item, tuple) and len(item) == 2 and item[0] == "__kw__":
            kwargs.append(item[1])
        else:
            args.append(item)
    return tuple(args), tuple(kwargs)


MAX_RANGE = 1000  # a typo such as `n0..n99999999` must not exhaust memory


def expand_range(first: str, last: str, span: SourceSpan) -> tuple[str, ...]:
    """`n0..n3` → (n0, n1, n2, n3): same prefix, increasing numeric suffix."""
    a, b = re.fullmatch(r"(.*?)(\d+)", first), re.fullmatch(r"(.*?)(\d+)", last)
    if not a or not b or a.group(1) != b.group(1) or int(a.group(2)) > int(b.group(2)):
        raise NasSyntaxError(f"cannot expand the range {first}..{last}",
                             span=span, hint="a range names its first and last node with one prefix, e.g. n0..n3")
    if int(b.group(2)) - int(a.group(2)) >= MAX_RANGE:
        raise NasSyntaxError(f"the range {first}..{last} names more than {MAX_RANGE} nodes", span=span)
    return tuple(f"{a.group(1)}{i}" for i in range(int(a.group(2)), int(b.group(2)) + 1))


@v_args(meta=True)
class ToAst(Transformer):
    """Builds `nasc.grammar.ast` nodes; every node gets the span of its text."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _s(self, meta) -> SourceSpan:
        return meta_span(meta, self.file)

    # ---- file structure ----
    def start(self, meta, items):
        header = items[0] if items and isinstance(items[0], A.SpaceHeader) else None
        stmts = tuple(i for i in items if not isinstance(i, A.SpaceHeader))
        return A.SpaceFile(path=self.file, header=header, statements=stmts)

    def space_header(self, meta, items):
        name = str(items[0])
        params: tuple = ()
        extends = None
        for item in items[1:]:
            if isinstance(item, tuple):
                params = item
            elif isinstance(item, Token):
                extends = item[1:-1]
        return A.SpaceHeader(name=name, params=params, extends=extends, span=self._s(meta))

    def params(self, meta, items):
        return tuple(i for i in items if i is not None)

    def param(self, meta, items):
        return A.Param(name=str(items[0]), value=items[1], span=self._s(meta))

    def import_stmt(self, meta, items):
        return A.Import(path=items[0][1:-1], span=self._s(meta))

    # ---- ops ----
    def op_def(self, meta, items):
        name = items[0]
        formals = items[1] if len(items) == 3 else ()
        return A.OpDef(name=name, formals=formals, body=items[-1], span=self._s(meta))

    def op_name(self, meta, items):
        return str(items[0])

    def formals(self, meta, items):
        return tuple(str(t) for t in items)

    def op_body(self, meta, items):
        return A.OpBody(pipeline=items[0], alternatives=tuple(items[1:]), span=self._s(meta))

    def alternative(self, meta, items):
        return A.Alternative(stride=int(items[0]), pipeline=items[1], span=self._s(meta))

    def pipeline(self, meta, items):
        return A.Pipeline(steps=tuple(items), span=self._s(meta))

    def step(self, meta, items):
        guard = items[1] if len(items) > 1 else None
        return A.Step(call=items[0], guard=guard, span=self._s(meta))

    def call(self, meta, items):
        args, kwargs = _split_args(items[1:])
        return A.OpCall(name=str(items[0]), args=args, kwargs=kwargs, span=self._s(meta))

    def kwarg(self, meta, items):
        return ("__kw__", (str(items[0]), items[1]))

    def ops_def(self, meta, items):
        return A.OpsDef(name=str(items[0]), items=items[1].items, span=self._s(meta))

    def op_list(self, meta, items):
        return A.OpList(items=tuple(i for i in items if i is not None), span=self._s(meta))

    # ---- cells ----
    def cell_def(self, meta, items):
        names = [i for i in items if isinstance(i, Token)]
        body = tuple(i for i in items if not isinstance(i, Token))
        return A.CellDef(name=str(names[0]), inputs=tuple(str(n) for n in names[1:]), body=body, span=self._s(meta))

    def cell_derive(self, meta, items):
        name, base = str(items[0]), str(items[1])
        rest = items[2:]
        stride = None
        if rest and isinstance(rest[0], tuple) and rest[0] and rest[0][0] == "__stride__":
            stride = rest[0][1]
            rest = rest[1:]
        return A.CellDerive(name=name, base=base, input_stride=stride, body=tuple(rest), span=self._s(meta))

    def derive_stride(self, meta, items):
        return ("__stride__", items[0])

    def nodes_stmt(self, meta, items):
        combine = str(items[1]) if len(items) > 1 else None
        return A.NodesStmt(names=items[0], combine=combine, span=self._s(meta))

    def node_range(self, meta, items):
        return expand_range(str(items[0]), str(items[1]), self._s(meta))

    def node_names(self, meta, items):
        return tuple(str(i) for i in items)

    def edges_stmt(self, meta, items):
        return A.EdgesDense(candidates=items[0], span=self._s(meta))

    def edge_stmt(self, meta, items):
        names = [str(i) for i in items[:-1]]
        return A.EdgeStmt(sources=tuple(names[:-1]), dest=names[-1], candidates=items[-1], span=self._s(meta))

    def output_node(self, meta, items):
        return A.OutputStmt(kind="node", names=(str(items[0]),), span=self._s(meta))

    def output_concat(self, meta, items):
        sel = items[0] if items else None
        return A.OutputStmt(kind="concat", names=sel, span=self._s(meta))

    # ---- network ----
    def network(self, meta, items):
        return A.Network(stmts=tuple(items), span=self._s(meta))

    def input_stmt(self, meta, items):
        return A.InputStmt(channels=items[0], height=items[1], width=items[2], span=self._s(meta))

    def stem_stmt(self, meta, items):
        return A.StemStmt(pipeline=items[0], span=self._s(meta))

    def preprocess_stmt(self, meta, items):
        return A.PreprocessStmt(body=items[0], span=self._s(meta))

    def stack_stmt(self, meta, items):
        clauses = dict(c for c in items[2:])
        reduce = clauses.get("reduce")
        return A.StackStmt(count=items[0], cell=str(items[1]), width=clauses.get("width"),
                           reduce_cell=reduce[0] if reduce else None, reduce_at=reduce[1] if reduce else None,
                           widen=clauses.get("widen"), span=self._s(meta))

    def width_clause(self, meta, items):
        return ("width", items[0])

    def reduce_clause(self, meta, items):
        cell = str(items[0]) if len(items) == 2 else None
        return ("reduce", (cell, items[-1]))

    def widen_clause(self, meta, items):
        return ("widen", items[0])

    def layer_stmt(self, meta, items):
        return A.LayerStmt(pipeline=items[0], span=self._s(meta))

    def choice_stmt(self, meta, items):
        clauses = dict(c for c in items[2:])
        return A.ChoiceStmt(count=items[0], candidates=items[1], out=clauses.get("out"), stride=clauses.get("stride"),
                            residual="residual" in clauses, skippable="skippable" in clauses, span=self._s(meta))

    def out_clause(self, meta, items):
        return ("out", items[0])

    def stride_clause(self, meta, items):
        return ("stride", items[0])

    def residual_clause(self, meta, items):
        return ("residual", True)

    def skippable_clause(self, meta, items):
        return ("skippable", True)

    def head_stmt(self, meta, items):
        return A.HeadStmt(pipeline=items[0], span=self._s(meta))

    def aux_stmt(self, meta, items):
        weight = items[2] if len(items) > 2 else None
        return A.AuxStmt(pipeline=items[0], after=items[1], weight=weight, span=self._s(meta))

    # ---- search settings ----
    def alpha_per_cell(self, meta, items):
        return A.AlphaStmt(mode="per_cell", span=self._s(meta))

    def alpha_per_instance(self, meta, items):
        return A.AlphaStmt(mode="per_instance", span=self._s(meta))

    def method_name(self, meta, items):
        tok = items[0]
        text = str(tok)
        return text[1:-1] if tok.type == "STRING" else text

    def relax_stmt(self, meta, items):
        args, kwargs = _split_args(items[1:])
        return A.MethodStmt(kind="relax", name=items[0], args=args, kwargs=kwargs, span=self._s(meta))

    def select_call(self, meta, items):
        args, kwargs = _split_args(items[1:])
        return A.MethodStmt(kind="select", name=items[0], args=args, kwargs=kwargs, span=self._s(meta))

    def select_top(self, meta, items):
        span = self._s(meta)
        kwargs = [("k", items[0]), ("per", A.Str(value="node", span=span))]
        if len(items) > 1:
            kwargs.append(("exclude", items[1]))
        return A.MethodStmt(kind="select", name="magnitude", args=(), kwargs=tuple(kwargs), span=span)

    def select_argmax(self, meta, items):
        span = self._s(meta)
        if str(items[0]) == "node":  # not a form of the language: it would silently mean `top 2 per node`
            raise NasSyntaxError("`select argmax per node` is not a selection rule", span=token_span(items[0], self.file),
                                 hint="`select top 1 per node` keeps each node's strongest edge; "
                                      "`select argmax per edge` keeps every edge with its strongest op")
        kwargs = [("per", A.Str(value=str(items[0]), span=token_span(items[0], self.file)))]
        if len(items) > 1:
            kwargs.append(("exclude", items[1]))
        return A.MethodStmt(kind="select", name="magnitude", args=(), kwargs=tuple(kwargs), span=span)

    def excluding(self, meta, items):
        return A.ListExpr(items=tuple(A.Str(value=str(t), span=token_span(t, self.file)) for t in items),
                          span=self._s(meta))

    def search_block(self, meta, items):
        return A.SearchBlock(settings=tuple(items), span=self._s(meta))

    def train_block(self, meta, items):
        return A.TrainBlock(settings=tuple(items), span=self._s(meta))

    def setting(self, meta, items):
        return A.Setting(name=str(items[0]), value=items[1], span=self._s(meta))

    # ---- expressions ----
    def int_(self, meta, items):
        return A.Num(value=int(items[0]), span=self._s(meta))

    def float_(self, meta, items):
        return A.Num(value=float(items[0]), span=self._s(meta))

    def string(self, meta, items):
        return A.Str(value=str(items[0])[1:-1], span=self._s(meta))

    def true(self, meta, items):
        return A.Bool(value=True, span=self._s(meta))

    def false(self, meta, items):
        return A.Bool(value=False, span=self._s(meta))

    def name(self, meta, items):
        return A.Name(id=str(items[0]), span=self._s(meta))

    def call_expr(self, meta, items):
        args, kwargs = _split_args(items[1:])
        return A.CallExpr(name=str(items[0]), args=args, kwargs=kwargs, span=self._s(meta))

    def list_(self, meta, items):
        return A.ListExpr(items=tuple(i for i in items if i is not None), span=self._s(meta))

    def tuple_(self, meta, items):
        return A.TupleExpr(items=tuple(i for i in items if i is not None), span=self._s(meta))

    def arrow(self, meta, items):
        return A.Arrow(start=items[0], end=items[1], span=self._s(meta))

    def neg(self, meta, items):
        return A.Unary(op="-", operand=items[0], span=self._s(meta))

    def not_(self, meta, items):
        return A.Unary(op="not", operand=items[0], span=self._s(meta))

    def _chain(self, meta, items, ops=None):
        # items alternate operand, operator token, operand, ... (or operands only with a fixed op)
        left = items[0]
        i = 1
        while i < len(items):
            if ops is None:
                op, right = str(items[i]), items[i + 1]
                i += 2
            else:
                op, right = ops, items[i]
                i += 1
            left = A.BinOp(op=op, left=left, right=right, span=self._s(meta))
        return left

    def sum(self, meta, items):
        return self._chain(meta, items)

    def product(self, meta, items):
        return self._chain(meta, items)

    def power(self, meta, items):
        return A.BinOp(op="**", left=items[0], right=items[1], span=self._s(meta))

    def or_expr(self, meta, items):
        return self._chain(meta, items, "or")

    def and_expr(self, meta, items):
        return self._chain(meta, items, "and")
