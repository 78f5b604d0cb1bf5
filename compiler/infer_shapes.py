"""Pass: channels and resolution of every macro layer, cell input and cell state.

Cells read the outputs of earlier layers; an input that arrives at a higher
resolution than the cell's newest input is brought down by the preprocessing
rule at stride 2 (DARTS' FactorizedReduce after a reduction cell). Every edge
into a node must agree on channels and resolution; a concat output sums the
channels of its states.

Before:  stem conv(3, out=48) > bn;  stack 8 x normal, reduce at [2, 5], widen 2 at reduce
After:   meta.shapes["cell2"] = {c_in: [48, 64], h_in: [32, 32], pre: [1, 1], width: 32,
                                 c_out: 128, h_out: 16, states: {...}}
"""

from __future__ import annotations

from typing import Any

import attrs

from nasc.compiler.instantiate import MAX_CHANNELS, check_kernels, output_shape, place
from nasc.compiler.ir import Layer, SpaceIR
from nasc.errors import NascError, NasSemanticError


def _place(ir: SpaceIR, steps, **kw):
    placed = place(steps, **kw)
    check_kernels(placed, ir.input_shape[1], kw.get("where", ""))
    return placed


def cell_affine(ir: SpaceIR, searching: bool) -> bool:
    """BN inside cells is affine-free during search (DARTS, NB201), unless the space says otherwise."""
    return bool(ir.search.get("affine", False)) or not searching


def _cell_shapes(ir: SpaceIR, layer: Layer, c_in: list[int], h_in: list[int | None], searching: bool) -> dict:
    g = ir.cells[layer.cell]
    width = layer.width
    where = f" (in {layer.id}, cell {layer.cell!r})"
    inputs = g.graph["inputs"]
    h_cell = h_in[-1]
    pre: list[int | None] = []
    states: dict[str, tuple[int, int | None]] = {}
    affine = cell_affine(ir, searching)
    for slot, name in enumerate(inputs):
        c, h = c_in[slot], h_in[slot]
        if h is None or h_cell is None:
            raise NasSemanticError(f"cell input {name!r} receives a vector{where}", span=layer.span)
        # a stride-2 step maps h to ceil(h / 2) (DARTS pads odd sizes), so 33x33 before a reduction feeds 17x17
        ratio = 1 if h == h_cell else 2 if (h + 1) // 2 == h_cell else 0
        if not ratio:
            raise NasSemanticError(f"cell input {name!r} has resolution {h}x{h} but the cell works at "
                                   f"{h_cell}x{h_cell}{where}", span=layer.span)
        if ir.preprocess is None:
            if ratio != 1 or c != width:
                raise NasSemanticError(
                    f"cell input {name!r} receives {c} channels at {h}x{h} but the cell expects {width} at "
                    f"{h_cell}x{h_cell}{where}", span=layer.span,
                    hint="add a `preprocess` rule to the network, e.g. `preprocess relu > conv(1) > bn`")
            pre.append(None)
            states[name] = (c, h)
            continue
        steps = ir.impls[f"preprocess@{ratio}"]
        placed = _place(ir, steps, c_in=c, c=width, h=h, searching=searching, affine=affine, where=where)
        c2, h2 = output_shape(placed, c, h)
        if (c2, h2) != (width, h_cell):
            raise NasSemanticError(f"preprocessing input {name!r} gives {c2} channels at {h2}x{h2}, "
                                   f"expected {width} at {h_cell}x{h_cell}{where}", span=ir.preprocess.span)
        pre.append(ratio)
        states[name] = (width, h_cell)
    for node in g.graph["nodes"]:
        shapes = {}
        for src in sorted(g.predecessors(node), key=lambda n: g.nodes[n]["index"]):
            e = g.edges[src, node]["edge"]
            c, h = states[src]
            for op in e.candidates:
                placed = _place(ir, ir.impl(op, e.stride), c_in=c, c=width, h=h, searching=searching, affine=affine,
                               where=f" (op {op!r} on edge {e.key} in {layer.id}, cell {layer.cell!r})")
                shapes[(src, op)] = output_shape(placed, c, h)
                if shapes[(src, op)][1] is None:  # said here, at the edge, not as `NonexNone` or at the next cell
                    raise NasSemanticError(f"op {op!r} on edge {e.key} turns the feature map into a vector{where}",
                                           span=e.span, hint="cell edges must output feature maps: pooling to a "
                                           "vector (global_avg_pool, flatten, linear) belongs in the head")
        distinct = set(shapes.values())
        if not distinct:  # a constant-zero node: the shape its removed zero edges would have given
            for src, op, stride in ir.meta.get("zero_sources", {}).get(layer.cell, {}).get(node, ()):
                c, h = states[src]
                placed = _place(ir, ir.impl(op, stride), c_in=c, c=width, h=h, searching=searching, affine=affine,
                               where=f" (op {op!r} on edge {node}<-{src} in {layer.id}, cell {layer.cell!r})")
                shapes[(src, op)] = output_shape(placed, c, h)
            distinct = set(shapes.values()) or {(width, h_cell)}
        if len(distinct) > 1:
            desc = "; ".join(f"{op} from {src}: {c}x{h}x{h}" for (src, op), (c, h) in sorted(shapes.items()))
            first = next(iter(shapes))[0]
            span = g.edges[first, node]["edge"].span if g.has_edge(first, node) else layer.span
            raise NasSemanticError(f"inputs of node {node!r} disagree in shape{where}: {desc}", span=span,
                                   hint="edges into one node need the same channels and stride")
        states[node] = distinct.pop()
    out = g.graph["output"]
    res = {states[s][1] for s in out.states}
    if len(res) > 1:
        raise NasSemanticError(f"the output of cell {layer.cell!r} mixes resolutions {sorted(res)}{where}",
                               span=g.graph.get("output_span", layer.span))
    c_out = sum(states[s][0] for s in out.states) if out.kind == "concat" else states[out.states[0]][0]
    if c_out > MAX_CHANNELS:
        raise NasSemanticError(f"the output of cell {layer.cell!r} has {c_out:,} channels, more than the limit of "
                               f"{MAX_CHANNELS:,}{where}", span=g.graph.get("output_span", layer.span),
                               hint="lower the width (the parameter C, `width` or `widen`)")
    return {"c_in": c_in, "h_in": h_in, "pre": pre, "width": width, "c_out": c_out, "h_out": res.pop(),
            "states": {k: list(v) for k, v in states.items()}}


