"""Pass: decide which searchable choices share architecture parameters.

`alpha shared per cell` (the default; DARTS) gives one α matrix per cell type,
shared by every instance; `alpha per instance` gives each cell its own. Every
chain `choice` block has its own row (ProxylessNAS). Edges with a single
candidate are not searchable and get no α.

Before:  8 cell layers of normal/reduce, alpha shared per cell
After:   alpha_groups = {"normal": {kind: cell, cell: normal, rows: [14 edges], layers: [6 ids]},
                         "reduce": {...}}
"""

from __future__ import annotations

from nasc.compiler.ir import SpaceIR


def bind_alpha(ir: SpaceIR) -> SpaceIR:
    out = ir.copy()
    groups: dict[str, dict] = {}
    for layer in out.layers():
        if layer.kind == "cell":
            edges = [e for e in out.cell_edges(layer.cell) if len(e.candidates) > 1]
            if not edges:
                continue
            key = layer.cell if out.alpha_mode == "per_cell" else layer.id
            group = groups.setdefault(key, {"kind": "cell", "cell": layer.cell, "layers": [],
                                            "rows": [{"edge": e.key, "ops": list(e.candidates)} for e in edges]})
            group["layers"].append(layer.id)
        elif layer.kind == "choice" and len(layer.candidates) > 1:
            groups[layer.id] = {"kind": "choice", "layers": [layer.id],
                                "rows": [{"edge": layer.id, "ops": list(layer.candidates)}]}
    out.alpha_groups = groups
    return out
