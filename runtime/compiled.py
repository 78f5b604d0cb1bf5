"""`torch.compile` for a supernet's cells, each checked against the eager cell before it is used.

Why per cell, not the whole network: a cell that fails to compile, or compiles
to something wrong, falls back alone, and says which it was; the stem, the head
and the α softmax are a handful of operators and stay eager.

Why checked: a compiler is a second implementation of the maths, and it can be
wrong. So before a compiled cell is trusted, it runs one forward and backward
on the step's own input shapes, from the same BN statistics, beside the eager
cell and beside a float64 copy of the cell. Its output, its input, α and weight
gradients and its updated BN statistics must be about as close to the float64
answer as the eager cell's are; otherwise the cell stays eager and the run's
config.json says why. Comparing with eager alone is not enough: a supernet
cell has quantities that are zero up to rounding (the running mean of a pooled,
already normalised state) and gradients that cancel badly (a convolution's,
through an affine-free BN), where two correct fp32 programs differ by 40% of
the value.

Why only for the checked shapes, in training: every other shape, evaluation
mode or no-grad pass is another compilation (minutes per cell on a CPU) and
one nobody checked, so those passes run the eager cell, as batches of another
shape skip CUDA graph replay (runtime/step.py).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nasc.runtime.relaxations.base import GroupWeights, Relaxation

#: torch.compile backend; tests swap in "aot_eager" (the same graphs without code generation, fast)
BACKEND = "inductor"
#: a compiled cell may be this many times further from the float64 answer than the eager cell is ...
SLACK = 10.0
#: ... or this far, relative to the largest value of the float64 answer, whichever is larger
TOLERANCE = {"fp32": 1e-4, "bf16": 1e-2}


def compile_blocker(net: nn.Module, relax: Relaxation, cfg: Any, stage: int = 0) -> str | None:
    """Why this search (stage `stage` of a progressive one) runs its cells eagerly; None when they are compiled.

    A P-DARTS stage's skip dropout is installed after this is asked (runtime/progressive.py), so it is read from
    the stage's settings: compiled with p = 0, its cells were recompiled unchecked once p changed.
    """
    if cfg.torch_compile is None:
        return ("auto: off (compiling takes minutes per cell shape, and the compiled step was no faster on "
                "a CPU; torch_compile = true turns it on)")
    if cfg.torch_compile is False:
        return "turned off (torch_compile = false)"
    if not vars(type(relax)).get("graph_safe", False):  # declared by the class itself, never inherited
        return f"the {relax.name} relaxation changes the network from step to step, so its cells would recompile"
    if cfg.drop_path:  # Cell.run keeps compiled code to drop_prob = 0: it would run in the first epoch only
        return "search drop path (drop_path) rises from 0 after the first epoch, and the cells were compiled without it"
    if getattr(net, "memory_mode", "plain") == "recompute":
        return "recompute mode: its checkpointed edges break the compiled graph (memory = plain compiles)"
    from nasc.runtime.ops import Noise

    if any(isinstance(m, (Noise, nn.Dropout)) for m in net.modules()):
        return "the space has random candidates (noise, dropout)"
    if stage < len(cfg.stages) and cfg.stages[stage].get("skip_dropout", 0):
        return "the stage drops out its skip connections (skip_dropout), a random candidate"
    return None


def compile_cells(net: nn.Module, example: torch.Tensor, *, autocast: Callable[[], Any], precision: str = "fp32",
                  backend: str | None = None) -> dict[str, str]:
    """Compile every cell of `net` for the shapes `example` gives them; per cell, "compiled" or why eager.

    `net` must be in training mode with its relaxation in the weight phase; its
    parameters, buffers and RNG-free state are left as they were.
    """
    from nasc.runtime.supernet import Cell

    cells = {lid: m for lid, m in net.layers.items() if isinstance(m, Cell)}
    calls = _cell_calls(net, cells, example, autocast)
    tolerance = TOLERANCE.get(precision, TOLERANCE["fp32"])
    # Every cell runs the one Cell.forward code object, and dynamo keeps one cache entry per cell there:
    # the limit is raised while they compile. Put back afterwards, it leaves the entries in use, and a
    # later miss (a shape nobody checked) runs eagerly instead of compiling.
    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.config.recompile_limit = max(limit, 2 * len(cells) + 8)
    report: dict[str, str] = {}
    try:
        for lid, cell in cells.items():
            cell.compiled, cell.compiled_shapes = None, None
            if lid not in calls:
                report[lid] = "eager: not reached by a forward pass"
                continue
            fn = torch.compile(cell.forward, dynamic=False, backend=backend or BACKEND)
            report[lid] = _check(cell, fn, *calls[lid], autocast=autocast, tolerance=tolerance)
            if report[lid] == "compiled":
                cell.compiled = fn
                cell.compiled_shapes = [tuple(t.shape) for t in calls[lid][0]]
    finally:
        torch._dynamo.config.recompile_limit = limit
    return report


def _check(cell: nn.Module, fn: Callable[..., Any], inputs: list[torch.Tensor], weights: GroupWeights | None,
           drop_prob: float, *, autocast: Callable[[], Any], tolerance: float) -> str:
    """Compile `cell` (the first call of `fn`) and judge it against eager and float64: "compiled" or why not."""
    try:
        exact = _float64_answer(cell, inputs, weights, drop_prob)
        eager = _run(cell, cell, inputs, weights, drop_prob, autocast)
    except Exception as e:  # noqa: BLE001 - e.g. a plugin module that cannot be copied or run in float64
        return f"eager: cannot be checked ({_first_line(e)})"
    try:
        trial = _run(cell, fn, inputs, weights, drop_prob, autocast)
    except Exception as e:  # noqa: BLE001 - any compiler failure means: this cell runs eagerly
        return f"eager: compilation failed ({_first_line(e)})"
    mismatch = _compare(exact, eager, trial, tolerance)
    if mismatch:
        return f"eager: the compiled cell is further from the float64 answer than eager ({mismatch})"
    return "compiled"


def summary(report: dict[str, str]) -> str:
    done = sum(v == "compiled" for v in report.values())
    lines = [f"{done} of {len(report)} cells compiled and checked against float64"]
    lines += [f"{lid}: {v}" for lid, v in report.items() if v != "compiled"]
    return "; ".join(lines)


# ---------------------------------------------------------------- helpers

def _cell_calls(net: nn.Module, cells: dict[str, nn.Module], example: torch.Tensor,
                autocast: Callable[[], Any]) -> dict[str, tuple[list[torch.Tensor], GroupWeights | None, float]]:
    """Each cell's arguments in one eager forward of `example`; the network's buffers are restored after."""
    calls = {}
    hooks = []
    for lid, cell in cells.items():
        def hook(_module, args, lid=lid):
            inputs, weights = args[0], args[1]
            drop_prob = args[2] if len(args) > 2 else 0.0
            calls[lid] = (_clones(inputs, lambda t: t.detach().clone()), _detached(weights), float(drop_prob))
        hooks.append(cell.register_forward_pre_hook(hook))
    saved = _buffers(net)
    try:
        with torch.no_grad(), autocast():
            net(example)
    finally:
        for h in hooks:
            h.remove()
        _restore(net, saved)
    return calls


def _clones(tensors: list[torch.Tensor], clone: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
    """Copies that keep which inputs are one tensor (a first cell reads the stem twice): dynamo guards on it."""
    made: dict[int, torch.Tensor] = {}
    for t in tensors:
        if id(t) not in made:
            made[id(t)] = clone(t)
    return [made[id(t)] for t in tensors]


def _detached(w: GroupWeights | None) -> GroupWeights | None:
    if w is None:
        return None
    return GroupWeights(w.ops.detach().clone(), None if w.edges is None else w.edges.detach().clone(), w.active)


def _run(cell: nn.Module, fn: Callable, inputs: list[torch.Tensor], weights: GroupWeights | None,
         drop_prob: float, autocast: Callable[[], Any]) -> dict[str, torch.Tensor | None]:
    """One forward and backward of `fn` (the cell or its compiled forward) from the cell's current buffers."""
    saved = _buffers(cell)
    xs = _clones(inputs, lambda t: t.clone().requires_grad_())
    w, leaves = weights, {}
    if weights is not None:
        ops = weights.ops.clone().requires_grad_()
        edges = None if weights.edges is None else weights.edges.clone().requires_grad_()
        w = GroupWeights(ops, edges, weights.active)
        leaves["α weights"] = ops
        if edges is not None:
            leaves["edge weights"] = edges
    leaves.update({f"input {i}": x for i, x in enumerate(xs)})
    leaves.update({name: p for name, p in cell.named_parameters() if p.requires_grad})
    try:
        with autocast():
            out = fn(xs, w, drop_prob)
        seed = torch.Generator().manual_seed(0)
        probe = torch.randn(out.shape, generator=seed).to(device=out.device, dtype=out.dtype)
        grads = torch.autograd.grad(out, list(leaves.values()), probe, allow_unused=True)
        result = {"output": out.detach()}
        result.update({f"gradient of {k}": g for k, g in zip(leaves, grads)})
        result.update({f"BN statistic {k}": b.detach().clone() for k, b in cell.named_buffers()
                       if b.is_floating_point()})
        return result
    finally:
        _restore(cell, saved)