def infer_shapes(ir: SpaceIR, *, searching: bool = True) -> SpaceIR:
    out = ir.copy()
    shapes: dict[str, Any] = {}
    errors: list[NascError] = []
    c0, h0, _ = out.input_shape
    warnings: list[str] = []
    for layer in out.layers():
        preds = sorted(out.macro.in_edges(layer.id, data=True), key=lambda e: e[2]["slot"])
        if preds:
            c_in = [shapes[u]["c_out"] for u, _, _ in preds]
            h_in = [shapes[u]["h_out"] for u, _, _ in preds]
        else:
            c_in, h_in = [c0], [h0]
        try:
            if layer.kind == "cell":
                shapes[layer.id] = _cell_shapes(out, layer, c_in, h_in, searching)
            elif layer.kind == "choice":
                per_op = {}
                for op in layer.candidates:
                    placed = _place(out, out.impl(op, layer.stride), c_in=c_in[0], c=layer.width, h=h_in[0],
                                   searching=searching, affine=True, where=f" (op {op!r} in {layer.id})")
                    per_op[op] = output_shape(placed, c_in[0], h_in[0])
                if len(set(per_op.values())) > 1:
                    desc = "; ".join(f"{op}: {c}x{h}x{h}" for op, (c, h) in per_op.items())
                    raise NasSemanticError(f"candidates of {layer.id} disagree in shape: {desc}", span=layer.span)
                c, h = next(iter(per_op.values()))
                if layer.residual and (c, h) != (c_in[0], h_in[0]):
                    raise NasSemanticError(f"{layer.id} has a residual shortcut but changes the shape", span=layer.span)
                shapes[layer.id] = {"c_in": c_in, "h_in": h_in, "c_out": c, "h_out": h}
            else:
                placed = _place(out, layer.steps, c_in=c_in[0], c=c_in[0], h=h_in[0], searching=searching, affine=True,
                               where=f" (in {layer.id})")
                c, h = output_shape(placed, c_in[0], h_in[0])
                shapes[layer.id] = {"c_in": c_in, "h_in": h_in, "c_out": c, "h_out": h}
        except NasSemanticError as e:
            if layer.kind == "aux":
                # the auxiliary head only matters for training a derived network; an input too small
                # for it (e.g. 8x8 digits) should not stop a search, so it is dropped with a warning
                warnings.append(f"auxiliary head dropped: {e.message}")
                out.macro.remove_node(layer.id)
                continue
            errors.extend(e.errors)
            break
    if not errors:
        errors.extend(_check_heads(out, shapes))
    if errors:
        raise NasSemanticError(errors[0].message, span=errors[0].span, hint=errors[0].hint, errors=errors)
    if warnings:
        for i, layer in enumerate(out.layers()):  # keep positions dense after a removal
            out.macro.nodes[layer.id]["layer"] = attrs.evolve(layer, position=i)
        out.meta["warnings"] = out.meta.get("warnings", []) + warnings  # after those of earlier compilations
    out.meta["shapes"] = shapes
    out.meta["searching"] = searching
    return out


def _check_heads(ir: SpaceIR, shapes: dict[str, Any]) -> list[NascError]:
    """The head, and any auxiliary head, must end in class scores, the same number of them."""
    errors: list[NascError] = []
    head = [l for l in ir.layers() if l.kind == "head"]
    for layer in head + [l for l in ir.layers() if l.kind == "aux"]:
        s = shapes[layer.id]
        what = "the head" if layer.kind == "head" else "the auxiliary head"
        if s["h_out"] is not None:
            errors.append(NasSemanticError(
                f"{what} ends with a {s['c_out']}x{s['h_out']}x{s['h_out']} feature map, not class scores",
                span=layer.span, hint="end it with `global_avg_pool > linear(classes)` (or `flatten > linear(classes)`)"))
        elif head and layer.kind == "aux" and s["c_out"] != shapes[head[0].id]["c_out"]:
            errors.append(NasSemanticError(
                f"the auxiliary head gives {s['c_out']} scores but the head gives {shapes[head[0].id]['c_out']}",
                span=layer.span, hint="end both with `linear(classes)`"))
    return errors
