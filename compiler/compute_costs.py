"""Pass: parameters, multiply-adds and activation memory, from shapes alone (no torch).

Costs are per sample and per candidate, so a summary can show what each op
costs on every edge and what the whole supernet holds. Activation memory is
the number of output elements each step produces (what a naive autograd
keeps for backward), times 4 bytes.

Before:  shapes of cell0 (width 16, 32x32), edge n0<-s0 candidates [..., sep_conv_3x3, ...]
After:   meta.costs.layers["cell0"].edges["n0<-s0"]["sep_conv_3x3"] = {params: 608, madds: ..., act: ...}
"""

from __future__ import annotations

from collections import defaultdict

from nasc.compiler.infer_shapes import cell_affine
from nasc.compiler.instantiate import FLOAT_BYTES, Placed, place
from nasc.compiler.ir import SpaceIR
from nasc.compiler.settings import edge_channel_divisor
from nasc.errors import NasSemanticError

# A supernet beyond these cannot be built on any machine: 10^10 fp32 weights are 40 GB before gradients and
# optimiser state, and 1 TiB of activations is for one sample. Such sizes are typos (`C = 200000`), so an error.
MAX_PARAMS = 10**10
MAX_ACT_BYTES = 2**40


def _cost(placed: list[Placed]) -> dict[str, int]:
    return {"params": sum(p.params for p in placed), "madds": sum(p.madds for p in placed),
            "act": sum(p.activation for p in placed) * FLOAT_BYTES}


def _add(total: dict[str, int], cost: dict[str, int]) -> None:
    for k, v in cost.items():
        total[k] = total.get(k, 0) + v


def compute_costs(ir: SpaceIR) -> SpaceIR:
    out = ir.copy()
    searching = out.meta.get("searching", True)
    shapes = out.meta["shapes"]
    layers: dict[str, dict] = {}
    per_op: dict[str, dict[str, int]] = defaultdict(dict)
    total = {"params": 0, "madds": 0, "act": 0}
    divisor = edge_channel_divisor(out) if searching else 1
    for layer in out.layers():
        s = shapes[layer.id]
        entry: dict = {"fixed": {"params": 0, "madds": 0, "act": 0}}
        if layer.kind == "cell":
            affine = cell_affine(out, searching)
            g = out.cells[layer.cell]
            for slot, stride in enumerate(s["pre"]):
                if stride is not None:
                    placed = place(out.impls[f"preprocess@{stride}"], c_in=s["c_in"][slot], c=s["width"],
                                   h=s["h_in"][slot], searching=searching, affine=affine)
                    _add(entry["fixed"], _cost(placed))
            entry["edges"] = {}
            for e in out.cell_edges(layer.cell):
                c, h = s["states"][e.src]
                d = divisor if len(e.candidates) > 1 else 1  # PC-DARTS: candidates see C/k channels
                if c % d or s["width"] % d:  # else an op of C // k channels fails first, far from the cause
                    option = out.relax.name
                    raise NasSemanticError(f"{option} with k = {d} needs edge channels divisible by {d}, got "
                                           f"{c if c % d else s['width']} on edge {e.key} of {layer.id}",
                                           span=out.spans.get("relax"), hint="change C or k")
                ops = {}
                for op in e.candidates:
                    cost = _cost(place(out.impl(op, e.stride), c_in=c // d, c=s["width"] // d, h=h,
                                       searching=searching, affine=affine))
                    ops[op] = cost
                    _add(per_op[op], cost)
                    per_op[op]["count"] = per_op[op].get("count", 0) + 1
                entry["edges"][e.key] = ops
            del g
        elif layer.kind == "choice":
            entry["edges"] = {layer.id: {}}
            for op in layer.candidates:
                cost = _cost(place(out.impl(op, layer.stride), c_in=s["c_in"][0], c=layer.width, h=s["h_in"][0],
                                   searching=searching, affine=True))
                entry["edges"][layer.id][op] = cost
                _add(per_op[op], cost)
                per_op[op]["count"] = per_op[op].get("count", 0) + 1
        else:
            placed = place(layer.steps, c_in=s["c_in"][0], c=s["c_in"][0], h=s["h_in"][0], searching=searching,
                           affine=True)
            entry["fixed"] = _cost(placed)
        _add(total, entry["fixed"])
        for ops in entry.get("edges", {}).values():
            for cost in ops.values():
                _add(total, cost)
        layers[layer.id] = entry
    aux = [l.id for l in out.layers() if l.kind == "aux"]
    total_no_aux = dict(total)
    for a in aux:
        for k, v in layers[a]["fixed"].items():
            total_no_aux[k] -= v
    _check_totals(out, layers, total)
    out.meta["costs"] = {"layers": layers, "per_op": dict(per_op), "total": total, "total_without_aux": total_no_aux}
    return out


def _layer_total(entry: dict, key: str) -> int:
    return entry["fixed"][key] + sum(c[key] for ops in entry.get("edges", {}).values() for c in ops.values())


def _check_totals(ir: SpaceIR, layers: dict[str, dict], total: dict[str, int]) -> None:
    """Runaway totals are errors at the layer that holds the most."""
    for key, limit, what, shown in (("params", MAX_PARAMS, "parameters", "10^10"),
                                    ("act", MAX_ACT_BYTES, "bytes of activations per sample", "1 TiB")):
        if total[key] <= limit:
            continue
        worst = max(layers, key=lambda lid: _layer_total(layers[lid], key))
        layer = ir.macro.nodes[worst]["layer"]
        raise NasSemanticError(f"the supernet would hold {total[key]:.3g} {what}, more than the limit of {shown}",
                               span=layer.span, hint=f"{worst} holds the most ({_layer_total(layers[worst], key):.3g});"
                                                     " lower the width C, the input size or the number of layers")
