"""Declarations → IR: evaluate parameters, build the cell graphs and the macro graph.

Everything here is naming and bookkeeping; checks that need the whole graph
(cycles, reachability, shapes) are passes that run afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import networkx as nx

from nasc.compiler.expr import as_int, bind, call_hint, evaluate, is_sym
from nasc.compiler.ir import CellEdge, Layer, Method, Output, SpaceIR, Step
from nasc.compiler.ops import OpResolver, check_alternatives
from nasc.compiler.primitives import PRIMITIVES
from nasc.compiler.resolve import SpaceDecl
from nasc.compiler.settings import takes_string
from nasc.errors import NascError, NasSemanticError, SourceSpan, did_you_mean
from nasc.grammar import ast as A

DEFAULT_INPUT = (3, 32, 32)
COMBINES = ("sum", "mean")


class FollowOn(Exception):
    """A step cannot go on because of an error already collected; reporting more would only mislead."""


class Collector:
    """Gathers errors so one compile reports every independent mistake."""

    def __init__(self, imported_params: Mapping[str, str] | None = None) -> None:
        self.errors: list[NascError] = []
        self.imported_params = dict(imported_params or {})

    def run(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FollowOn:
            assert self.errors, "FollowOn raised with no error collected"
        except NasSemanticError as e:
            self.errors.extend(e.errors)
        except NascError as e:
            self.errors.append(e)
        return None

    def check(self) -> None:
        if self.errors:
            # an op set used by several cells fails once per use; report each distinct problem once
            unique, seen = [], set()
            for e in self.errors:
                key = (e.message, str(e.span) if e.span else None)
                if key not in seen:
                    seen.add(key)
                    unique.append(e)
            for e in unique:
                self._hint_imported_param(e)
            first = unique[0]
            raise NasSemanticError(first.message, span=first.span, hint=first.hint, errors=unique)


    def _hint_imported_param(self, e: NascError) -> None:
        """An unknown name that an imported file declares as a parameter: say why it is not in scope."""
        for name, file in self.imported_params.items():
            if e.message == f"unknown name {name!r}":
                e.hint = (f"{name!r} is a parameter of {Path(file).name}, and `import` brings definitions, not "
                          f"parameters: declare it in this space's header, e.g. `space NAME({name} = ...)`, "
                          "or use `extends`")


def eval_params(decl: SpaceDecl, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters in declaration order (later ones may use earlier ones), then CLI overrides."""
    for key in overrides:
        if key not in decl.params:
            raise NasSemanticError(f"space {decl.name!r} has no parameter {key!r}",
                                   hint=did_you_mean(key, decl.params) or f"parameters: {', '.join(decl.params) or 'none'}")
    params: dict[str, Any] = {}
    for name, p in decl.params.items():
        params[name] = overrides[name] if name in overrides else evaluate(p.value, params)
    return params


MAX_REPEAT = 10_000  # cells per `stack`, blocks per `choice`: a typo such as `stack 88888888 x` must not hang


def _int(value: Any, what: str, span: SourceSpan | None, minimum: int = 0, maximum: int | None = None) -> int:
    n = as_int(value)
    if n is None or n < minimum:
        raise NasSemanticError(f"{what} must be an integer ≥ {minimum}, got {value!r}", span=span,
                               hint=call_hint(value))
    if maximum is not None and n > maximum:
        raise NasSemanticError(f"{what} must be at most {maximum}, got {n}", span=span)
    return n


def check_input_shape(dims: Any, span: SourceSpan | None = None) -> tuple[int, int, int]:
    """An input shape from `input C x H x W`, `--input` or `input_shape=`: three positive integers, H == W.

    Shapes, costs and the runtime assume square maps, so a non-square input is refused wherever it is given.
    """
    try:
        values = tuple(dims)
    except TypeError:
        values = None
    ints = None if values is None else tuple(as_int(v) for v in values)
    if values is None or len(values) != 3 or None in ints or min(ints) < 1:
        shown = "x".join(map(str, values)) if values is not None and len(values) == 3 else repr(dims)
        raise NasSemanticError(f"an input shape is three positive integers C x H x W, got {shown}", span=span,
                               hint="e.g. 3x32x32")
    c, h, w = ints
    if h != w:
        raise NasSemanticError(f"only square inputs are supported, got {c}x{h}x{w}", span=span,
                               hint=f"use the same height and width, e.g. {c}x{max(h, w)}x{max(h, w)}; resize or pad the images")
    return c, h, w


