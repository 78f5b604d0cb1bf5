"""Each pass alone: what it adds, and that it never mutates its input."""

import copy

import attrs
import pytest

from nasc.compiler.build_ir import build_ir
from nasc.compiler.check_graph import check_graph
from nasc.compiler.ir import lint, to_json_dict
from nasc.compiler.pipeline import PASSES, compile_space, run_passes
from nasc.compiler.resolve import resolve_path, resolve_source
from nasc.compiler.specialise_ops import specialise_ops

DEAD = """space dead(C = 4)
op none = zero(stride)
cell c(x):
    nodes a, b
    edge x -> a: [none]
    edge x -> b: [identity, conv(3)]
    edge a -> b: [identity, none]
    output concat(a, b)
network:
    input 3 x 8 x 8
    stem conv(3, out = C) > bn
    stack 2 x c, width C
    preprocess conv(1) > bn
    head global_avg_pool > linear(10)
"""


def _raw(path):
    return build_ir(resolve_path(path))


def test_pass_order():
    assert [p.__name__ for p in PASSES] == ["check_graph", "specialise_ops", "remove_dead_nodes", "infer_shapes",
                                            "bind_alpha", "compute_costs"]


def test_specialise_ops_strided_skip(spaces_dir):
    ir = specialise_ops(check_graph(_raw(spaces_dir / "darts.nas")))
    assert [s.prim for s in ir.impls["skip_connect@2"]] == ["factorized_reduce"]
    assert [s.prim for s in ir.impls["skip_connect@1"]] == ["identity"]
    assert dict(ir.impls["sep_conv_3x3@2"][1].args)["stride"] == 2
    assert dict(ir.impls["sep_conv_3x3@1"][1].args)["stride"] == 1
    assert dict(ir.impls["sep_conv_3x3@2"][5].args)["k"] == 3  # the family binds k in every step
    assert set(ir.impls) >= {"preprocess@1", "preprocess@2", "none@1", "none@2"}


def test_searching_guard_becomes_when(spaces_dir):
    ir = specialise_ops(_raw(spaces_dir / "darts.nas"))
    steps = ir.impls["max_pool_3x3@1"]
    assert [(s.prim, s.when) for s in steps] == [("max_pool", "always"), ("bn", "search")]
    assert [(s.prim, s.when) for s in ir.impls["avg_pool_3x3@2"]] == [("avg_pool", "always"), ("bn", "search")]
    assert all(s.when == "always" for s in ir.impls["sep_conv_5x5@1"])


def test_not_searching_guard(compile_text):
    text = DEAD.replace("op none = zero(stride)", "op none = zero(stride)\nop pool = avg_pool(3) > bn if not searching")
    ir = compile_text(text.replace("[identity, conv(3)]", "[identity, pool]"))
    assert [(s.prim, s.when) for s in ir.impls["pool@1"]] == [("avg_pool", "always"), ("bn", "eval")]


def test_remove_dead_nodes(compile_text):
    ir = compile_text(DEAD)
    g = ir.cells["c"]
    assert not g.has_edge("x", "a")
    assert ir.meta["removed_edges"] == {"c": ["a<-x"]}
    assert ir.meta["zero_nodes"] == {"c": ["a"]}
    assert [e.key for e in ir.cell_edges("c")] == ["b<-x", "b<-a"]
    assert [e.index for e in ir.cell_edges("c")] == [0, 1]
    # the constant-zero node still counts in the concat: 2 * C channels out
    assert ir.meta["shapes"]["cell0"]["c_out"] == 8
    assert [r["edge"] for r in ir.alpha_groups["c"]["rows"]] == ["b<-x", "b<-a"]

def test_a_zero_edge_into_a_mean_node_stays(compile_text):
    """It still counts in the mean: b = (x + 0) / 2, where dropping the edge made the network compute b = x / 1."""
    text = DEAD.replace("edge x -> a: [none]", "edge x -> a: [identity]").replace("edge a -> b: [identity, none]",
                                                                            "edge a -> b: none")
    assert compile_text(text).meta["removed_edges"] == {"c": ["b<-a"]}  # summed: dropping it is exact
    ir = compile_text(text.replace("nodes a, b", "nodes a, b = mean"))
    assert "removed_edges" not in ir.meta and "zero_nodes" not in ir.meta
    assert [e.key for e in ir.cell_edges("c")] == ["a<-x", "b<-x", "b<-a"]


ZERO_IN_REDUCTION = """space d(C = 8, classes = 10)
op skip = identity | on stride 2: factorized_reduce
op none = zero(stride)
op cb(k) = relu > conv(k, stride) > bn
cell normal(s0, s1):
    nodes n0, n1
    edge s0, s1 -> n0: [skip, cb(3)]
    edge n0 -> n1: none
    output concat
cell reduce = normal with stride 2 on inputs
network:
    stem conv(3, out = 2 * C) > bn
    preprocess relu > conv(1) > bn | on stride 2: factorized_reduce
    stack 3 x normal, reduce at [1], widen 2 at reduce
    head global_avg_pool > linear(classes)
"""


