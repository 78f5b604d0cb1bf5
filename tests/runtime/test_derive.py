"""Genotype + space → derived network: published parameter counts, and clear errors for genotypes that do not fit."""

from __future__ import annotations

import functools

import pytest
import torch

from nasc.compiler import genotype as G
from nasc.compiler.derive import specialise_to_genotype
from nasc.compiler.pipeline import compile_space
from nasc.errors import GenotypeError
from nasc.runtime.supernet import build_network

DARTS_V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
            "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
            "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
NB201_BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
NB201_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def _ir(space: str, **params):
    return compile_space(space, params=params or None)


def _count_without_aux(net) -> int:
    return sum(p.numel() for name, p in net.named_parameters() if not name.startswith("layers.aux."))


def test_darts_v2_has_the_papers_parameter_count():
    # quark0/darts model.py NetworkCIFAR(36, 10, 20, True, DARTS_V2), utils.count_parameters_in_MB
    # (which skips the auxiliary head): 3,349,342 -> the paper's 3.3M
    derived = specialise_to_genotype(_ir("darts", C=36, layers=20), G.from_darts(DARTS_V2))
    assert derived.meta["costs"]["total_without_aux"]["params"] == 3_349_342
    net = build_network(derived)
    assert net.aux_ids == ["aux"]
    assert _count_without_aux(net) == 3_349_342
    aux = sum(p.numel() for p in net.layers["aux"].parameters())
    assert aux > 0 and sum(p.numel() for p in net.parameters()) == 3_349_342 + aux
    assert derived.meta["costs"]["total"]["params"] == 3_349_342 + aux


@pytest.mark.parametrize("arch, expected", [
    (NB201_BEST, 1_288_506),  # AutoDL TinyNetwork (C=16, N=5, 10 classes): 1.2885M
    (NB201_SKIP, 73_306),     # the all-skip cell: 0.0733M
])
def test_nb201_cells_have_the_benchmark_parameter_counts(arch, expected):
    derived = specialise_to_genotype(_ir("nb201"), G.from_nb201(arch))
    assert derived.meta["costs"]["total_without_aux"]["params"] == expected
    net = build_network(derived)
    assert sum(p.numel() for p in net.parameters()) == expected


def test_derived_ir_keeps_only_the_genotype_edges():
    ir = _ir("darts", C=4, layers=5)
    derived = specialise_to_genotype(ir, G.from_darts(DARTS_V2))
    assert not derived.alpha_groups
    assert derived.meta["fingerprint"] != ir.meta["fingerprint"]
    kept = {(e.dst, e.src, e.candidates) for e in derived.cell_edges("normal")}
    assert len(kept) == 8 and all(len(c) == 1 for _, _, c in kept)
    assert ir.alpha_groups  # the input IR is not modified
    net = build_network(derived)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_op_that_is_not_a_candidate():
    text = DARTS_V2.replace("('dil_conv_3x3', 2)", "('sep_conv_7x7', 2)")
    with pytest.raises(GenotypeError) as info:
        specialise_to_genotype(_ir("darts", C=4, layers=5), G.from_darts(text))
    msg = info.value.message
    assert "'sep_conv_7x7' is not a candidate" in msg
    assert "cell 'normal'" in msg and "5<-2" in msg
    assert "sep_conv_3x3" in msg  # the candidates are listed


def test_wrong_node_count():
    text = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0)], normal_concat=[2, 3, 4], "
            "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), "
            "('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
            "reduce_concat=[2, 3, 4, 5])")
    with pytest.raises(GenotypeError) as info:
        specialise_to_genotype(_ir("darts", C=4, layers=5), G.from_darts(text))
    assert "cell 'normal' has 2 inputs and 3 nodes" in info.value.message
    assert "4 nodes" in info.value.message


def test_genotype_of_another_space():
    with pytest.raises(GenotypeError) as info:
        specialise_to_genotype(_ir("darts", C=4, layers=5), G.from_nb201(NB201_BEST))
    msg = info.value.message
    assert "unknown cell 'cell'" in msg
    assert "missing cell 'normal'" in msg and "missing cell 'reduce'" in msg
    with pytest.raises(GenotypeError, match="unknown cell 'normal'"):
        specialise_to_genotype(_ir("nb201", C=4, N=1), G.from_darts(DARTS_V2))


def test_nb201_genotype_with_a_foreign_op():
    bad = NB201_BEST.replace("skip_connect~0", "sep_conv_3x3~0")
    with pytest.raises(GenotypeError, match="'sep_conv_3x3' is not a candidate"):
        specialise_to_genotype(_ir("nb201", C=4, N=1), G.from_nb201(bad))