def parse_input_shape(text: str, what: str = "an input shape") -> tuple[int, int, int]:
    """`3x32x32` (`--input`, or `input_shape="3x32x32"` in the Python API) as a checked (C, H, W)."""
    try:
        dims = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        raise NasSemanticError(f"{what} must look like 3x32x32, got {text!r}") from None
    return check_input_shape(dims)


# ---- cells -----------------------------------------------------------------------------

def _state_index(g: nx.DiGraph, name: str, span: SourceSpan, cell: str) -> str:
    if name not in g:
        raise NasSemanticError(f"cell {cell!r} has no input or node {name!r}", span=span,
                               hint=did_you_mean(name, list(g.nodes)) or f"states: {', '.join(g.nodes)}")
    return name


def _set_edge(g: nx.DiGraph, src: str, dst: str, cands: tuple[str, ...], span: SourceSpan) -> None:
    stride = g.graph["input_stride"] if g.nodes[src]["kind"] == "input" else 1
    g.add_edge(src, dst, edge=CellEdge(src=src, dst=dst, index=-1, stride=stride, candidates=cands, span=span))


def _renumber_edges(g: nx.DiGraph) -> None:
    """α rows follow (destination, source) order, however the edges were written."""
    order = sorted(g.edges, key=lambda e: (g.nodes[e[1]]["index"], g.nodes[e[0]]["index"]))
    for i, (u, v) in enumerate(order):
        e: CellEdge = g.edges[u, v]["edge"]
        stride = g.graph["input_stride"] if g.nodes[u]["kind"] == "input" else 1
        g.edges[u, v]["edge"] = CellEdge(src=u, dst=v, index=i, stride=stride, candidates=e.candidates, span=e.span)


def _apply_cell_stmts(g: nx.DiGraph, stmts, ops: OpResolver, cell: str, errs: Collector, *, derived: bool) -> None:
    for stmt in stmts:
        if isinstance(stmt, A.NodesStmt):
            if derived:
                raise NasSemanticError("a derived cell cannot add nodes", span=stmt.span,
                                       hint="define a new cell with `cell name(inputs): ...`")
            combine = stmt.combine or "sum"
            if combine not in COMBINES:
                raise NasSemanticError(f"unknown node combine {combine!r}", span=stmt.span,
                                       hint=did_you_mean(combine, COMBINES) or f"one of: {', '.join(COMBINES)}")
            for name in stmt.names:
                if name in g:
                    raise NasSemanticError(f"cell {cell!r} already has a state named {name!r}", span=stmt.span)
                g.add_node(name, kind="node", index=g.number_of_nodes(), combine=combine, span=stmt.span)
        elif isinstance(stmt, A.EdgesDense):
            cands = errs.run(lambda: tuple(n for n, _ in ops.candidates(stmt.candidates)))
            if cands is None:
                continue
            states = sorted(g.nodes, key=lambda n: g.nodes[n]["index"])
            for dst in states:
                if g.nodes[dst]["kind"] != "node":
                    continue
                for src in states:
                    if derived and not g.has_edge(src, dst):
                        continue  # a derived cell changes the edges it has, as `edge` there does; it adds none
                    if g.nodes[src]["index"] < g.nodes[dst]["index"]:
                        _set_edge(g, src, dst, cands, stmt.span)
        elif isinstance(stmt, A.EdgeStmt):
            cands = errs.run(lambda: tuple(n for n, _ in ops.candidates(stmt.candidates)))
            if cands is None:
                continue
            dst = _state_index(g, stmt.dest, stmt.span, cell)
            if g.nodes[dst]["kind"] == "input":
                raise NasSemanticError(f"{dst!r} is a cell input; edges must end at a node", span=stmt.span)
            for src in stmt.sources:
                _state_index(g, src, stmt.span, cell)
                if derived and not g.has_edge(src, dst):
                    raise NasSemanticError(f"derived cell {cell!r} has no edge {src} -> {dst} to change",
                                           span=stmt.span)
                _set_edge(g, src, dst, cands, stmt.span)
        elif isinstance(stmt, A.OutputStmt):
            if derived:
                raise NasSemanticError("a derived cell cannot change its output", span=stmt.span)
            if g.graph["output"] is not None:
                raise NasSemanticError(f"cell {cell!r} has more than one `output`", span=stmt.span,
                                       hint=f"the first is at line {g.graph['output_span'].line}; "
                                            "a cell has one output (list several nodes with `output concat(...)`)")
            twice = sorted({n for n in stmt.names or () if stmt.names.count(n) > 1})
            if twice:
                raise NasSemanticError(f"the output of cell {cell!r} names {twice[0]!r} twice", span=stmt.span,
                                       hint="each node may appear once in `output concat(...)`")
            if stmt.names is None:
                states = tuple(n for n in sorted(g.nodes, key=lambda n: g.nodes[n]["index"])
                               if g.nodes[n]["kind"] == "node")
            else:
                states = tuple(_state_index(g, n, stmt.span, cell) for n in stmt.names)
            g.graph["output"] = Output(kind=stmt.kind, states=states)
            g.graph["output_span"] = stmt.span