def _float64_answer(cell: nn.Module, inputs: list[torch.Tensor], weights: GroupWeights | None,
                    drop_prob: float) -> dict[str, torch.Tensor | None]:
    """The cell's outputs, gradients and BN statistics computed in float64 on a copy (no autocast)."""
    twin = copy.deepcopy(cell).double()
    double = _clones(inputs, lambda t: t.double())
    w = None if weights is None else GroupWeights(
        weights.ops.double(), None if weights.edges is None else weights.edges.double(), weights.active)
    return _run(twin, twin, double, w, drop_prob, contextlib.nullcontext)


def _compare(exact: dict[str, torch.Tensor | None], eager: dict[str, torch.Tensor | None],
             trial: dict[str, torch.Tensor | None], tolerance: float) -> str:
    """'' when the compiled cell is about as close to float64 as eager everywhere; else its worst miss."""
    worst, what = 0.0, ""
    for key, t in exact.items():
        a, b = eager.get(key), trial.get(key)
        if (t is None) != (b is None):
            return f"{key}: computed by one and not the other"
        if t is None:
            continue
        if b.shape != t.shape:
            return f"{key}: shape {tuple(b.shape)}, expected {tuple(t.shape)}"
        if not t.numel():
            continue
        t = t.double()
        scale = max(float(t.abs().max()), 1e-30)
        err_eager = float((a.double() - t).abs().max())
        err_trial = float((b.double() - t).abs().max())
        allowed = max(SLACK * err_eager, tolerance * scale)
        if not err_trial <= allowed and not err_trial / allowed <= worst:  # `not <=` also catches NaN
            worst = err_trial / allowed if err_trial == err_trial else float("inf")
            what = (f"{key} off by {err_trial / scale:.2%} of its largest value, eager by "
                    f"{err_eager / scale:.2%}")
    return what


def _buffers(module: nn.Module) -> list[torch.Tensor]:
    return [b.detach().clone() for b in module.buffers()]


def _restore(module: nn.Module, saved: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for b, s in zip(module.buffers(), saved):
            b.copy_(s)


def _first_line(e: BaseException) -> str:
    """The innermost cause's first line: dynamo wraps a backend's error in one that only names the backend."""
    seen = {id(e)}
    while True:
        inner = getattr(e, "inner_exception", None) or e.__cause__
        if inner is None or id(inner) in seen:
            break
        seen.add(id(inner))
        e = inner
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {(text[0] if text else '')[:200]}"
