"""The facts `nasc compile` reports about a space, as plain data."""

from __future__ import annotations

from typing import Any

from nasc.compiler.count import count_architectures, selection_rule
from nasc.compiler.expr import to_json
from nasc.compiler.ir import SpaceIR


def describe_macro(ir: SpaceIR) -> str:
    """`stem > 8 cells (reduce at 2, 5) > head`, compactly."""
    parts: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            # each other cell type is named with its own positions: two stacks of different cells
            # (normal, reduce, then a stack of `light`) must not read as reductions at light's place
            others: dict[str, list[int]] = {}
            for i, c in enumerate(run):
                if c != run[0]:
                    others.setdefault(c, []).append(i)
            desc = f"{len(run)} x {run[0]}"
            if others:
                desc += " (" + "; ".join(f"{c} at {', '.join(map(str, pos))}" for c, pos in others.items()) + ")"
            parts.append(desc)
            run.clear()

    for layer in ir.layers():
        if layer.kind == "cell":
            run.append(layer.cell)
            continue
        flush()
        if layer.kind == "choice":
            blocks = int(parts.pop().split()[0]) + 1 if parts and parts[-1].endswith("choice blocks") else 1
            parts.append(f"{blocks} choice blocks")
        elif layer.kind != "aux":
            parts.append(layer.kind)
    flush()
    return " > ".join(parts)


def summarise(ir: SpaceIR) -> dict[str, Any]:
    costs = ir.meta["costs"]
    per, k, exclude = selection_rule(ir)
    cells = []
    for name, g in sorted(ir.cells.items()):
        edges = ir.cell_edges(name)
        sizes = sorted({len(e.candidates) for e in edges})
        cells.append({
            "name": name,
            "inputs": list(g.graph["inputs"]),
            "nodes": len(g.graph["nodes"]),
            "edges": len(edges),
            "candidates": sizes[0] if len(sizes) == 1 else sizes,
            "reduction": g.graph["input_stride"] > 1,
            "instances": sum(1 for l in ir.layers() if l.cell == name),
            "output": g.graph["output"].kind,
        })
    return {
        "space": ir.name,
        "fingerprint": ir.meta["fingerprint"],
        "input": list(ir.input_shape),
        "params": to_json(ir.params),
        "network": describe_macro(ir),
        "cells": cells,
        "choice_layers": sum(1 for l in ir.layers() if l.kind == "choice"),
        "alpha": {"mode": ir.alpha_mode,
                  "groups": {g: [len(v["rows"]), max(len(r["ops"]) for r in v["rows"])]
                             for g, v in ir.alpha_groups.items()}},
        "architectures": count_architectures(ir),
        "supernet_params": costs["total_without_aux"]["params"],
        "supernet_madds": costs["total_without_aux"]["madds"],
        "activation_bytes_per_sample": costs["total_without_aux"]["act"],
        "aux_params": costs["total"]["params"] - costs["total_without_aux"]["params"],
        "per_op": {op: dict(v) for op, v in sorted(costs["per_op"].items())},
        "relax": ir.relax.to_json(),
        "select": {**ir.select.to_json(), "rule": {"per": per, "k": k, "exclude": sorted(exclude)}},
        "search": {k2: to_json(v) for k2, v in sorted(ir.search.items())},
    }
