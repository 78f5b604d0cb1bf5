"""Pass: give every (op, stride) pair that the space uses its concrete step list.

An op's `on stride 2:` alternative replaces its pipeline on strided edges and
`stride` is bound inside arguments, so later passes and the runtime see plain
steps. The preprocessing rule is specialised for strides 1 and 2.

Before:  op skip_connect = identity | on stride 2: factorized_reduce   (edge stride 2)
After:   impls["skip_connect@2"] = (factorized_reduce,)
"""

from __future__ import annotations

from nasc.compiler.build_ir import fold_guards
from nasc.compiler.ir import OpTemplate, SpaceIR, Step


def specialise(template: OpTemplate, stride: int) -> tuple[Step, ...]:
    """The template's steps on an edge of `stride`."""
    for (alt_stride, steps), guards in zip(template.alternatives, template.alt_guards):
        if alt_stride == stride:
            return fold_guards(steps, guards, {"stride": stride}, template.span)
    return fold_guards(template.default, template.guards, {"stride": stride}, template.span)


def specialise_ops(ir: SpaceIR) -> SpaceIR:
    out = ir.copy()
    wanted: set[tuple[str, int]] = set()
    for name in out.cells:
        for e in out.cell_edges(name):
            wanted.update((c, e.stride) for c in e.candidates)
    for layer in out.layers():
        if layer.kind == "choice":
            wanted.update((c, layer.stride) for c in layer.candidates)
    out.impls = {f"{op}@{s}": specialise(out.ops[op], s) for op, s in sorted(wanted)}
    if out.preprocess is not None:
        for s in (1, 2):
            out.impls[f"preprocess@{s}"] = specialise(out.preprocess, s)
    return out