def build_cell(d: A.CellDef, ops: OpResolver, errs: Collector) -> nx.DiGraph:
    g = nx.DiGraph(name=d.name, inputs=tuple(d.inputs), input_stride=1, span=d.span, output=None)
    if len(set(d.inputs)) != len(d.inputs):
        raise NasSemanticError(f"cell {d.name!r} names an input twice", span=d.span)
    for i, name in enumerate(d.inputs):
        g.add_node(name, kind="input", index=i, span=d.span)
    _apply_cell_stmts(g, d.body, ops, d.name, errs, derived=False)
    if g.graph["output"] is None:
        nodes = tuple(n for n in sorted(g.nodes, key=lambda n: g.nodes[n]["index"]) if g.nodes[n]["kind"] == "node")
        g.graph["output"] = Output(kind="concat", states=nodes)
    g.graph["nodes"] = tuple(n for n in sorted(g.nodes, key=lambda n: g.nodes[n]["index"])
                             if g.nodes[n]["kind"] == "node")
    _renumber_edges(g)
    return g


def derive_cell(d: A.CellDerive, base: nx.DiGraph, ops: OpResolver, params, errs: Collector) -> nx.DiGraph:
    g = base.copy()
    g.graph.update(name=d.name, span=d.span)
    if d.input_stride is not None:
        g.graph["input_stride"] = _int(evaluate(d.input_stride, params), "the input stride", d.input_stride.span, 1)
    _renumber_edges(g)
    _apply_cell_stmts(g, d.body, ops, d.name, errs, derived=True)
    _renumber_edges(g)
    return g


def build_cells(decl: SpaceDecl, ops: OpResolver, params, errs: Collector) -> dict[str, nx.DiGraph]:
    cells: dict[str, nx.DiGraph] = {}
    visiting: list[str] = []

    def get(name: str, span: SourceSpan) -> nx.DiGraph:
        if name in cells:
            return cells[name]
        if name not in decl.cells:
            raise NasSemanticError(f"unknown cell {name!r}", span=span,
                                   hint=did_you_mean(name, decl.cells) or f"cells: {', '.join(decl.cells) or 'none'}")
        if name in visiting:
            raise NasSemanticError(f"cell {name!r} is derived from itself", span=span)
        d = decl.cells[name]
        visiting.append(name)
        try:
            g = build_cell(d, ops, errs) if isinstance(d, A.CellDef) else derive_cell(d, get(d.base, d.span), ops,
                                                                                         params, errs)
        finally:
            visiting.pop()
        cells[name] = g
        return g

    for name, d in decl.cells.items():
        errs.run(get, name, d.span)
    return cells


# ---- network ----------------------------------------------------------------------------

def _macro_steps(ops: OpResolver, pipe: A.Pipeline, params) -> tuple[Step, ...]:
    """A stem/layer/head pipeline: stride context 1, guards folded to `when`."""
    steps, guards = ops.pipeline(pipe, params, params)
    return fold_guards(steps, guards, {"stride": 1}, pipe.span)


