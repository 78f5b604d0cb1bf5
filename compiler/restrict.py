"""Pass-like rewrite: narrow the candidate sets of searchable edges (P-DARTS' search-space approximation).

Progressive DARTS (Chen et al., ICCV 2019) keeps, after each stage, only the
strongest few ops of every edge; the next stage searches the same space with
those smaller candidate sets. `restrict_candidates` is that rewrite on the IR:
the cells' (or chain layers') candidate tuples shrink to the given subsets, in
their declared order, and the passes after `check_graph` run again, so the
α groups, shapes and costs describe the narrowed supernet. Like the passes it
is pure: the input IR is left unchanged.

Before:  edge n0<-s0: [none, max_pool_3x3, ..., dil_conv_5x5]   (8 ops, α row of 8)
After:   restrict_candidates(ir, {"normal": {"n0<-s0": ["skip_connect", "sep_conv_3x3"]}})
         edge n0<-s0: [skip_connect, sep_conv_3x3]               (α row of 2)

An edge restricted to a single op stops being searchable (no α row), as in any
space. Subsets are checked: an op the edge does not offer, an empty subset or
an unknown group/edge is an error naming it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from nasc.compiler.bind_alpha import bind_alpha
from nasc.compiler.compute_costs import compute_costs
from nasc.compiler.infer_shapes import infer_shapes
from nasc.compiler.ir import SpaceIR, fingerprint
from nasc.compiler.remove_dead_nodes import remove_dead_nodes, restore_zero_edges
from nasc.compiler.specialise_ops import specialise_ops
from nasc.errors import NascError, did_you_mean

Restriction = Mapping[str, Mapping[str, Iterable[str]]]


def _narrow(current: tuple[str, ...], keep: Iterable[str], where: str) -> tuple[str, ...]:
    wanted = list(keep)
    unknown = [op for op in wanted if op not in current]
    if unknown:
        raise NascError(f"{where}: op {unknown[0]!r} is not a candidate there",
                        hint=did_you_mean(unknown[0], current) or f"candidates: {', '.join(current)}")
    narrowed = tuple(op for op in current if op in wanted)  # declared order, duplicates ignored
    if not narrowed:
        raise NascError(f"{where}: a restriction must keep at least one op")
    return narrowed


def restrict_candidates(ir: SpaceIR, keep: Restriction) -> SpaceIR:
    """The IR with each listed edge's candidates cut to `keep[group][edge_key]` (edges not listed stay)."""
    out = restore_zero_edges(ir)  # the passes run again from fresh meta: its constant-zero nodes keep their shapes
    for group, edges in keep.items():
        info = ir.alpha_groups.get(group)
        if info is None:
            raise NascError(f"no α group {group!r} to restrict",
                            hint=did_you_mean(group, list(ir.alpha_groups)) or
                            f"groups: {', '.join(ir.alpha_groups) or 'none'}")
        if info["kind"] == "choice":
            lid = info["layers"][0]
            for key, ops in edges.items():
                if key != lid:
                    raise NascError(f"group {group!r} is the chain layer {lid!r}; it has no edge {key!r}")
                layer = out.macro.nodes[lid]["layer"]
                out.macro.nodes[lid]["layer"] = attrs.evolve(
                    layer, candidates=_narrow(layer.candidates, ops, f"layer {lid}"))
            continue
        cell = info["cell"]
        g = out.cells[cell]
        by_key = {e.key: e for e in out.cell_edges(cell)}
        for key, ops in edges.items():
            e = by_key.get(key)
            if e is None:
                raise NascError(f"cell {cell!r} has no edge {key!r}",
                                hint=did_you_mean(key, list(by_key)) or f"edges: {', '.join(by_key)}")
            g.edges[e.src, e.dst]["edge"] = attrs.evolve(
                e, candidates=_narrow(e.candidates, ops, f"edge {key} of cell {cell!r}"))
    # the passes recompute shapes and costs; warnings stay (a dropped auxiliary head is not dropped again)
    out.meta = {"warnings": list(ir.meta["warnings"])} if ir.meta.get("warnings") else {}
    out.impls = {}
    for p in (specialise_ops, remove_dead_nodes, infer_shapes, bind_alpha, compute_costs):
        out = p(out)
    out.meta["fingerprint"] = fingerprint(out)
    out.meta["restricted"] = {g: {k: list(v) for k, v in edges.items()} for g, edges in keep.items()}
    return out