def test_an_edge_chosen_twice():
    g = G.from_darts(DARTS_V2)
    cell = g.cells["normal"]
    # a third edge into node 5 is a valid (SNAS-like) cell ...
    more = G.GenoCell(n_inputs=2, n_nodes=4, edges=cell.edges + (G.GenoEdge(node=5, input=3, op="sep_conv_5x5"),),
                      concat=cell.concat)
    derived = specialise_to_genotype(_ir("darts", C=4, layers=5), G.Genotype(cells={**g.cells, "normal": more}))
    assert len(list(derived.cell_edges("normal"))) == 9
    # ... but the same edge twice is not
    twice = G.GenoCell(n_inputs=2, n_nodes=4, edges=cell.edges + (cell.edges[0],), concat=cell.concat)
    with pytest.raises(GenotypeError, match=r"chosen twice \(sep_conv_3x3 and sep_conv_3x3\); a space has one edge "
                                            r"per \(input, node\) pair"):
        specialise_to_genotype(_ir("darts", C=4, layers=5), G.Genotype(cells={**g.cells, "normal": twice}))


def test_chain_genotype_must_name_every_searchable_layer():
    ir = compile_space("proxyless", input_shape=(3, 32, 32), params={"classes": 10})
    choices = {g: info["rows"][0]["ops"][0] for g, info in ir.alpha_groups.items()}
    g = G.Genotype(layers=tuple(choices.items()))
    derived = specialise_to_genotype(ir, g)
    assert not derived.alpha_groups
    partial = G.Genotype(layers=tuple(list(choices.items())[:-1]))
    with pytest.raises(GenotypeError, match="missing layer"):
        specialise_to_genotype(ir, partial)
    wrong = G.Genotype(layers=tuple((k, "mbconv_9x9_e6") for k in choices))
    with pytest.raises(GenotypeError, match="not a candidate"):
        specialise_to_genotype(ir, wrong)


def test_the_genotype_concat_is_what_the_cell_outputs():
    """normal_concat=[2, 3, 4]: the normal cell concatenates three nodes and the next cells' channels follow.

    3,064,078 (3,540,504 with the auxiliary head) is what quark0/darts' NetworkCIFAR(36, 10, 20, True, g)
    builds for this genotype: its Cell sets multiplier = len(concat) and keeps node 5's ops, unused.
    """
    text = DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[2, 3, 4]")
    derived = specialise_to_genotype(_ir("darts", C=36, layers=20), G.from_darts(text))
    assert derived.cells["normal"].graph["output"].states == ("n0", "n1", "n2")
    assert derived.cells["reduce"].graph["output"].states == ("n0", "n1", "n2", "n3")
    assert derived.meta["costs"]["total_without_aux"]["params"] == 3_064_078
    assert derived.meta["costs"]["total"]["params"] == 3_540_504
    assert any("cell 'normal' outputs concat(2, 3, 4) as the genotype says, not the space's concat(2, 3, 4, 5)" in w
               and "node(s) [5] reach no output" in w for w in derived.meta["warnings"])
    net = build_network(derived)
    assert sum(p.numel() for p in net.parameters()) == 3_540_504
    small = build_network(specialise_to_genotype(_ir("darts", C=4, layers=5), G.from_darts(text)))
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # the unchanged concat is no news
    assert not any("outputs" in w for w in specialise_to_genotype(_ir("darts", C=4, layers=5),
                                                                   G.from_darts(DARTS_V2)).meta.get("warnings", []))


def test_an_nb201_cell_outputs_the_state_its_concat_names():
    g = G.from_nb201(NB201_BEST)
    cell = g.cells["cell"]
    earlier = G.Genotype(cells={"cell": G.GenoCell(n_inputs=1, n_nodes=3, edges=cell.edges, concat=(2,))})
    ir = _ir("nb201", C=4, N=1)
    derived = specialise_to_genotype(ir, earlier)
    assert derived.cells["cell"].graph["output"].states == ("x2",)
    cells = [m for m in build_network(derived).modules() if type(m).__name__ == "Cell"]
    assert cells and all(m.output == ("node", [2]) for m in cells)
    assert any("outputs state 2 as the genotype says, not the space's state 3" in w for w in derived.meta["warnings"])
    wide = G.Genotype(cells={"cell": G.GenoCell(n_inputs=1, n_nodes=3, edges=cell.edges, concat=(1, 2, 3))})
    with pytest.raises(GenotypeError, match=r"outputs concat\(1, 2, 3\), but the space's cell outputs the single "
                                            r"state 3"):
        specialise_to_genotype(ir, wide)


def test_compile_warnings_survive_the_derivation():
    """On 8x8 digits DARTS' auxiliary head does not fit: the derived network still says so."""
    ir = compile_space("darts", params={"C": 4, "layers": 5}, input_shape=(1, 8, 8))
    assert any(w.startswith("auxiliary head dropped") for w in ir.meta["warnings"])
    derived = specialise_to_genotype(ir, G.from_darts(DARTS_V2))
    assert derived.meta["warnings"] == ir.meta["warnings"]


