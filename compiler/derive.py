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
import networkx as nx

from nasc.compiler.bind_alpha import bind_alpha
from nasc.compiler.compute_costs import compute_costs
from nasc.compiler.count import selection_rule
from nasc.compiler.genotype import Genotype, check_against
from nasc.compiler.infer_shapes import infer_shapes
from nasc.compiler.ir import CellEdge, Output, SpaceIR, fingerprint
from nasc.compiler.remove_dead_nodes import remove_dead_nodes, restore_zero_edges, zero_edges
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
        edges = ir.cell_edges(info["cell"]) + zero_edges(ir, info["cell"])  # a zero node's edges stay fixed ones
        allowed = {(index[e.dst], index[e.src]): set(e.candidates) for e in edges}
        shapes[group] = (len(g.graph["inputs"]), len(g.graph["nodes"]), allowed)
    return shapes


def layer_choices(ir: SpaceIR) -> dict[str, set[str]]:
    return {g: set(info["rows"][0]["ops"]) for g, info in ir.alpha_groups.items() if info["kind"] == "choice"}


def fit_cell_names(ir: SpaceIR, genotype: Genotype) -> Genotype:
    """The genotype with an NB201 string's cell (always read as `cell`) named after the space's one cell.

    An NB201 string carries no cell name, so the string `nasc search` prints for a
    space whose only cell is called, say, `c` must still fit that space.
    """
    groups = [g for g, info in ir.alpha_groups.items() if info["kind"] == "cell"]
    if list(genotype.cells) != ["cell"] or len(groups) != 1 or groups[0] == "cell":
        return genotype
    return attrs.evolve(genotype, cells={groups[0]: genotype.cells["cell"]})


def check_fits(ir: SpaceIR, genotype: Genotype) -> None:
    """Raise one GenotypeError unless the genotype's cells, edges and ops exist in the compiled network."""
    genotype = fit_cell_names(ir, genotype)
    shapes = cell_shapes(ir)
    stacked = [layer.cell for layer in ir.layers() if layer.kind == "cell"]
    for name in genotype.cells:
        if name in shapes or name not in ir.cells:
            continue
        at = ", ".join(f"{k} = {v}" for k, v in ir.params.items())
        kinds = sorted(set(stacked))
        every = f"every cell is a {kinds[0]!r} cell" if len(kinds) == 1 else f"the cells are {kinds}"
        hint = "stack more cells"
        if isinstance(ir.params.get("layers"), int) and ir.params["layers"] < 3:
            hint = ("use layers ≥ 3 (--set layers=3): a DARTS-style network of L cells reduces at L // 3 and "
                    "2L // 3, so with fewer than 3 cells every cell is a reduction cell")
        raise GenotypeError(f"the genotype's cell {name!r} has no place in the network: with {at}, {every} "
                            f"({len(stacked)} cell(s) stacked)", hint=hint)
    try:
        check_against(genotype, shapes, layer_choices(ir) or None)
    except GenotypeError as e:
        if ir.alpha_mode != "per_instance" or e.hint or len(genotype.cells) == len(shapes):
            raise
        raise GenotypeError(e.message, span=e.span,
                            hint=f"with `alpha per instance` a genotype has one cell per cell instance: this one has "
                                 f"{len(genotype.cells)}, the network {len(shapes)}; build as many cells as the "
                                 "search did (e.g. --set layers=...)") from None


def specialise_to_genotype(ir: SpaceIR, genotype: Genotype) -> SpaceIR:
    """The final IR of the network the genotype describes (raises GenotypeError if it does not fit).

    Each cell outputs the states the genotype's `concat` names (as in the official DARTS
    code, the next cells' channels follow); a genotype the space's selection rule could not
    return (another number of edges per node, an excluded op) is built, with a warning in
    `meta["warnings"]`, which keeps the warnings of the space's own compilation too.
    """
    if not ir.alpha_groups:
        raise GenotypeError(f"space {ir.name!r} has no choices; there is nothing for a genotype to decide")
    genotype = fit_cell_names(ir, genotype)
    check_fits(ir, genotype)
    notes = list(ir.meta.get("warnings", [])) + selection_notes(ir, genotype)
    out = restore_zero_edges(ir)  # so that remove_dead_nodes marks the constant-zero nodes again
    per_instance = out.alpha_mode == "per_instance"
    for group, info in ir.alpha_groups.items():
        if info["kind"] == "choice":
            op = dict(genotype.layers)[group]
            lid = info["layers"][0]
            layer = out.macro.nodes[lid]["layer"]
            out.macro.nodes[lid]["layer"] = attrs.evolve(layer, candidates=(op,))
            continue
        name = _own_cell(out, info["cell"], group, info["layers"][0]) if per_instance else info["cell"]
        g = out.cells[name]
        by_index = {g.nodes[n]["index"]: n for n in g.nodes}
        old = {(e.src, e.dst): e for e in out.cell_edges(name)}
        searchable = {k for k, e in old.items() if len(e.candidates) > 1}
        for key in searchable:
            g.remove_edge(*key)
        seen = set()
        for ge in genotype.cells[group].edges:
            src, dst = by_index[ge.input], by_index[ge.node]
            if (src, dst) in seen:  # check_against reports it first; kept as an invariant
                raise GenotypeError(f"cell {group!r}: the edge {ge.input} -> {ge.node} is chosen twice")
            seen.add((src, dst))
            if (src, dst) not in searchable:  # a fixed edge stays whether the genotype names it or not
                continue
            e = old[(src, dst)]
            g.add_edge(src, dst, edge=CellEdge(src=src, dst=dst, index=0, stride=e.stride, candidates=(ge.op,),
                                               span=e.span))
        _renumber(g)
        notes += _set_output(g, group, genotype.cells[group].concat, by_index)
    if per_instance:  # the shared definitions every instance now has its own copy of
        used = {layer.cell for layer in out.layers() if layer.kind == "cell"}
        out.cells = {k: v for k, v in out.cells.items() if k in used}
    out.meta = {"warnings": notes} if notes else {}
    out.impls = {}
    for p in (specialise_ops, remove_dead_nodes):
        out = p(out)
    out = infer_shapes(out, searching=False)
    for p in (bind_alpha, compute_costs):
        out = p(out)
    out.meta["fingerprint"] = fingerprint(out)
    out.meta["genotype_space"] = genotype.space
    return out


