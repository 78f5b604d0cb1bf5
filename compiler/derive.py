"""Genotype + space → the IR of the derived network (one op per kept edge, evaluation mode).

The derived network is the same space with every searchable choice made:
each cell keeps exactly the genotype's edges with their chosen op, each chain
layer its chosen op; the passes then run again in evaluation mode (affine BN,
no search-only steps), so `nasc train` lowers it with the same code as the
supernet.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from nasc.compiler.bind_alpha import bind_alpha
from nasc.compiler.compute_costs import compute_costs
from nasc.compiler.genotype import Genotype, check_against
from nasc.compiler.infer_shapes import infer_shapes
from nasc.compiler.ir import CellEdge, SpaceIR, fingerprint
from nasc.compiler.remove_dead_nodes import remove_dead_nodes
from nasc.compiler.specialise_ops import specialise_ops
from nasc.errors import GenotypeError


def cell_shapes(ir: SpaceIR) -> dict:
    """What `check_against` needs: per α group, inputs, nodes and the candidates of each edge."""
    shapes = {}
    for group, info in ir.alpha_groups.items():
        if info["kind"] != "cell":
            continue
        g = ir.cells[info["cell"]]
        index = {n: g.nodes[n]["index"] for n in g.nodes}
        allowed = {(index[e.dst], index[e.src]): set(e.candidates) for e in ir.cell_edges(info["cell"])}
        shapes[group] = (len(g.graph["inputs"]), len(g.graph["nodes"]), allowed)
    return shapes


def layer_choices(ir: SpaceIR) -> dict[str, set[str]]:
    return {g: set(info["rows"][0]["ops"]) for g, info in ir.alpha_groups.items() if info["kind"] == "choice"}


def specialise_to_genotype(ir: SpaceIR, genotype: Genotype) -> SpaceIR:
    """The final IR of the network the genotype describes (raises GenotypeError if it does not fit)."""
    if not ir.alpha_groups:
        raise GenotypeError(f"space {ir.name!r} has no choices; there is nothing for a genotype to decide")
    check_against(genotype, cell_shapes(ir), layer_choices(ir) or None)
    out = ir.copy()
    if out.alpha_mode == "per_instance" and any(i["kind"] == "cell" for i in out.alpha_groups.values()):
        raise GenotypeError("deriving a network from a space with `alpha per instance` cells is not supported yet")
    for group, info in ir.alpha_groups.items():
        if info["kind"] == "choice":
            op = dict(genotype.layers)[group]
            lid = info["layers"][0]
            layer = out.macro.nodes[lid]["layer"]
            out.macro.nodes[lid]["layer"] = attrs.evolve(layer, candidates=(op,))
            continue
        g = out.cells[info["cell"]]
        by_index = {g.nodes[n]["index"]: n for n in g.nodes}
        old = {(e.src, e.dst): e for e in out.cell_edges(info["cell"])}
        searchable = {k for k, e in old.items() if len(e.candidates) > 1}
        for key in searchable:
            g.remove_edge(*key)
        seen = set()
        for ge in genotype.cells[group].edges:
            src, dst = by_index[ge.input], by_index[ge.node]
            if (src, dst) in seen:
                raise GenotypeError(f"cell {group!r}: the edge {ge.input} -> {ge.node} is chosen twice")
            seen.add((src, dst))
            if (src, dst) not in searchable:  # a fixed edge stays whether the genotype names it or not
                continue
            e = old[(src, dst)]
            g.add_edge(src, dst, edge=CellEdge(src=src, dst=dst, index=0, stride=e.stride, candidates=(ge.op,),
                                               span=e.span))
        _renumber(g)
    out.meta = {}
    out.impls = {}
    for p in (specialise_ops, remove_dead_nodes):
        out = p(out)
    out = infer_shapes(out, searching=False)
    for p in (bind_alpha, compute_costs):
        out = p(out)
    out.meta["fingerprint"] = fingerprint(out)
    out.meta["genotype_space"] = genotype.space
    return out


def _renumber(g) -> None:
    order = sorted(g.edges, key=lambda e: (g.nodes[e[1]]["index"], g.nodes[e[0]]["index"]))
    for i, (u, v) in enumerate(order):
        e = g.edges[u, v]["edge"]
        g.edges[u, v]["edge"] = attrs.evolve(e, index=i)


def used_ops(genotype: Genotype) -> Iterable[str]:
    for cell in genotype.cells.values():
        for e in cell.edges:
            yield e.op
    for _, op in genotype.layers:
        yield op
