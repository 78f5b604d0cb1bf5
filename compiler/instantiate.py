"""Placing an op's steps in a context: concrete arguments, channels, sizes and costs.

Shape inference, the cost model and the runtime's module builder all call
`place`, so a parameter count printed by `nasc compile` is by construction the
one the PyTorch supernet will have.
"""

from __future__ import annotations

from typing import Any

import attrs

from nasc.compiler.expr import as_int, eval_sym, is_sym
from nasc.compiler.ir import Step
from nasc.compiler.primitives import PRIMITIVES
from nasc.errors import NasSemanticError, SourceSpan

FLOAT_BYTES = 4
# Runaway sizes are errors, not hours of allocation followed by a crash (docs/language.md, Errors): far above
# any published search space (DARTS' widest map has 576 channels; ImageNet networks stay below 4,096).
MAX_CHANNELS = 65_536
MIN_KERNEL_LIMIT = 11  # the widest kernel always allowed (DARTS' dilated 5x5 spans 9), see check_kernels


@attrs.frozen(kw_only=True)
class Placed:
    """One primitive with everything known: what the runtime builds and what costs are computed from."""

    prim: str
    args: dict[str, Any]
    c_in: int
    c_out: int
    h_in: int | None
    h_out: int | None
    affine: bool
    params: int
    madds: int
    span: SourceSpan | None = attrs.field(default=None, eq=False)

    @property
    def activation(self) -> int:
        """Elements of this step's output for one sample."""
        return self.c_out * (self.h_out or 1) ** 2


def resolve_args(prim: str, args: dict[str, Any]) -> dict[str, Any]:
    """Fill the primitive's defaults for missing or None arguments (formulas see every key)."""
    out = dict(args)
    for p in PRIMITIVES[prim].params:
        if out.get(p.name) is None and p.default is not None:
            out[p.name] = p.default
    return out


def place(steps: tuple[Step, ...], *, c_in: int, c: int, h: int | None, searching: bool, affine: bool,
          where: str = "") -> list[Placed]:
    """Evaluate `steps` with input channels `c_in`, target channels `c` and input size `h`.

    Steps whose `when` excludes the mode are skipped. Raises `NasSemanticError`
    (pointing at the step) on shapes that cannot work.
    """
    env = {"C": c, "C_in": c_in, "searching": searching, "stride": 1}
    out: list[Placed] = []
    cur_c, cur_h = c_in, h
    for step in steps:
        if step.when == "search" and not searching or step.when == "eval" and searching:
            continue
        spec = PRIMITIVES[step.prim]
        try:
            raw = {k: eval_sym(v, env) if is_sym(v) else v for k, v in step.args}
        except ZeroDivisionError:
            raise NasSemanticError(f"division by zero in {step.prim}'s arguments{where}", span=step.span) from None
        except (ArithmeticError, TypeError) as e:  # e.g. `stride + "a"`, a runaway power
            raise NasSemanticError(f"{step.prim}'s arguments cannot be computed: {e}{where}", span=step.span) from None
        args = resolve_args(step.prim, raw)
        for name in ("out", "k", "stride", "dilation", "groups", "pad"):
            if args.get(name) is not None:
                n = as_int(args[name])
                if n is None or n < (0 if name == "pad" else 1):
                    raise NasSemanticError(f"{step.prim}: {name} = {args[name]!r} is not a valid size{where}",
                                           span=step.span)
                args[name] = n
        problem = spec.check(args)  # values only known here, e.g. `pad = k - 1` inside a family
        if problem:
            raise NasSemanticError(f"{step.prim}: {problem[0]}{where}", span=step.span, hint=problem[1])
        vector_only = step.prim == "linear"
        if vector_only and cur_h is not None:
            raise NasSemanticError(f"linear needs a vector but receives a {cur_c}x{cur_h}x{cur_h} feature map{where}",
                                   span=step.span, hint="put global_avg_pool before it")
        if not vector_only and cur_h is None and step.prim not in ("dropout", "relu", "relu6", "sigmoid", "identity"):
            raise NasSemanticError(f"{step.prim} needs a feature map but receives a vector{where}", span=step.span)
        c_out = spec.channels(cur_c, c, args)
        if step.prim == "flatten":
            c_out = cur_c * (cur_h or 1) ** 2
        elif c_out > MAX_CHANNELS and c_out != cur_c:  # a step that keeps its input's channels is not at fault
            raise NasSemanticError(f"{step.prim} would produce {c_out:,} channels, more than the limit of "
                                   f"{MAX_CHANNELS:,}{where}", span=step.span,
                                   hint="lower the width (the parameter C or this step's `out`)")
        if step.prim == "conv" and (cur_c % args["groups"] or c_out % args["groups"]):
            raise NasSemanticError(f"conv: groups = {args['groups']} must divide {cur_c} and {c_out} channels{where}",
                                   span=step.span)
        if step.prim == "factorized_reduce" and c_out % 2:
            raise NasSemanticError(f"factorized_reduce needs an even channel count, got {c_out}{where}",
                                   span=step.span)
        h_out = spec.spatial(cur_h, args) if cur_h is not None else None
        if h_out is not None and h_out < 1:
            raise NasSemanticError(f"{step.prim} shrinks the feature map below 1x1 (input {cur_h}x{cur_h}){where}",
                                   span=step.span, hint="the input resolution is too small for this network")
        bn_affine = args.get("affine") if step.prim == "bn" and args.get("affine") is not None else affine
        params = spec.n_params(cur_c, c_out, args, bn_affine)
        madds = spec.madds(cur_c, c_out, h_out, args)
        out.append(Placed(prim=step.prim, args=args, c_in=cur_c, c_out=c_out, h_in=cur_h, h_out=h_out,
                          affine=bn_affine, params=params, madds=madds, span=step.span))
        cur_c, cur_h = c_out, h_out
    return out


def check_kernels(placed: list[Placed], h_net: int, where: str = "") -> None:
    """A kernel wider than twice the network's input (plus one) has taps that touch no pixel anywhere.

    Maps never grow past the input (short of explicit padding), and a "same"-padded kernel of
    2·H − 1 already sees the whole map from every position; beyond 2·H + 1 it is only dead weight
    (`sep_conv_999999x999999` on 32x32 would hold 10^12 weights). Small maps deep in a network
    (DARTS' 9-wide dilated 5x5 on 2x2 maps of an 8x8 input) stay legal: the bound is the input's,
    and kernels up to MIN_KERNEL_LIMIT wide are always allowed, so a bundled op set fits even a 2x2 input.
    """
    for p in placed:
        if p.h_in is None or "k" not in p.args:
            continue
        size = p.args.get("dilation", 1) * (p.args["k"] - 1) + 1
        h = max(h_net, p.h_in)
        limit = max(2 * h + 1, MIN_KERNEL_LIMIT)
        if size > limit:
            what = f"a {p.args['k']}x{p.args['k']} kernel" + (f" (dilated to {size})" if size != p.args["k"] else "")
            why = f"twice the {h}x{h} input plus one" if limit > MIN_KERNEL_LIMIT else "the limit on any input"
            raise NasSemanticError(f"{p.prim}: {what} is wider than {limit}, {why}{where}", span=p.span,
                                   hint="taps of a wider kernel never touch a pixel; use a smaller kernel")


def output_shape(placed: list[Placed], c_in: int, h: int | None) -> tuple[int, int | None]:
    if not placed:
        return c_in, h
    return placed[-1].c_out, placed[-1].h_out