@pytest.mark.parametrize("text, zero_edge", [
    (ZERO_IN_REDUCTION, "n1<-n0"),  # fed by a zero edge from a node that is already reduced
    (ZERO_IN_REDUCTION.replace("edge s0, s1 -> n0: [skip, cb(3)]\n    edge n0 -> n1: none",
                               "edge s0, s1 -> n0: [skip, cb(3)]\n    edge s0, s1 -> n1: none"), "n1<-s0"),
])
def test_a_constant_zero_node_takes_the_reduced_resolution(compile_text, text, zero_edge):
    """The zero node has the shape its removed zero edges would give: 16x16 in a reduction cell at 32x32."""
    ir = compile_text(text)
    assert zero_edge in ir.meta["removed_edges"]["reduce"]
    assert ir.meta["zero_nodes"] == {"normal": ["n1"], "reduce": ["n1"]}
    states = ir.meta["shapes"]["cell1"]["states"]
    assert states["n0"] == states["n1"] == [16, 16]
    assert ir.meta["shapes"]["cell1"]["h_out"] == 16


def test_nothing_removed_keeps_meta_clean(spaces_dir):
    ir = compile_space(spaces_dir / "nb201.nas")
    assert "zero_nodes" not in ir.meta and "removed_edges" not in ir.meta


def test_bind_alpha_per_instance(spaces_dir, compile_text):
    text = (spaces_dir / "darts.nas").read_text().replace("alpha shared per cell", "alpha per instance")
    ir = compile_text(text)
    assert list(ir.alpha_groups) == [f"cell{i}" for i in range(8)]
    proxyless = compile_space(spaces_dir / "proxyless.nas")
    assert all(g["kind"] == "choice" for g in proxyless.alpha_groups.values())
    assert len(proxyless.alpha_groups) == 21


def test_infer_shapes_darts(spaces_dir):
    ir = compile_space(spaces_dir / "darts.nas")
    s = ir.meta["shapes"]
    assert s["stem"]["c_out"] == 48
    assert (s["cell2"]["width"], s["cell2"]["h_out"], s["cell2"]["c_out"]) == (32, 16, 128)
    assert s["cell3"]["pre"] == [2, 1]
    assert s["head"]["c_out"] == 10 and s["head"]["h_out"] is None


def _snapshot(ir):
    return copy.deepcopy(to_json_dict(ir)), {k: dict(g.graph) for k, g in ir.cells.items()}


@pytest.mark.parametrize("source", ["darts", "nb201", "proxyless", "darts_s1", "dead", "darts-2x2"])
def test_every_pass_is_pure(source, spaces_dir):
    if source == "dead":
        ir = build_ir(resolve_source(DEAD, "dead.nas"))
    elif source == "darts-2x2":  # exercises infer_shapes dropping the aux head
        ir = _raw(spaces_dir / "darts.nas")
        ir.input_shape = (3, 2, 2)
    else:
        ir = _raw(spaces_dir / f"{source}.nas")
    for p in PASSES:
        before = _snapshot(ir)
        layers_before = ir.layers()
        new = p(ir)
        assert _snapshot(ir) == before, f"{p.__name__} mutated its input"
        assert ir.layers() == layers_before
        assert lint(new) == []
        ir = new


def test_lint_failure_names_the_pass(spaces_dir):
    def break_layers(ir):
        out = ir.copy()
        layer = out.layers()[0]
        out.macro.nodes[layer.id]["layer"] = attrs.evolve(layer, kind="bogus")
        return out

    with pytest.raises(AssertionError, match=r"after pass break_layers \(ran: check_graph, break_layers\)"):
        run_passes(_raw(spaces_dir / "darts.nas"), [check_graph, break_layers], check=True)



@pytest.mark.parametrize("size, after_first, after_second", [(33, 17, 9), (7, 4, 2), (30, 15, 8)])
def test_odd_resolution_before_a_reduction_is_preprocessed_at_stride_2(size, after_first, after_second):
    """A stride-2 step maps h to ceil(h/2), as DARTS' padded FactorizedReduce does: 33x33 feeds a 17x17 cell."""
    ir = compile_space("darts", params={"C": 4, "layers": 5}, input_shape=(3, size, size))
    s = ir.meta["shapes"]  # reductions at cells 1 and 3
    assert (s["cell2"]["h_in"], s["cell2"]["pre"]) == ([size, after_first], [2, 1])
    assert (s["cell4"]["h_in"], s["cell4"]["pre"]) == ([after_first, after_second], [2, 1])