def fold_guards(steps, guards, env, span) -> tuple[Step, ...]:
    """Bind known context (e.g. the stride) into steps; turn `if searching` guards into `when`."""
    out = []
    for step, guard in zip(steps, guards):
        try:
            g = bind(guard, env)
        except (ArithmeticError, TypeError) as e:
            raise NasSemanticError(f"the condition of {step.prim} cannot be computed ({e})", span=step.span or span) from None
        if g is False:
            continue
        when = "always"
        if g == ["var", "searching"]:
            when = "search"
        elif g == ["not", ["var", "searching"]]:
            when = "eval"
        elif g is not True:
            raise NasSemanticError("a step condition may only test `searching` (or `not searching`)",
                                   span=step.span or span)
        try:
            args = tuple((k, bind(v, env)) for k, v in step.args)
        except (ArithmeticError, TypeError) as e:  # e.g. `C // (stride - 1)` on a stride-1 edge
            raise NasSemanticError(f"{step.prim}: its arguments cannot be computed at stride {env.get('stride')}"
                                   f" ({e})", span=step.span or span) from None
        out.append(Step(prim=step.prim, args=args, when=when, span=step.span))
    return tuple(out)


def _channels_after(steps: tuple[Step, ...], c_in: int | None) -> int | None:
    """Channels a (stride-specialised) pipeline produces, when they are already known."""
    c = c_in
    for step in steps:
        if c is None:
            return None
        args = dict(step.args)
        out = args.get("out")
        if is_sym(out):
            return None
        c = PRIMITIVES[step.prim].channels(c, c, args)
    return c


