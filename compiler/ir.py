"""The IR: one networkx graph per cell type, one macro graph, and the op table.

The schema (documented for users in docs/ir.md) is a closed set:

Cell graph (`SpaceIR.cells[name]`, an `nx.DiGraph`)
  graph attrs  name, inputs (state names), nodes (intermediate names),
               output (`Output`), input_stride (1, or 2 for a reduction cell)
  node attrs   kind ("input" | "node"), index (DARTS numbering: inputs first),
               combine ("sum" | "mean"; nodes only)
  edge attrs   edge (`CellEdge`): edge number, stride, candidate op names, span

Macro graph (`SpaceIR.macro`, an `nx.MultiDiGraph`)
  node attrs   layer (`Layer`): kind "stem" | "cell" | "layer" | "choice" | "head" | "aux",
               position, cell name or steps or candidates, width, stride, ...
  edge attrs   slot: which input of the consumer the producer feeds

Op table
  ops          name -> `OpTemplate` (as declared; `stride` may still be symbolic)
  impls        "name@stride" -> tuple[`Step`] (after `specialise_ops`)

Passes derive facts into `meta` dicts (on the IR, on macro layers) and never
add node or edge kinds. `lint` checks the structural invariants and runs after
every pass in test mode.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import attrs
import networkx as nx

from nasc.compiler.expr import to_json
from nasc.errors import SourceSpan

NODE_KINDS = ("input", "node")
LAYER_KINDS = ("stem", "cell", "layer", "choice", "head", "aux")
WHEN = ("always", "search", "eval")


def _span_field():
    return attrs.field(default=None, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class Step:
    """One primitive call; `args` values are constants or symbolic trees over C, C_in, searching."""

    prim: str
    args: tuple[tuple[str, Any], ...] = ()
    when: str = "always"
    span: SourceSpan | None = _span_field()

    def to_json(self) -> dict:
        d: dict[str, Any] = {"prim": self.prim, "args": {k: to_json(v) for k, v in self.args}}
        if self.when != "always":
            d["when"] = self.when
        return d


@attrs.frozen(kw_only=True)
class OpTemplate:
    """An op as declared: its pipeline and its `on stride N:` alternatives."""

    name: str
    default: tuple[Step, ...]
    alternatives: tuple[tuple[int, tuple[Step, ...]], ...] = ()
    guards: tuple[Any, ...] = ()  # per default step: guard value (bool or symbolic), parallel to `default`
    alt_guards: tuple[tuple[Any, ...], ...] = ()
    span: SourceSpan | None = _span_field()

    def to_json(self) -> dict:
        return {"default": [s.to_json() for s in self.default],
                "guards": [to_json(g) for g in self.guards],
                "alternatives": {str(k): {"steps": [s.to_json() for s in steps], "guards": [to_json(g) for g in gs]}
                                 for (k, steps), gs in zip(self.alternatives, self.alt_guards)}}


@attrs.frozen(kw_only=True)
class CellEdge:
    src: str
    dst: str
    index: int  # edge number within the cell, by (dst, src); α rows number only the searchable edges
    stride: int
    candidates: tuple[str, ...]
    span: SourceSpan | None = _span_field()

    @property
    def key(self) -> str:
        return f"{self.dst}<-{self.src}"

    def to_json(self) -> dict:
        return {"src": self.src, "dst": self.dst, "index": self.index, "stride": self.stride,
                "candidates": list(self.candidates)}


@attrs.frozen(kw_only=True)
class Output:
    kind: str  # "concat" or "node"
    states: tuple[str, ...]

    def to_json(self) -> dict:
        return {"kind": self.kind, "states": list(self.states)}


@attrs.frozen(kw_only=True)
class Layer:
    """One macro-network position."""

    id: str
    kind: str
    position: int
    cell: str | None = None  # kind == "cell"
    width: int | None = None  # per-node channels (cells) or output channels (choice)
    steps: tuple[Step, ...] = ()  # stem / layer / head / aux pipelines (already specialised)
    candidates: tuple[str, ...] = ()  # kind == "choice"
    stride: int = 1  # choice stride
    residual: bool = False
    weight: float | None = None  # aux loss weight
    span: SourceSpan | None = _span_field()

    def to_json(self) -> dict:
        d: dict[str, Any] = {"id": self.id, "kind": self.kind, "position": self.position}
        if self.cell is not None:
            d["cell"] = self.cell
        if self.width is not None:
            d["width"] = self.width
        if self.steps:
            d["steps"] = [s.to_json() for s in self.steps]
        if self.candidates:
            d["candidates"] = list(self.candidates)
        if self.kind == "choice":
            d["stride"] = self.stride
            d["residual"] = self.residual
        if self.weight is not None:
            d["weight"] = self.weight
        return d


@attrs.frozen(kw_only=True)
class Method:
    """A relaxation or selector reference with its evaluated options."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()
    span: SourceSpan | None = _span_field()

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    def to_json(self) -> dict:
        return {"name": self.name, "options": {k: to_json(v) for k, v in self.options}}


