"""Property tests of the passes on generated spaces (1- to 3-input cells, sum and mean nodes, zero-only and fixed
edges, `on stride 2:` and `if searching` ops, reductions with widening, α per cell or per instance).

test_passes.py checks purity on the bundled spaces; here every pass, on spaces nobody wrote, must be pure (its
input untouched), deterministic and idempotent, the costs must add up, and the fingerprint must not depend on
how the file is laid out (edge order, comments, blank lines).
"""

from __future__ import annotations

import copy
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from nasc.compiler.build_ir import build_ir
from nasc.compiler.ir import lint, to_json_dict
from nasc.compiler.pipeline import PASSES, compile_space
from nasc.compiler.resolve import resolve_source

OPS = """\
op skip = identity | on stride 2: factorized_reduce
op none = zero(stride)
op conv_bn(k) = relu > conv(k, stride) > bn
op pool = max_pool(3, stride) > bn if searching
op apool = avg_pool(3, stride) > bn if searching > relu if not searching
op dil = relu > dw_conv(3, stride, dilation = 2) > conv(1) > bn | on stride 2: relu > conv(3, stride = 2) > bn
"""
CANDIDATES = ["none", "skip", "conv_bn(3)", "conv_bn(1)", "pool", "apool", "dil"]


@st.composite
def spaces(draw) -> tuple[str, list[str], str]:
    """A valid space: (the text before the edges, the edge statements, the text after them)."""
    n_in = draw(st.integers(1, 3))
    n_nodes = draw(st.integers(1, 4))
    inputs = [f"i{j}" for j in range(n_in)]
    nodes = [f"n{j}" for j in range(n_nodes)]
    head = [f"space gen(C = {draw(st.sampled_from([4, 8]))}, classes = 10)", OPS, f"cell c({', '.join(inputs)}):"]
    head += [f"    nodes {n} = {draw(st.sampled_from(['sum', 'mean']))}" for n in nodes]
    last_only = draw(st.booleans())
    edges = []
    for i, n in enumerate(nodes):
        earlier = inputs + nodes[:i]
        sources = draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=len(earlier), unique=True))
        if last_only and i == n_nodes - 1:  # every node must reach the output: here, through the last node
            sources = list(dict.fromkeys(sources + nodes[:i]))
        for s in sources:
            cands = draw(st.just(["none"]) | st.lists(st.sampled_from(CANDIDATES), min_size=1, max_size=4,
                                                        unique=True))
            edges.append(f"    edge {s} -> {n}: [{', '.join(cands)}]")
    layers = draw(st.integers(2, 4))
    reduce_at = draw(st.none() | st.integers(0, layers - 1))
    stack = f"    stack {layers} x c"
    if reduce_at is not None:
        stack += f", reduce r at {reduce_at}, widen {draw(st.sampled_from([1, 2]))} at reduce"
    tail = [f"    output {nodes[-1]}" if last_only else "    output concat",
            "cell r = c with stride 2 on inputs",
            "network:",
            "    input 3 x 8 x 8",
            f"    stem conv(3, out = {draw(st.sampled_from([1, 2]))} * C) > bn",
            "    preprocess relu > conv(1) > bn | on stride 2: factorized_reduce",
            stack,
            "    head global_avg_pool > linear(classes)",
            draw(st.sampled_from(["alpha shared per cell", "alpha per instance"])),
            draw(st.sampled_from(["select top 2 per node excluding none", "select argmax per edge"]))]
    return "\n".join(head) + "\n", edges, "\n".join(tail) + "\n"


def _text(parts) -> str:
    head, edges, tail = parts
    return head + "\n".join(edges) + "\n" + tail


def _snapshot(ir):
    return (copy.deepcopy(to_json_dict(ir)), {k: dict(g.graph) for k, g in ir.cells.items()},
            {k: sorted(g.edges(data="edge"), key=str) for k, g in ir.cells.items()}, ir.layers())


@settings(max_examples=40, deadline=None)
@given(spaces())
def test_every_pass_is_pure_deterministic_and_idempotent(parts):
    ir = build_ir(resolve_source(_text(parts), "gen.nas"))
    for p in PASSES:
        before = _snapshot(ir)
        new = p(ir)
        assert _snapshot(ir) == before, f"{p.__name__} changed its input"
        assert to_json_dict(p(ir)) == to_json_dict(new), f"{p.__name__} is not deterministic"
        assert to_json_dict(p(new)) == to_json_dict(new), f"{p.__name__} applied twice differs from once"
        assert lint(new) == [], p.__name__
        ir = new


@settings(max_examples=40, deadline=None)
@given(spaces())
def test_costs_add_up(parts):
    costs = compile_space("gen.nas", text=_text(parts)).meta["costs"]
    for key in ("params", "madds", "act"):
        layers = sum(entry["fixed"][key] + sum(c[key] for ops in entry.get("edges", {}).values() for c in ops.values())
                     for entry in costs["layers"].values())
        assert costs["total"][key] == layers
        edges = sum(c[key] for entry in costs["layers"].values() for ops in entry.get("edges", {}).values()
                    for c in ops.values())
        assert sum(v[key] for v in costs["per_op"].values()) == edges


@settings(max_examples=40, deadline=None)
@given(spaces(), st.randoms(use_true_random=False))
def test_the_fingerprint_ignores_layout(parts, rng: random.Random):
    """Edge statements in any order, comments and blank lines between them: the same space, the same fingerprint."""
    head, edges, tail = parts
    shuffled = list(edges)
    rng.shuffle(shuffled)
    laid_out = "\n".join(e.replace(": [", " :  [") + rng.choice(["", "   # a comment", "\n", "\n\n  # note\n"])
                         for e in shuffled)
    a = compile_space("gen.nas", text=_text(parts))
    b = compile_space("other.nas", text=head + laid_out + "\n" + tail)
    assert a.meta["fingerprint"] == b.meta["fingerprint"]



@settings(max_examples=40, deadline=None)
@given(spaces())
def test_restricting_to_every_candidate_changes_nothing(parts):
    """restrict_candidates reruns the passes from fresh meta (a P-DARTS stage): keeping every op of every edge must
    give the same network (cells, α, shapes and costs, constant-zero nodes included), and leave its input alone.

    Not compared: `meta.removed_edges` and `impls`, which still hold what compiling removed (the zero edges into
    nodes that keep another input, and those edges' specialised ops), and with them the fingerprint.
    """
    from nasc.compiler.restrict import restrict_candidates

    ir = compile_space("gen.nas", text=_text(parts))
    before = _snapshot(ir)
    keep = {g: {r["edge"]: r["ops"] for r in info["rows"]} for g, info in ir.alpha_groups.items()}
    out = restrict_candidates(ir, keep)
    assert _snapshot(ir) == before

    def network(x):
        d = to_json_dict(x)
        d["meta"] = {k: v for k, v in d["meta"].items() if v and k not in ("restricted", "removed_edges", "fingerprint")}
        del d["impls"]
        return d

    assert network(out) == network(ir)