def _own_cell(ir: SpaceIR, template: str, group: str, lid: str) -> str:
    """`alpha per instance`: give layer `lid` its own copy of its cell, named after its α group (`cell3`),
    so that each instance can take the genotype's edges for it."""
    name = group if group not in ir.cells else f"{group}_{template}"
    ir.cells[name] = ir.cells[template].copy()
    layer = ir.macro.nodes[lid]["layer"]
    ir.macro.nodes[lid]["layer"] = attrs.evolve(layer, cell=name)
    return name


def _states(indices) -> str:
    return f"concat({', '.join(map(str, indices))})"


def _set_output(g, group: str, concat: tuple[int, ...], by_index: dict[int, str]) -> list[str]:
    """Make the cell output the genotype's `concat`; a note when it differs from the space's output."""
    space_out = g.graph["output"]
    index = {n: i for i, n in by_index.items()}
    wanted = tuple(by_index[i] for i in concat)
    if wanted == space_out.states:
        return []
    was = [index[s] for s in space_out.states]
    if space_out.kind == "node" and len(wanted) > 1:
        raise GenotypeError(f"cell {group!r}: the genotype outputs {_states(concat)}, but the space's cell "
                            f"outputs the single state {was[0]}, so its width cannot change",
                            hint=f"give the cell \"concat\": [{was[0]}] (or one other state)")
    g.graph["output"] = Output(kind=space_out.kind, states=wanted)
    reaching = set(wanted).union(*(nx.ancestors(g, s) for s in wanted))
    unused = [index[n] for n in g.graph["nodes"] if n not in reaching]
    note = (f"cell {group!r} outputs {_states(concat) if len(concat) > 1 else f'state {concat[0]}'} as the genotype "
            f"says, not the space's {_states(was) if space_out.kind == 'concat' else f'state {was[0]}'}")
    if unused:
        note += f"; node(s) {unused} reach no output (computed, as in the official DARTS code, but unused)"
    return [note]


def selection_notes(ir: SpaceIR, genotype: Genotype) -> list[str]:
    """How `genotype` (already known to fit the space) differs from what the space's selection rule returns."""
    per, k, exclude = selection_rule(ir)
    rule = (f"top {k} per node" if per == "node" else f"one op per {per}") + (
        f" excluding {', '.join(sorted(exclude))}" if exclude else "")
    notes: list[str] = []
    for group, info in ir.alpha_groups.items():
        if info["kind"] == "choice":
            op = dict(genotype.layers)[group]
            if op in exclude:
                notes.append(f"layer {group!r}: op {op!r} is one the space's selection rule ({rule}) never picks")
            continue
        g = ir.cells[info["cell"]]
        index = {n: g.nodes[n]["index"] for n in g.nodes}
        searchable = {(index[e.dst], index[e.src]) for e in ir.cell_edges(info["cell"]) if len(e.candidates) > 1}
        cell = genotype.cells[group]
        for e in cell.edges:
            if e.op in exclude:
                notes.append(f"cell {group!r}, edge {e.node}<-{e.input}: op {e.op!r} is one the space's selection "
                             f"rule ({rule}) never picks")
        for node in (index[n] for n in g.graph["nodes"]):
            offered = sorted(i for n, i in searchable if n == node)
            chosen = sorted(e.input for e in cell.incoming(node) if (node, e.input) in searchable)
            if per == "node" and offered and len(chosen) != min(k, len(offered)):
                notes.append(f"cell {group!r}: node {node} has {len(chosen)} chosen edge(s) (from {chosen}); "
                             f"the space's selection rule ({rule}) keeps {min(k, len(offered))}")
            elif per != "node" and chosen != offered:
                missing = [i for i in offered if i not in chosen]
                notes.append(f"cell {group!r}: node {node} has no edge from {missing}; the space's selection rule "
                             f"({rule}) keeps every edge (a missing one is built as `none`)")
    return notes


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