@attrs.define(kw_only=True)
class SpaceIR:
    """The whole compiled space. Passes copy it (`copy()`) and return a new one."""

    name: str
    params: dict[str, Any]
    input_shape: tuple[int, int, int]
    ops: dict[str, OpTemplate]
    cells: dict[str, nx.DiGraph]
    macro: nx.MultiDiGraph
    preprocess: OpTemplate | None
    alpha_mode: str  # "per_cell" or "per_instance"
    relax: Method
    select: Method
    search: dict[str, Any]
    train: dict[str, Any] = attrs.field(factory=dict)
    impls: dict[str, tuple[Step, ...]] = attrs.field(factory=dict)
    alpha_groups: dict[str, dict] = attrs.field(factory=dict)
    meta: dict[str, Any] = attrs.field(factory=dict)
    files: tuple[str, ...] = ()
    spans: dict[str, SourceSpan] = attrs.field(factory=dict)  # statement spans for later errors

    def copy(self) -> "SpaceIR":
        return attrs.evolve(
            self,
            params=dict(self.params),
            ops=dict(self.ops),
            cells={k: g.copy() for k, g in self.cells.items()},
            macro=self.macro.copy(),
            search=dict(self.search),
            train=dict(self.train),
            impls=dict(self.impls),
            alpha_groups={k: dict(v) for k, v in self.alpha_groups.items()},
            meta={k: v for k, v in self.meta.items()},
            spans=dict(self.spans),
        )

    # ---- convenience views ----
    def layers(self) -> list[Layer]:
        """Macro layers in network order."""
        return sorted((d["layer"] for _, d in self.macro.nodes(data=True)), key=lambda l: l.position)

    def cell_edges(self, cell: str) -> list[CellEdge]:
        """A cell's edges in α-row order."""
        return sorted((d["edge"] for _, _, d in self.cells[cell].edges(data=True)), key=lambda e: e.index)

    def cell_states(self, cell: str) -> list[str]:
        g = self.cells[cell]
        return sorted(g.nodes, key=lambda n: g.nodes[n]["index"])

    def impl(self, op: str, stride: int) -> tuple[Step, ...]:
        return self.impls[f"{op}@{stride}"]


def cell_to_json(g: nx.DiGraph) -> dict:
    states = sorted(g.nodes, key=lambda n: g.nodes[n]["index"])
    edges = sorted((d["edge"] for _, _, d in g.edges(data=True)), key=lambda e: e.index)
    return {
        "inputs": list(g.graph["inputs"]),
        "nodes": [{"name": n, "index": g.nodes[n]["index"], "combine": g.nodes[n].get("combine", "sum")}
                  for n in states if g.nodes[n]["kind"] == "node"],
        "edges": [e.to_json() for e in edges],
        "output": g.graph["output"].to_json(),
        "input_stride": g.graph["input_stride"],
    }