def build_macro(decl: SpaceDecl, ops: OpResolver, cells: dict[str, nx.DiGraph], params, errs: Collector):
    g = nx.MultiDiGraph()  # a cell may read one layer through two slots (DARTS: s0 = s1 = stem)
    net = decl.network
    input_shape = DEFAULT_INPUT
    preprocess = None
    if net is None:
        raise NasSemanticError(f"space {decl.name!r} has no `network:` block", span=decl.span,
                               hint="add `network:` with a stem, stacked cells and a head" if decl.headed else
                               "a file of definitions alone is a library: `import` it from a space that "
                               "declares `network:` and check that space")
    producers: list[str] = []  # layers whose outputs later cells may read, in order
    c = params.get("C")
    width = c if isinstance(c, int) and not isinstance(c, bool) and c >= 1 else None
    channels: int | None = None
    counter = {"cell": 0, "layer": 0, "choice": 0}

    def add(kind: str, **kw) -> Layer:
        prefix = {"stem": "stem", "head": "head", "aux": "aux"}.get(kind, kind)
        if kind in counter:
            lid = f"{prefix}{counter[kind]}"
            counter[kind] += 1
        else:
            lid = prefix
            if lid in g:
                raise NasSemanticError(f"the network has more than one `{kind}`", span=kw.get("span"))
        layer = Layer(id=lid, kind=kind, position=g.number_of_nodes(), **kw)
        g.add_node(lid, layer=layer)
        return layer

    def link_sequential(layer: Layer) -> None:
        if producers:
            g.add_edge(producers[-1], layer.id, slot=0)

    head_seen = False
    layer_kinds = {A.StemStmt: "stem", A.LayerStmt: "layer", A.StackStmt: "stack", A.ChoiceStmt: "choice"}
    for stmt in net.stmts:
        if head_seen and type(stmt) in layer_kinds:
            raise NasSemanticError(f"`{layer_kinds[type(stmt)]}` after the head: the head must be the network's "
                                   "last layer", span=stmt.span, hint="move `head` below the layers it classifies "
                                                                      "(only `aux` heads may follow it)")
        if isinstance(stmt, A.InputStmt):
            dims = tuple(_int(evaluate(e, params), "an input size", e.span, 1)
                         for e in (stmt.channels, stmt.height, stmt.width))
            input_shape = check_input_shape(dims, stmt.span)
        elif isinstance(stmt, A.PreprocessStmt):
            template = errs.run(_preprocess_template, ops, stmt, params)
            preprocess = template
        elif isinstance(stmt, A.StemStmt):
            if producers:
                raise NasSemanticError("the stem must come first in the network", span=stmt.span)
            steps = errs.run(_macro_steps, ops, stmt.pipeline, params) or ()
            layer = add("stem", steps=steps, span=stmt.span)
            producers.append(layer.id)
            channels = _channels_after(steps, input_shape[0])
        elif isinstance(stmt, A.LayerStmt):
            steps = errs.run(_macro_steps, ops, stmt.pipeline, params) or ()
            layer = add("layer", steps=steps, span=stmt.span)
            link_sequential(layer)
            producers.append(layer.id)
            channels = _channels_after(steps, channels)
        elif isinstance(stmt, A.StackStmt):
            count = _int(evaluate(stmt.count, params), "a cell count", stmt.count.span, 1, MAX_REPEAT)
            if stmt.width is not None:
                width = _int(evaluate(stmt.width, params), "a width", stmt.width.span, 1)
            if width is None and "C" in params:
                if errs.errors:  # C is declared but unusable: the error that made it so is the one to read
                    raise FollowOn()
                raise NasSemanticError(f"`stack` needs a width: the parameter C is {params['C']!r}, "
                                       "not a positive integer", span=stmt.span,
                                       hint="give C a positive integer value, or add `, width N`")
            if width is None:
                raise NasSemanticError("`stack` needs a width", span=stmt.span,
                                       hint="add `, width N` or declare a parameter C")
            reduce_at: set[int] = set()
            if stmt.reduce_at is not None:
                at = evaluate(stmt.reduce_at, params)
                at = at if isinstance(at, tuple) else (at,)
                for a in at:
                    i = _int(a, "a reduction position", stmt.reduce_at.span)
                    if i >= count:
                        raise NasSemanticError(f"reduction position {i} is outside the stack of {count} cells",
                                               span=stmt.reduce_at.span)
                    reduce_at.add(i)
            widen = 1
            if stmt.widen is not None:
                widen = _int(evaluate(stmt.widen, params), "a widening factor", stmt.widen.span, 1)
            reduce_cell = stmt.reduce_cell or "reduce"
            for name in {stmt.cell} | ({reduce_cell} if reduce_at else set()):
                if name not in cells:
                    if name in decl.cells:
                        raise NasSemanticError(f"cell {name!r} could not be built (see the errors above)",
                                               span=stmt.span)
                    raise NasSemanticError(f"unknown cell {name!r}", span=stmt.span,
                                           hint=did_you_mean(name, cells) or f"cells: {', '.join(cells) or 'none'}")
            for i in range(count):
                is_reduce = i in reduce_at
                if is_reduce:
                    width *= widen
                cell = reduce_cell if is_reduce else stmt.cell
                layer = add("cell", cell=cell, width=width, span=stmt.span)
                n_in = len(cells[cell].graph["inputs"])
                if not producers:
                    raise NasSemanticError("cells need a stem (or a layer) before them", span=stmt.span)
                sources = [producers[max(0, len(producers) - n_in + s)] for s in range(n_in)]
                for slot, src in enumerate(sources):
                    g.add_edge(src, layer.id, slot=slot)
                producers.append(layer.id)
                out = cells[cell].graph["output"]
                channels = width * (len(out.states) if out.kind == "concat" else 1)
        elif isinstance(stmt, A.ChoiceStmt):
            count = _int(evaluate(stmt.count, params), "a block count", stmt.count.span, 1, MAX_REPEAT)
            out_c = _int(evaluate(stmt.out, params), "`out`", stmt.out.span, 1) if stmt.out is not None else channels
            if out_c is None:
                raise NasSemanticError("`choice` needs `out N` here", span=stmt.span)
            stride = _int(evaluate(stmt.stride, params), "a stride", stmt.stride.span, 1) if stmt.stride else 1
            base = errs.run(lambda: tuple(n for n, _ in ops.candidates(stmt.candidates)))
            if base is None:
                continue
            for i in range(count):
                s = stride if i == 0 else 1
                eligible = s == 1 and channels == out_c
                cands = base + (("zero",) if stmt.skippable and eligible and "zero" not in base else ())
                if stmt.skippable and "zero" in cands:
                    ops.template(A.OpCall(name="zero", args=(), kwargs=(), span=stmt.span))
                layer = add("choice", width=out_c, candidates=cands, stride=s,
                            residual=stmt.residual and eligible, span=stmt.span)
                link_sequential(layer)
                producers.append(layer.id)
                channels = out_c
        elif isinstance(stmt, A.HeadStmt):
            steps = errs.run(_macro_steps, ops, stmt.pipeline, params) or ()
            layer = add("head", steps=steps, span=stmt.span)
            link_sequential(layer)
            head_seen = True
        elif isinstance(stmt, A.AuxStmt):
            steps = errs.run(_macro_steps, ops, stmt.pipeline, params) or ()
            after = _int(evaluate(stmt.after, params), "the aux position", stmt.after.span)
            cell_ids = [n for n in g.nodes if g.nodes[n]["layer"].kind == "cell"]
            if after >= len(cell_ids):
                raise NasSemanticError(f"aux head after cell {after}, but the network has {len(cell_ids)} cells so far",
                                       span=stmt.after.span, hint="write `aux` after the `stack` it attaches to")
            weight = evaluate(stmt.weight, params) if stmt.weight is not None else 0.4
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise NasSemanticError(f"the aux weight must be a number, got {weight!r}", span=stmt.weight.span)
            if not 0 <= weight < float("inf"):  # else `nasc train` fails later, at no line (aux_weight ≥ 0)
                raise NasSemanticError(f"the aux weight must be a finite number ≥ 0, got {weight!r}",
                                       span=stmt.weight.span, hint="0 keeps the head untrained; DARTS uses 0.4")
            layer = add("aux", steps=steps, weight=float(weight), span=stmt.span)
            g.add_edge(f"cell{after}", layer.id, slot=0)
    if not head_seen:
        raise NasSemanticError("the network has no `head`", span=net.span,
                               hint="e.g. `head global_avg_pool > linear(classes)`")
    # head and aux are both sinks: number the aux head last, however the two were written
    order = sorted(g.nodes, key=lambda n: (g.nodes[n]["layer"].kind == "aux", g.nodes[n]["layer"].position))
    for i, n in enumerate(order):
        g.nodes[n]["layer"] = attrs.evolve(g.nodes[n]["layer"], position=i)
    return g, input_shape, preprocess


