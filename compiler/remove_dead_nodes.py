"""Pass: drop edges that can only ever produce zeros, and nodes left with no input.

A searchable edge always keeps its row of α, but an edge whose *only*
candidate is a zero op (as in a derived NAS-Bench-201 cell with `none`
chosen) adds nothing to its node, so the network need not compute it. Into a
`mean` node it still counts: (x + 0) / 2 is not x / 1, so those edges stay. A node
whose every incoming edge was dropped is a constant zero: it is kept as a
state (its channels still count in a concat) and marked `zero` in
`ir.meta["zero_nodes"]` so the runtime emits zeros without computing. The
removed edges into such a node are kept in `ir.meta["zero_sources"]` (source,
op, stride) so that `infer_shapes` gives it the shape those zero ops would
have produced: in a reduction cell, the reduced resolution.

Before:  edge x0 -> x1: [none]; edge x0 -> x2: [conv]; edge x1 -> x2: [conv]
After:   edges x0 -> x2, x1 -> x2;  meta.zero_nodes = {"cell": ["x1"]}
         meta.zero_sources = {"cell": {"x1": [["x0", "none", 1]]}}
"""

from __future__ import annotations

import attrs

from nasc.compiler.ir import CellEdge, SpaceIR


def _is_zero(ir: SpaceIR, op: str, stride: int) -> bool:
    steps = ir.impls.get(f"{op}@{stride}", ())
    return len(steps) >= 1 and steps[-1].prim == "zero" and all(s.prim in ("zero", "relu", "identity") for s in steps)


def remove_dead_nodes(ir: SpaceIR) -> SpaceIR:
    out = ir.copy()
    zero_nodes: dict[str, list[str]] = {}
    removed: dict[str, list[str]] = {}
    sources: dict[str, dict[str, list[list]]] = {}
    for name, g in out.cells.items():
        for e in out.cell_edges(name):
            if g.nodes[e.dst].get("combine") == "mean":
                continue
            if len(e.candidates) == 1 and _is_zero(out, e.candidates[0], e.stride):
                g.remove_edge(e.src, e.dst)
                removed.setdefault(name, []).append(e.key)
                sources.setdefault(name, {}).setdefault(e.dst, []).append([e.src, e.candidates[0], e.stride])
        if name in removed:
            # α rows are only meaningful for searchable edges; renumber the rest densely
            for i, e in enumerate(sorted((d["edge"] for _, _, d in g.edges(data=True)), key=lambda e: e.index)):
                g.edges[e.src, e.dst]["edge"] = type(e)(src=e.src, dst=e.dst, index=i, stride=e.stride,
                                                        candidates=e.candidates, span=e.span)
            zero_nodes[name] = sorted(n for n in g.graph["nodes"] if g.in_degree(n) == 0)
    if removed:
        out.meta["removed_edges"] = removed
        out.meta["zero_nodes"] = {k: v for k, v in zero_nodes.items() if v}
        out.meta["zero_sources"] = {k: {n: sources[k][n] for n in v} for k, v in zero_nodes.items() if v}
    return out


def zero_edges(ir: SpaceIR, cell: str) -> list[CellEdge]:
    """The edges this pass removed into the constant-zero nodes of `cell` (index -1: no α row).

    They are still the space's fixed edges: a genotype keeps them (a node needs an input).
    """
    return [CellEdge(src=src, dst=dst, index=-1, stride=stride, candidates=(op,))
            for dst, sources in ir.meta.get("zero_sources", {}).get(cell, {}).items() for src, op, stride in sources]


def restore_zero_edges(ir: SpaceIR) -> SpaceIR:
    """A copy of `ir` with the edges into its constant-zero nodes put back.

    A rewrite that runs the passes again from fresh `meta` (a genotype's network, a narrowed
    P-DARTS stage) starts from here, so that this pass marks the same nodes zero again, with
    the shapes their zero ops give; without the edges, a zero node of a reduction cell would
    take the cell's input resolution.
    """
    out = ir.copy()
    for name, g in out.cells.items():
        edges = zero_edges(ir, name)
        for e in edges:
            g.add_edge(e.src, e.dst, edge=e)
        index = {n: g.nodes[n]["index"] for n in g.nodes}
        for i, (u, v) in enumerate(sorted(g.edges, key=lambda e: (index[e[1]], index[e[0]])) if edges else ()):
            g.edges[u, v]["edge"] = attrs.evolve(g.edges[u, v]["edge"], index=i)  # α rows by (node, input)
    return out
