"""The compiler's one entry point: source → resolved declarations → IR → passes.

`PASSES` lists the passes in order; each is a pure function IR → IR. In
check mode (`NASC_LINT=1`, always on in the tests) `lint` runs after each pass
and a failure names the pass and the ones before it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from nasc.compiler.bind_alpha import bind_alpha
from nasc.compiler.build_ir import build_ir, check_input_shape
from nasc.compiler.check_graph import check_graph
from nasc.compiler.compute_costs import compute_costs
from nasc.compiler.infer_shapes import infer_shapes
from nasc.compiler.ir import SpaceIR, fingerprint, lint
from nasc.compiler.remove_dead_nodes import remove_dead_nodes
from nasc.compiler.resolve import SpaceDecl, resolve_path, resolve_source
from nasc.compiler.settings import check_settings
from nasc.compiler.specialise_ops import specialise_ops
from nasc.errors import NasSemanticError, did_you_mean

Pass = Callable[[SpaceIR], SpaceIR]

PASSES: tuple[Pass, ...] = (
    check_graph,
    specialise_ops,
    remove_dead_nodes,
    infer_shapes,
    bind_alpha,
    compute_costs,
)


@attrs.frozen(kw_only=True)
class PassContext:
    """What the compiler may check names against without importing the runtime."""

    relaxations: frozenset[str] | None = None  # None: do not check
    selectors: frozenset[str] | None = None


def run_passes(ir: SpaceIR, passes: Iterable[Pass] = PASSES, *, check: bool | None = None) -> SpaceIR:
    check = os.environ.get("NASC_LINT") == "1" if check is None else check
    done: list[str] = []
    for p in passes:
        ir = p(ir)
        done.append(p.__name__)
        if check:
            problems = lint(ir)
            if problems:
                raise AssertionError(f"IR lint failed after pass {p.__name__} (ran: {', '.join(done)}): {problems}")
    return ir


def check_methods(ir: SpaceIR, ctx: PassContext) -> None:
    """Unknown relaxation or selector names, reported at the statement with the registered names."""
    for kind, method, known in (("relaxation", ir.relax, ctx.relaxations), ("selector", ir.select, ctx.selectors)):
        if known is None or method.name in known:
            continue
        names = ", ".join(sorted(known))
        guess = did_you_mean(method.name, known)
        raise NasSemanticError(f"unknown {kind} {method.name!r}", span=method.span,
                               hint=f"{guess} (registered: {names})" if guess else f"registered: {names}")


def compile_decl(decl: SpaceDecl, *, params: Mapping[str, Any] | None = None,
                 input_shape: tuple[int, int, int] | None = None, ctx: PassContext | None = None,
                 passes: Iterable[Pass] = PASSES, search: Mapping[str, Any] | None = None) -> SpaceIR:
    """`search`: search settings given outside the file (`--opt affine=true`) on top of its `search:` block,
    so that the passes that read them (`affine`: BN parameters in cells) and the fingerprint see them."""
    shape = check_input_shape(input_shape) if input_shape is not None else None
    ir = build_ir(decl, params)
    ir.search.update(search or {})
    if shape is not None:
        ir.input_shape = shape
    check_settings(ir)
    if ctx is not None:
        check_methods(ir, ctx)
    ir = run_passes(ir, passes)
    ir.meta["fingerprint"] = fingerprint(ir)
    return ir


def compile_space(source: str | Path, *, text: str | None = None, params: Mapping[str, Any] | None = None,
                  input_shape: tuple[int, int, int] | None = None, ctx: PassContext | None = None,
                  passes: Iterable[Pass] = PASSES) -> SpaceIR:
    """Compile a `.nas` file (or bundled space name, or `text` attributed to `source`) to the final IR."""
    try:
        decl = resolve_source(text, str(source)) if text is not None else resolve_path(source)
        return compile_decl(decl, params=params, input_shape=input_shape, ctx=ctx, passes=passes)
    except RecursionError:
        # evaluation recurses over expressions: a sum of a thousand terms must still give an error, not a traceback
        raise NasSemanticError(f"{source}: an expression or definition is nested too deeply to compile",
                               hint="split long expressions and chains of definitions") from None
