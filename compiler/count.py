"""How many discrete architectures a space holds, under its selection rule.

The count depends on what the selector may return: DARTS keeps the 2
strongest incoming edges per node and never picks `none`, so a normal cell
has Π_nodes C(in-degree, 2)·7² choices; NAS-Bench-201 takes the argmax on
every edge (5^6 = 15,625); a chain picks one op per layer.
"""

from __future__ import annotations

from math import prod

from nasc.compiler.ir import SpaceIR


def selection_rule(ir: SpaceIR) -> tuple[str, int, frozenset[str]]:
    """(per, k, excluded ops) for the space's selector, filling the conventional defaults."""
    opts = dict(ir.select.options)
    exclude = opts.get("exclude", None)
    per = opts.get("per")
    if per is None:
        multi_input = any(len(g.graph["inputs"]) > 1 for g in ir.cells.values())
        per = "node" if multi_input else "edge"
    if exclude is None:
        exclude = ("none",) if per == "node" else ()
    if isinstance(exclude, str):
        exclude = (exclude,)
    return per, int(opts.get("k", 2)), frozenset(exclude)


def count_group(ir: SpaceIR, group: dict) -> int:
    per, k, exclude = selection_rule(ir)
    sizes = {row["edge"]: len([o for o in row["ops"] if o not in exclude]) or len(row["ops"]) for row in group["rows"]}
    if group["kind"] == "choice" or per in ("edge", "layer"):
        return prod(sizes.values())
    g = ir.cells[group["cell"]]
    total = 1
    for node in g.graph["nodes"]:
        edges = [g.edges[u, node]["edge"].key for u in g.predecessors(node)]
        edges = [e for e in edges if e in sizes]
        if not edges:
            continue
        total *= subset_products([sizes[e] for e in edges], min(k, len(edges)))
    return total


def subset_products(xs: list[int], k: int) -> int:
    """Σ over every k-subset of `xs` of its product (the k-th elementary symmetric polynomial), in O(n·k).

    Listing the subsets took C(n, k) steps: `select top 12 per node` on a 40-node cell hung the compiler.
    """
    e = [1] + [0] * k  # e[j]: the sum over j-subsets of the items seen so far
    for x in xs:
        for j in range(k, 0, -1):
            e[j] += e[j - 1] * x
    return e[k]


def count_architectures(ir: SpaceIR) -> int:
    """Distinct genotypes the selector can return (1 for a space with nothing to search)."""
    return prod(count_group(ir, g) for g in ir.alpha_groups.values())