def macro_to_json(g: nx.DiGraph) -> dict:
    layers = sorted((d["layer"] for _, d in g.nodes(data=True)), key=lambda l: l.position)
    links = sorted(([u, v, d["slot"]] for u, v, d in g.edges(data=True)),
                   key=lambda t: (g.nodes[t[1]]["layer"].position, t[2]))
    return {"layers": [l.to_json() for l in layers], "links": links}


def to_json_dict(ir: SpaceIR, *, with_meta: bool = True) -> dict:
    """The canonical JSON form: sorted, span-free, independent of how the source was written."""
    used = sorted(ir.ops)
    d: dict[str, Any] = {
        "format": "nasc-ir/1",
        "space": ir.name,
        "params": {k: to_json(v) for k, v in sorted(ir.params.items())},
        "input": list(ir.input_shape),
        "ops": {k: ir.ops[k].to_json() for k in used},
        "impls": {k: [s.to_json() for s in v] for k, v in sorted(ir.impls.items())},
        "preprocess": ir.preprocess.to_json() if ir.preprocess else None,
        "cells": {k: cell_to_json(g) for k, g in sorted(ir.cells.items())},
        "macro": macro_to_json(ir.macro),
        "alpha": {"mode": ir.alpha_mode, "groups": to_json(ir.alpha_groups)},
        "relax": ir.relax.to_json(),
        "select": ir.select.to_json(),
        "search": {k: to_json(v) for k, v in sorted(ir.search.items())},
        "train": {k: to_json(v) for k, v in sorted(ir.train.items())},
    }
    if with_meta:
        d["meta"] = to_json(ir.meta)
    return d


def canonical_json(ir: SpaceIR) -> str:
    """What the fingerprint hashes: the space and its search settings, not how its result is trained."""
    d = to_json_dict(ir, with_meta=False)
    d.pop("train", None)
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def fingerprint(ir: SpaceIR) -> str:
    """A stable hash of what the space means (not how it is written): 16 hex digits of SHA-256."""
    return hashlib.sha256(canonical_json(ir).encode()).hexdigest()[:16]


def lint(ir: SpaceIR) -> list[str]:
    """Structural invariants of the IR; returns the problems found (empty when well formed)."""
    problems: list[str] = []
    for name, g in ir.cells.items():
        if not nx.is_directed_acyclic_graph(g):
            problems.append(f"cell {name}: not a DAG")
        indices = sorted(g.nodes[n].get("index", -1) for n in g.nodes)
        if indices != list(range(len(indices))):
            problems.append(f"cell {name}: state indices are not 0..n-1: {indices}")
        for n, d in g.nodes(data=True):
            if d.get("kind") not in NODE_KINDS:
                problems.append(f"cell {name}: state {n} has kind {d.get('kind')!r}")
        rows = sorted(d["edge"].index for _, _, d in g.edges(data=True))
        if rows != list(range(len(rows))):
            problems.append(f"cell {name}: α rows are not 0..n-1")
        for u, v, d in g.edges(data=True):
            e = d.get("edge")
            if not isinstance(e, CellEdge) or (e.src, e.dst) != (u, v):
                problems.append(f"cell {name}: edge {u}->{v} has a bad record")
            elif not e.candidates:
                problems.append(f"cell {name}: edge {u}->{v} has no candidates")
    positions = []
    for n, d in ir.macro.nodes(data=True):
        layer = d.get("layer")
        if not isinstance(layer, Layer) or layer.id != n:
            problems.append(f"macro: node {n} has a bad record")
            continue
        if layer.kind not in LAYER_KINDS:
            problems.append(f"macro: layer {n} has kind {layer.kind!r}")
        if layer.kind == "cell" and layer.cell not in ir.cells:
            problems.append(f"macro: layer {n} uses unknown cell {layer.cell!r}")
        positions.append(layer.position)
    if sorted(positions) != list(range(len(positions))):
        problems.append("macro: positions are not 0..n-1")
    if not nx.is_directed_acyclic_graph(ir.macro):
        problems.append("macro: not a DAG")
    return problems