def _preprocess_template(ops: OpResolver, stmt: A.PreprocessStmt, params):
    from nasc.compiler.ir import OpTemplate

    check_alternatives(stmt.body)
    steps, guards = ops.pipeline(stmt.body.pipeline, params, params)
    alts, alt_guards = [], []
    for alt in stmt.body.alternatives:
        s, gs = ops.pipeline(alt.pipeline, params, params)
        alts.append((alt.stride, s))
        alt_guards.append(gs)
    return OpTemplate(name="preprocess", default=steps, guards=guards, alternatives=tuple(alts),
                      alt_guards=tuple(alt_guards), span=stmt.span)


# ---- methods and settings -------------------------------------------------------------------
def evaluate_setting(block: str, name: str, setting: A.Setting, params: Mapping[str, Any]) -> Any:
    """A bare word where a setting takes a string (`memory = recompute`) is missing its quotes: saying
    "unknown name" and listing the parameters would send the user looking in the wrong place."""
    value = setting.value
    if isinstance(value, A.Name) and value.id not in params and takes_string(block, name):
        raise NasSemanticError(f"{block} setting {name!r} takes a string, not the name {value.id!r}",
                               span=value.span, hint=f'quote it: {name} = "{value.id}"')
    return evaluate(value, params)


def build_method(stmt: A.MethodStmt | None, default: str, params) -> Method:
    if stmt is None:
        return Method(name=default)
    if stmt.args:
        raise NasSemanticError(f"{stmt.kind} options are written as name = value", span=stmt.args[0].span,
                               hint=f"e.g. `{stmt.kind} {stmt.name}(tau = 10 -> 0.1)`")
    options = tuple((k, evaluate(v, params)) for k, v in stmt.kwargs)
    if stmt.kind == "select" and stmt.name == "magnitude":
        _check_magnitude(dict(options), stmt.span)
    return Method(name=stmt.name, options=options, span=stmt.span)


def _check_magnitude(opts: dict[str, Any], span: SourceSpan) -> None:
    """The built-in selector's options, which the compiler itself reads to count architectures."""
    known = ("exclude", "k", "per")
    for key in opts:
        if key not in known:
            raise NasSemanticError(f"selector 'magnitude' has no option {key!r}", span=span,
                                   hint=did_you_mean(key, known) or f"options: {', '.join(known)}")
    k = opts.get("k")
    if k is not None and (as_int(k) is None or as_int(k) < 1):
        raise NasSemanticError(f"select: k must be an integer ≥ 1, got {k!r}", span=span)
    per = opts.get("per")
    if per is not None and per not in ("node", "edge", "layer"):
        raise NasSemanticError(f"select: cannot select per {per!r}", span=span,
                               hint=did_you_mean(str(per), ("node", "edge", "layer")) or "per node, edge or layer")
    ex = opts.get("exclude")
    if ex is not None and not (isinstance(ex, str) or (isinstance(ex, tuple) and all(isinstance(e, str) for e in ex))):
        raise NasSemanticError(f"select: exclude must name ops, got {ex!r}", span=span,
                               hint='e.g. `excluding none` or `exclude = ["none"]`')


