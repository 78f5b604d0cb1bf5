"""Pass: every cell is a DAG whose nodes all have inputs and all reach the output.

Before:  cell c(x): nodes a, b;  edge x -> a;  edge b -> a;  edge a -> b;  output a
After:   error at `edge b -> a`: "edge b -> a closes a cycle (a -> b -> a)"
"""

from __future__ import annotations

import networkx as nx

from nasc.compiler.ir import SpaceIR
from nasc.errors import NascError, NasSemanticError


def check_graph(ir: SpaceIR) -> SpaceIR:
    """Validate each cell graph; collects every problem into one error."""
    errors: list[NascError] = []
    for name, g in sorted(ir.cells.items()):
        span = g.graph.get("span")
        if not nx.is_directed_acyclic_graph(g):
            cycle = nx.find_cycle(g)
            u, v = cycle[-1][0], cycle[-1][1]
            path = " -> ".join([c[0] for c in cycle] + [cycle[0][0]])
            errors.append(NasSemanticError(f"cell {name!r}: edge {u} -> {v} closes a cycle ({path})",
                                           span=g.edges[u, v]["edge"].span,
                                           hint="edges must go from earlier states to later nodes"))
            continue
        # acyclic is not enough: states are computed (and numbered in genotypes) in declaration order
        backward = [(u, v) for u, v in g.edges if g.nodes[u]["index"] > g.nodes[v]["index"]]
        if backward:
            u, v = min(backward, key=lambda e: (g.nodes[e[1]]["index"], g.nodes[e[0]]["index"]))
            errors.append(NasSemanticError(f"cell {name!r}: edge {u} -> {v} goes from a later node to an earlier one",
                                           span=g.edges[u, v]["edge"].span,
                                           hint=f"edges must go from earlier states to later nodes; "
                                                f"declare {u!r} before {v!r}"))
            continue
        nodes = [n for n in g.nodes if g.nodes[n]["kind"] == "node"]
        if not nodes:
            errors.append(NasSemanticError(f"cell {name!r} has no intermediate nodes", span=span,
                                           hint="add e.g. `nodes n0..n3 = sum`"))
            continue
        out = g.graph["output"]
        if not out.states:
            errors.append(NasSemanticError(f"cell {name!r} outputs nothing", span=g.graph.get("output_span", span)))
            continue
        for n in nodes:
            if g.in_degree(n) == 0:
                errors.append(NasSemanticError(f"cell {name!r}: node {n!r} has no incoming edge",
                                               span=g.nodes[n].get("span", span),
                                               hint=f"add `edge <state> -> {n}: <ops>` or `edges dense: <ops>`"))
        reaching = set(out.states)
        for s in out.states:
            reaching |= nx.ancestors(g, s)
        for n in nodes:
            if n not in reaching:
                errors.append(NasSemanticError(f"cell {name!r}: node {n!r} does not reach the cell output",
                                               span=g.nodes[n].get("span", span),
                                               hint="use it in `output concat(...)` or feed it into a later node"))
        for i in g.graph["inputs"]:
            if i in out.states:
                continue
            if g.out_degree(i) == 0 and g.graph["input_stride"] == 1 and len(g.graph["inputs"]) == 1:
                errors.append(NasSemanticError(f"cell {name!r}: input {i!r} is never read", span=span))
    if errors:
        raise NasSemanticError(errors[0].message, span=errors[0].span, hint=errors[0].hint, errors=errors)
    return ir
