"""Selectors: turning a trained supernet into one architecture (a genotype).

`magnitude` is the rule of DARTS and most of its descendants: read each
edge's op strengths (softmax of α, times PC-DARTS' β where the relaxation
has one) and keep, per node, the k strongest incoming edges with their
strongest op (DARTS: k = 2, `none` excluded), or take the argmax on every
edge (NAS-Bench-201) or every chain layer (ProxylessNAS).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from nasc.catalog import selector_names
from nasc.compiler.count import selection_rule
from nasc.compiler.genotype import GenoCell, GenoEdge, Genotype
from nasc.compiler.ir import SpaceIR
from nasc.compiler.remove_dead_nodes import zero_edges
from nasc.errors import BuildError, did_you_mean
from nasc.runtime.registry import Registry, hook_problem

if TYPE_CHECKING:  # only annotations need torch: `nasc compile` checks a space's select options without it
    import torch

    from nasc.runtime.supernet import Network

SELECTORS: Registry[type["Selector"]] = Registry(
    "selector", catalogue=selector_names,
    accepts=(lambda v: isinstance(v, type) and issubclass(v, Selector),
             "a subclass of nasc.runtime.selectors.Selector"),
    calls=lambda v: ("it does not define select(net, ir, **context)" if v.select is Selector.select
                     else hook_problem(v, Selector)))


class Selector:
    """Base class: `select(net, ir)` returns a genotype."""

    name = "selector"
    defaults: dict[str, Any] = {}
    #: option name -> (what its value must be, a test of the value); None values mean "the default"
    checks: dict[str, tuple[str, Callable[[Any], bool]]] = {}

    def __init__(self, options: Mapping[str, Any] | None = None):
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            known = ", ".join(self.defaults) or "none"
            raise BuildError(f"selector {self.name!r} has no option {unknown[0]!r}", hint=f"options: {known}")
        for key, value in options.items():
            what, ok = self.checks.get(key, ("", None))
            if ok is not None and value is not None and not ok(value):
                raise BuildError(f"selector {self.name!r}: option {key} must be {what}, got {value!r}")
        self.options = {**self.defaults, **options}

    def check(self, ir: SpaceIR) -> None:
        """Refuse options that do not fit this space; a search asks before training, not after it."""

    def select(self, net: Network, ir: SpaceIR, **context: Any) -> Genotype:
        raise NotImplementedError


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# the options of the magnitude rule, shared by every selector that ends in it
RULE_CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "k": ("a positive integer", lambda v: is_int(v) and v > 0),
    "per": ("node, edge or layer", lambda v: v in ("node", "edge", "layer")),
    "exclude": ("an op name or a list of op names",
                lambda v: isinstance(v, str) or (isinstance(v, (list, tuple)) and all(isinstance(o, str) for o in v))),
}


def magnitude_rule(options: Mapping[str, Any], ir: SpaceIR) -> tuple[str, int, frozenset[str]]:
    """(per, k, excluded ops): the space's selection rule, with a selector's k / per / exclude on top.

    An excluded name must be a candidate of the space (or one the space's own rule excludes, which the
    compiler has checked): a typo would silently stop excluding `none`.
    """
    per, k, exclude = selection_rule(ir)
    declared = exclude
    if options.get("per") is not None:
        per = options["per"]
        if per == "layer" and not any(info["kind"] == "choice" for info in ir.alpha_groups.values()):
            # as the compiler refuses `select argmax per layer` here: per layer would keep every edge of every cell
            raise BuildError(f"selection per layer, but space {ir.name!r} has no `choice` layers",
                             hint="cells are selected per edge (per=edge) or per node (per=node, k=2)")
    if options.get("k") is not None:
        if per != "node" and options["k"] != k:  # per edge / layer keeps one op each: k would go unread
            raise BuildError(f"selector option k = {options['k']} applies per node (the k strongest edges of each "
                             f"node), but this selection is per {per}, one op per {per}",
                             hint="drop k, or select per node (--select-opt per=node)")
        k = options["k"]
    if options.get("exclude") is not None:
        ex = options["exclude"]
        exclude = frozenset((ex,) if isinstance(ex, str) else ex)
        known = {op for info in ir.alpha_groups.values() for row in info["rows"] for op in row["ops"]}
        unknown = sorted(exclude - known - declared)
        if unknown:
            raise BuildError(f"selector option exclude names {unknown[0]!r}, which is no candidate of space {ir.name!r}",
                             hint=did_you_mean(unknown[0], known) or f"candidates: {', '.join(sorted(known))}")
    return per, k, exclude


def strengths(net: Network, group: str) -> torch.Tensor:
    """Op strengths of a group (rows × candidates), with edge multipliers applied; padding is −1."""
    relax = net.relax
    alpha, mask = net.alphas[group].detach(), net.mask(group)
    extras = {k: v.detach() for k, v in net.extras(group).items()}
    probs = relax.probabilities(alpha, mask, extras, net.group_nodes[group]).clone()
    edge = relax.edge_strengths(alpha, mask, extras, net.group_nodes[group])
    if edge is not None:
        probs = probs * edge.unsqueeze(1)
    return probs.masked_fill(~mask, -1.0)


def _best(row: torch.Tensor, ops: list[str], exclude: frozenset[str]) -> tuple[float, int]:
    allowed = [i for i, o in enumerate(ops) if o not in exclude] or list(range(len(ops)))
    i = max(allowed, key=lambda j: (float(row[j]), -j))
    return float(row[i]), i


def derive(ir: SpaceIR, net: Network, *, per: str, k: int, exclude: frozenset[str],
           probs: Mapping[str, torch.Tensor] | None = None) -> Genotype:
    """The magnitude rule over every α group (probabilities may be supplied, e.g. by a perturbation selector)."""
    cells: dict[str, GenoCell] = {}
    layers: list[tuple[str, str]] = []
    for group, info in ir.alpha_groups.items():
        table = probs[group] if probs is not None else strengths(net, group)
        ops = net.group_ops[group]
        if info["kind"] == "choice":
            _, i = _best(table[0], ops[0], exclude)
            layers.append((info["layers"][0], ops[0][i]))
            continue
        cell = ir.cells[info["cell"]]
        index = {n: cell.nodes[n]["index"] for n in cell.nodes}
        row_of = {key: r for r, key in enumerate(net.group_rows[group])}
        edges: list[GenoEdge] = []
        zeros = zero_edges(ir, info["cell"])
        for node in cell.graph["nodes"]:
            scored = []  # (score, input, op); a fixed edge has no score
            into = [cell.edges[src, node]["edge"] for src in cell.predecessors(node)] or [
                z for z in zeros if z.dst == node]  # a constant-zero node keeps its removed zero edges, fixed
            for e in sorted(into, key=lambda e: index[e.src]):
                src = e.src
                if e.key in row_of:
                    r = row_of[e.key]
                    score, i = _best(table[r], ops[r], exclude)
                    scored.append((score, index[src], ops[r][i]))
                else:
                    scored.append((None, index[src], e.candidates[0]))
            if per == "node":  # the k strongest searched edges; a fixed edge always stays, on top (as the compiler counts)
                searched = sorted((t for t in scored if t[0] is not None), key=lambda t: (-t[0], t[1]))
                scored = searched[:k] + [t for t in scored if t[0] is None]
            edges.extend(GenoEdge(node=index[node], input=src, op=op) for _, src, op in scored)
        out = cell.graph["output"]
        cells[group] = GenoCell(n_inputs=len(cell.graph["inputs"]), n_nodes=len(cell.graph["nodes"]),
                                edges=tuple(edges), concat=tuple(index[n] for n in out.states))
    return Genotype(space=ir.name, fingerprint=ir.meta.get("fingerprint"), cells=cells, layers=tuple(layers))


@SELECTORS.register("magnitude")
class Magnitude(Selector):
    """Strongest ops by α (after softmax): top-k edges per node, or argmax per edge / per layer."""

    name = "magnitude"
    defaults = {"k": None, "per": None, "exclude": None}
    checks = RULE_CHECKS

    def check(self, ir: SpaceIR) -> None:
        magnitude_rule(self.options, ir)

    def select(self, net: Network, ir: SpaceIR, **context: Any) -> Genotype:
        per, k, exclude = magnitude_rule(self.options, ir)
        return derive(ir, net, per=per, k=k, exclude=exclude)


def load_selector(name: str, options: Mapping[str, Any] | None = None) -> Selector:
    """A selector by name, importing a built-in on first use."""
    if name not in SELECTORS:
        from nasc.catalog import BUILTIN_SELECTORS

        if name in BUILTIN_SELECTORS:
            importlib.import_module(BUILTIN_SELECTORS[name])
    return SELECTORS.get(name)(options)