def check_excluded(stmt: A.MethodStmt | None, ops: OpResolver) -> None:
    """`excluding OP` must name an op: a typo (`nnone`) would silently stop excluding `none`."""
    if stmt is None or stmt.name != "magnitude":
        return
    value = dict(stmt.kwargs).get("exclude")
    if value is None:
        return
    items = value.items if isinstance(value, A.ListExpr) else (value,)
    used = set(ops.templates)  # every candidate's canonical name, e.g. `conv(3, stride)`
    for item in items:
        if not isinstance(item, A.Str):
            continue  # not a name: _check_magnitude reports it
        name = item.value
        if name in used or ops.find(name, item.span) is not None:
            continue
        known = sorted(used | set(ops.known_names()) - set(ops.decl.op_sets))
        raise NasSemanticError(f"unknown op {name!r} in `excluding`", span=item.span,
                               hint=did_you_mean(name, known) or "exclude ops by the names the candidates use")


def check_per_layer(stmt: A.MethodStmt | None, macro: nx.MultiDiGraph) -> None:
    """Selecting per layer picks among `choice` blocks: a network without one has nothing it applies to."""
    if stmt is None or stmt.name != "magnitude":
        return
    per = dict(stmt.kwargs).get("per")
    if not isinstance(per, A.Str) or per.value != "layer":
        return
    if not any(d["layer"].kind == "choice" for _, d in macro.nodes(data=True)):
        raise NasSemanticError("selection per layer, but the network has no `choice` layers", span=per.span,
                               hint="cells are selected per edge (`select argmax per edge`) "
                                    "or per node (`select top 2 per node`)")


def check_definitions(decl: SpaceDecl, ops: OpResolver, errs: Collector) -> None:
    """Every op set and every argument-free op is resolved even when unused, so a typo never hides.

    Op families and ops with parameters can only be checked where they are used.
    """
    for name, opset in decl.op_sets.items():
        errs.run(ops.candidates, A.OpCall(name=name, args=(), kwargs=(), span=opset.span))
    for name, d in decl.ops.items():
        if not d.formals:
            errs.run(ops.template, A.OpCall(name=name, args=(), kwargs=(), span=d.span))


def build_ir(decl: SpaceDecl, overrides: Mapping[str, Any] | None = None) -> SpaceIR:
    """The raw IR of a resolved space (before passes)."""
    params = eval_params(decl, overrides or {})
    errs = Collector({k: v for k, v in decl.imported_params.items() if k not in decl.params})
    ops = OpResolver(decl, params)
    cells = build_cells(decl, ops, params, errs)
    check_definitions(decl, OpResolver(decl, params), errs)  # a scratch resolver: the IR keeps only used ops
    macro = errs.run(build_macro, decl, ops, cells, params, errs)
    errs.run(check_excluded, decl.select, ops)
    if macro is not None:
        errs.run(check_per_layer, decl.select, macro[0])
    errs.check()
    g, input_shape, preprocess = macro
    search = {name: errs.run(evaluate_setting, "search", name, setting, params)
              for name, setting in decl.search.items()}
    train = {name: errs.run(evaluate_setting, "train", name, setting, params) for name, setting in decl.train.items()}
    errs.check()
    ir = SpaceIR(
        name=decl.name,
        params=params,
        input_shape=input_shape,
        ops=dict(ops.templates),
        cells=cells,
        macro=g,
        preprocess=preprocess,
        alpha_mode=decl.alpha.mode if decl.alpha else "per_cell",
        relax=build_method(decl.relax, "softmax", params),
        select=build_method(decl.select, "magnitude", params),
        search=search,
        train=train,
        files=tuple(decl.files),
    )
    ir.spans.update({f"search.{k}": s.span for k, s in decl.search.items()})
    ir.spans.update({f"train.{k}": s.span for k, s in decl.train.items()})
    if decl.relax:
        ir.spans["relax"] = decl.relax.span
    if decl.select:
        ir.spans["select"] = decl.select.span
    return ir