@pytest.mark.parametrize("change, note", [
    (lambda edges: edges[:-1], "node 5 has 1 chosen edge(s) (from [0]); the space's selection rule "
                               "(top 2 per node excluding none) keeps 2"),
    (lambda edges: edges + [G.GenoEdge(node=5, input=1, op="sep_conv_3x3")],
     "node 5 has 3 chosen edge(s) (from [0, 1, 2])"),
    (lambda edges: [G.GenoEdge(node=2, input=0, op="none")] + edges[1:],
     "edge 2<-0: op 'none' is one the space's selection rule (top 2 per node excluding none) never picks"),
])
def test_a_genotype_outside_the_selection_rule_is_built_with_a_warning(change, note):
    g = G.from_darts(DARTS_V2)
    normal = g.cells["normal"]
    # per-node lists: the DARTS notation and JSON give the same genotype, and the same warning
    odd = G.GenoCell(n_inputs=2, n_nodes=4, edges=change(list(normal.edges)), concat=normal.concat)
    odd_g = G.Genotype(cells={**g.cells, "normal": odd})
    for same in (odd_g, G.from_json(G.to_json(odd_g))):
        derived = specialise_to_genotype(_ir("darts", C=4, layers=5), same)
        assert any(note in w for w in derived.meta["warnings"]), derived.meta.get("warnings")


def test_an_nb201_genotype_missing_an_edge_is_warned_about():
    g = G.from_nb201(NB201_BEST)
    cell = g.cells["cell"]
    fewer = G.GenoCell(n_inputs=1, n_nodes=3, edges=[e for e in cell.edges if (e.node, e.input) != (3, 1)],
                       concat=cell.concat)
    derived = specialise_to_genotype(_ir("nb201", C=4, N=1), G.Genotype(cells={"cell": fewer}))
    assert any("node 3 has no edge from [1]" in w and "one op per edge" in w for w in derived.meta["warnings"])
    assert "warnings" not in specialise_to_genotype(_ir("nb201", C=4, N=1), g).meta


def test_a_network_too_small_for_a_normal_cell_says_so():
    """DARTS with layers = 2 reduces at 2 // 3 = 0 and 4 // 3 = 1: both cells are reduction cells."""
    with pytest.raises(GenotypeError) as info:
        specialise_to_genotype(_ir("darts", C=4, layers=2), G.from_darts(DARTS_V2))
    assert info.value.message == ("the genotype's cell 'normal' has no place in the network: with C = 4, layers = 2, "
                                  "classes = 10, every cell is a 'reduce' cell (2 cell(s) stacked)")
    assert "layers ≥ 3" in info.value.hint


FIXED_EDGE_SPACE = """
space toy(C = 4, classes = 10)
op c3 = relu > conv(3) > bn
cell c(x):
    nodes n0, n1
    edge x -> n0: [c3, identity]
    edge x -> n1: [identity]
    edge n0 -> n1: [c3, identity]
    output n1
network:
    stem conv(3, out = C) > bn
    stack 2 x c
    head global_avg_pool > linear(classes)
"""


def test_a_fixed_edge_named_in_the_genotype_is_kept():
    """Selectors list a cell's fixed edges with the chosen ones (runtime/selectors.derive); such a genotype builds."""
    ir = compile_space("toy.nas", text=FIXED_EDGE_SPACE)
    chosen = [G.GenoEdge(node=1, input=0, op="c3"), G.GenoEdge(node=2, input=1, op="c3")]
    fixed = G.GenoEdge(node=2, input=0, op="identity")
    for edges in (chosen + [fixed], chosen):
        g = G.Genotype(cells={"c": G.GenoCell(n_inputs=1, n_nodes=2, edges=edges, concat=(2,))})
        derived = specialise_to_genotype(ir, g)
        assert sorted(e.key for e in derived.cell_edges("c")) == ["n0<-x", "n1<-n0", "n1<-x"]
        assert not derived.meta.get("warnings")


def test_an_nb201_string_fits_a_one_cell_space_whatever_the_cell_is_called():
    """`nasc search` prints a one-input, one-cell genotype as an NB201 string, which names no cell."""
    ir = compile_space("toy.nas", text=FIXED_EDGE_SPACE)
    g = G.from_nb201("|c3~0|+|identity~0|identity~1|")
    assert list(g.cells) == ["cell"]
    derived = specialise_to_genotype(ir, g)
    assert sorted(e.key for e in derived.cell_edges("c")) == ["n0<-x", "n1<-n0", "n1<-x"]
    assert [e.candidates for e in derived.cell_edges("c")] == [("c3",), ("identity",), ("identity",)]


def _per_instance_genotype(*kinds: str) -> G.Genotype:
    """cell0, cell1, ...: DARTS V2's normal or reduce cell, as `kinds` says."""
    v2 = G.from_darts(DARTS_V2)
    return G.Genotype(cells={f"cell{i}": v2.cells[kind] for i, kind in enumerate(kinds)})


def test_alpha_per_instance_genotypes_build_one_cell_per_instance():
    text = open("spaces/darts.nas").read().replace("alpha shared per cell", "alpha per instance")
    assert "alpha per instance" in text
    ir = compile_space("pi.nas", text=text, params={"C": 4, "layers": 5})  # normal, reduce, normal, reduce, normal
    assert sorted(ir.alpha_groups) == [f"cell{i}" for i in range(5)]
    as_v2 = ("normal", "reduce", "normal", "reduce", "normal")
    same = specialise_to_genotype(ir, _per_instance_genotype(*as_v2))
    assert sorted(same.cells) == [f"cell{i}" for i in range(5)]  # the shared definitions are gone
    assert [layer.cell for layer in same.layers() if layer.kind == "cell"] == [f"cell{i}" for i in range(5)]
    ops = {c: sorted(e.candidates[0] for e in same.cell_edges(c)) for c in same.cells}
    assert ops["cell0"] == ops["cell2"] == ops["cell4"] != ops["cell1"] == ops["cell3"]
    # the same choices as DARTS V2 shared per cell: the same network, weight for weight
    shared = build_network(specialise_to_genotype(_ir("darts", C=4, layers=5), G.from_darts(DARTS_V2)))
    assert _count_without_aux(build_network(same)) == _count_without_aux(shared)
    other = specialise_to_genotype(ir, _per_instance_genotype("normal", "reduce", "reduce", "reduce", "normal"))
    assert sorted(e.candidates[0] for e in other.cell_edges("cell2")) == ops["cell1"]  # only cell2 changed
    assert all(sorted(e.candidates[0] for e in other.cell_edges(c)) == ops[c] for c in ("cell0", "cell1", "cell4"))
    net = build_network(other)
    assert _count_without_aux(net) < _count_without_aux(shared)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert ir.alpha_groups and "normal" in ir.cells  # the input IR is not modified


def test_an_alpha_per_instance_genotype_for_fewer_cells_says_to_build_as_many():
    text = open("spaces/darts.nas").read().replace("alpha shared per cell", "alpha per instance")
    ir = compile_space("pi.nas", text=text, params={"C": 4, "layers": 5})
    with pytest.raises(GenotypeError, match="missing cell 'cell3'") as info:
        specialise_to_genotype(ir, _per_instance_genotype("normal", "reduce", "normal"))
    assert "one cell per cell instance: this one has 3, the network 5" in info.value.hint


ZERO_NODE_SPACE = """space zn(C = 4, classes = 10)
op none = zero(stride)
op skip = identity | on stride 2: factorized_reduce
cell c(x):
    nodes a, b
    edge x -> a: [none]
    edge x -> b: [skip, conv(3, stride)]
    edge a -> b: [identity, none]
    output concat(a, b)
cell r = c with stride 2 on inputs
network:
    input 3 x 8 x 8
    stem conv(3, out = C) > bn
    preprocess conv(1) > bn | on stride 2: conv(1, stride = 2) > bn
    stack 3 x c, reduce r at [1]
    head global_avg_pool > linear(classes)
"""


def test_a_constant_zero_node_survives_selection_and_derivation():
    """A node whose only edge is `none` is a constant zero (remove_dead_nodes drops the edge): the selector keeps
    that edge as a fixed one, so the genotype is valid, and the derived reduction cell's zero node is still at the
    reduced resolution. The selector used to build a cell with an input-less node, and the search ended in an error."""
    from nasc.runtime.relaxations.base import load_relaxation
    from nasc.runtime.selectors import load_selector
    from nasc.runtime.supernet import build_supernet

    ir = compile_space("zn.nas", text=ZERO_NODE_SPACE)
    assert ir.meta["zero_nodes"] == {"c": ["a"], "r": ["a"]}
    net = build_supernet(ir, load_relaxation("softmax"))
    genotype = load_selector("magnitude").select(net, ir)
    for cell in ("c", "r"):
        assert G.GenoEdge(node=1, input=0, op="none") in genotype.cells[cell].edges
    derived = specialise_to_genotype(ir, genotype)
    assert derived.meta["zero_nodes"] == {"c": ["a"], "r": ["a"]}
    assert derived.meta["shapes"]["cell1"]["states"]["a"] == [4, 4]  # 8x8 reduced to 4x4
    out = build_network(derived)(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 10)
