"""The magnitude selector on hand-set α: the DARTS rule, NB201's argmax per edge, a chain's argmax per layer."""

from __future__ import annotations

import functools

import pytest
import torch

from nasc.compiler import genotype as G
from nasc.compiler.derive import specialise_to_genotype
from nasc.compiler.pipeline import compile_space
from nasc.errors import BuildError, GenotypeError, RegistryError
from nasc.runtime.relaxations.base import load_relaxation
from nasc.runtime.selectors import derive, load_selector, strengths
from nasc.runtime.supernet import build_supernet

DARTS_OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
             "dil_conv_3x3", "dil_conv_5x5"]
# α rows in DARTS edge order: (node, input) = (2,0) (2,1) (3,0) (3,1) (3,2) (4,0) .. (4,3) (5,0) .. (5,4)
EDGES = [(2, 0), (2, 1), (3, 0), (3, 1), (3, 2), (4, 0), (4, 1), (4, 2), (4, 3), (5, 0), (5, 1), (5, 2), (5, 3), (5, 4)]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def _ir(space: str):
    if space == "darts":
        return compile_space("darts", params={"C": 4, "layers": 5})
    if space == "nb201":
        return compile_space("nb201", params={"C": 4, "N": 1})
    return compile_space(space, input_shape=(3, 32, 32), params={"classes": 10})


def _net(space: str):
    ir = _ir(space)
    return ir, build_supernet(ir, load_relaxation("softmax"), generator=torch.Generator().manual_seed(0))


def _alpha(table: dict[tuple[int, int], dict[str, float]], ops=DARTS_OPS, edges=EDGES) -> torch.Tensor:
    """α with zeros everywhere except the given logits."""
    a = torch.zeros(len(edges), len(ops))
    for (node, inp), logits in table.items():
        for op, v in logits.items():
            a[edges.index((node, inp)), ops.index(op)] = v
    return a


def _set(net, group: str, alpha: torch.Tensor) -> None:
    with torch.no_grad():
        net.alphas[group].copy_(alpha)


def _select(net, ir):
    return load_selector(ir.select.name, dict(ir.select.options)).select(net, ir, relax=net.relax)


NORMAL = {
    (2, 0): {"sep_conv_3x3": 2.0},
    (2, 1): {"dil_conv_5x5": 3.0},
    (3, 0): {"skip_connect": 1.0},
    (3, 1): {"none": 6.0, "max_pool_3x3": 0.5},   # `none` dominates: the edge is weak once none is excluded
    (3, 2): {"avg_pool_3x3": 1.5},
    (4, 0): {"sep_conv_5x5": 0.2},
    (4, 1): {"none": 10.0},
    (4, 2): {"dil_conv_3x3": 2.5},
    (4, 3): {"sep_conv_3x3": 2.2},
    (5, 0): {"skip_connect": 0.7},
    (5, 1): {"max_pool_3x3": 0.9},
    (5, 2): {"none": 8.0, "sep_conv_5x5": 4.0},
    (5, 3): {"avg_pool_3x3": 0.3},
    (5, 4): {"sep_conv_3x3": 1.1},
}
REDUCE = {
    (2, 0): {"max_pool_3x3": 1.0},
    (2, 1): {"max_pool_3x3": 2.0},
    (3, 0): {"avg_pool_3x3": 0.5},
    (3, 1): {"none": 9.0},
    (3, 2): {"skip_connect": 3.0},
    (4, 0): {"sep_conv_5x5": 0.5},
    (4, 3): {"dil_conv_5x5": 1.0},
    (5, 0): {"max_pool_3x3": 2.0},
    (5, 4): {"skip_connect": 2.5},
}


def _darts_rule(alpha: torch.Tensor) -> list[tuple[str, int]]:
    """DARTS model_search.py::genotype, written out: w = softmax(α); per node the 2 edges with the largest
    non-none weight, each with its argmax non-none op, strongest first."""
    w = torch.softmax(alpha, dim=-1)
    out = []
    for node in range(2, 6):
        rows = [(EDGES.index((node, j)), j) for j in range(node)]
        strength = {j: max(float(w[r, k]) for k in range(1, 8)) for r, j in rows}
        best = sorted(range(node), key=lambda j: -strength[j])[:2]
        for j in best:
            r = EDGES.index((node, j))
            k = max(range(1, 8), key=lambda k: float(w[r, k]))
            out.append((DARTS_OPS[k], j))
    return out


def test_darts_rule_on_hand_set_alpha():
    ir, net = _net("darts")
    _set(net, "normal", _alpha(NORMAL))
    _set(net, "reduce", _alpha(REDUCE))
    g = _select(net, ir)
    # worked out by hand from the tables above: per node the two largest non-none logits, strongest first
    expected = G.from_darts(
        "Genotype(normal=[('dil_conv_5x5', 1), ('sep_conv_3x3', 0), ('avg_pool_3x3', 2), ('skip_connect', 0), "
        "('dil_conv_3x3', 2), ('sep_conv_3x3', 3), ('sep_conv_3x3', 4), ('max_pool_3x3', 1)], "
        "normal_concat=[2, 3, 4, 5], "
        "reduce=[('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('avg_pool_3x3', 0), "
        "('dil_conv_5x5', 3), ('sep_conv_5x5', 0), ('skip_connect', 4), ('max_pool_3x3', 0)], "
        "reduce_concat=[2, 3, 4, 5])")
    assert g.cells == expected.cells
    assert g.space == "darts"
    assert g.fingerprint == ir.meta["fingerprint"]
    # and the same as the DARTS code's rule written independently
    for name, table in (("normal", NORMAL), ("reduce", REDUCE)):
        flat = [(e.op, e.input) for e in g.cells[name].edges]
        assert flat == _darts_rule(_alpha(table))
    # a selected genotype always fits its space, and its selection rule
    assert not specialise_to_genotype(ir, g).meta.get("warnings")


def test_darts_rule_on_random_alpha_matches_reference():
    ir, net = _net("darts")
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        a_n, a_r = torch.randn(14, 8, generator=gen), torch.randn(14, 8, generator=gen)
        _set(net, "normal", a_n)
        _set(net, "reduce", a_r)
        g = _select(net, ir)
        assert [(e.op, e.input) for e in g.cells["normal"].edges] == _darts_rule(a_n)
        assert [(e.op, e.input) for e in g.cells["reduce"].edges] == _darts_rule(a_r)


def test_none_is_never_chosen_excluding_none():
    ir, net = _net("darts")
    for group in ("normal", "reduce"):
        a = torch.randn(14, 8, generator=torch.Generator().manual_seed(1))
        a[:, 0] = 20.0  # none dominates every edge
        _set(net, group, a)
    g = _select(net, ir)
    ops = [e.op for c in g.cells.values() for e in c.edges]
    assert len(ops) == 16 and "none" not in ops


def test_equal_strengths_break_ties_by_lowest_index():
    """DARTS sorts with a stable sort and takes the first maximum: inputs 0 and 1, first non-none op."""
    ir, net = _net("darts")
    for group in ("normal", "reduce"):
        _set(net, group, torch.zeros(14, 8))
    first = _select(net, ir)
    for cell in first.cells.values():
        assert [(e.node, e.input, e.op) for e in cell.edges] == [
            (n, i, "max_pool_3x3") for n in range(2, 6) for i in (0, 1)]
    assert _select(net, ir) == first
    ir2, net2 = _net("darts")
    for group in ("normal", "reduce"):
        _set(net2, group, torch.zeros(14, 8))
    assert _select(net2, ir2) == first


def test_nb201_argmax_per_edge_includes_none():
    ir, net = _net("nb201")
    ops = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
    edges = [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    table = {(1, 0): {"none": 2.0, "nor_conv_3x3": 1.0}, (2, 0): {"skip_connect": 1.0},
             (2, 1): {"nor_conv_1x1": 0.5}, (3, 0): {"nor_conv_3x3": 0.1}, (3, 1): {"avg_pool_3x3": 3.0},
             (3, 2): {"none": 0.4, "skip_connect": 0.3}}
    _set(net, "cell", _alpha(table, ops, edges))
    g = _select(net, ir)
    expected = G.from_nb201("|none~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|",
                            cell_name="cell")
    assert g.cells == expected.cells
    assert G.to_nb201(g) == "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|"


def test_chain_space_gives_one_op_per_layer():
    ir, net = _net("proxyless")
    expected = []
    for i, (group, alpha) in enumerate(net.alphas.items()):
        ops = net.group_ops[group][0]
        pick = i % len(ops)
        a = torch.zeros_like(alpha)
        a[0, pick] = 1.0
        _set(net, group, a)
        expected.append((ir.alpha_groups[group]["layers"][0], ops[pick]))
    g = _select(net, ir)
    assert not g.cells
    assert list(g.layers) == expected
    assert len(g.layers) == len(ir.alpha_groups) == 21
    assert not specialise_to_genotype(ir, g).meta.get("warnings")


def test_strengths_of_a_chain_are_row_softmaxes():
    ir, net = _net("proxyless")
    for group in net.alphas:
        s = strengths(net, group)
        torch.testing.assert_close(s.sum(dim=1), torch.ones(1))
        assert torch.all(s[~net.mask(group)] == -1.0)


def test_derive_accepts_supplied_probabilities():
    ir, net = _net("nb201")
    probs = {"cell": torch.eye(6, 5)}  # edge r → op r for r < 5
    probs["cell"][5, 4] = 1.0  # and the last edge → avg_pool_3x3
    g = derive(ir, net, per="edge", k=1, exclude=frozenset())
    assert len(g.cells["cell"].edges) == 6
    g2 = derive(ir, net, per="edge", k=1, exclude=frozenset(), probs=probs)
    assert [e.op for e in g2.cells["cell"].edges] == ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3",
                                                      "avg_pool_3x3", "avg_pool_3x3"]


def test_selector_options_and_errors():
    ir, net = _net("darts")
    _set(net, "normal", _alpha(NORMAL))
    _set(net, "reduce", _alpha(REDUCE))
    g = load_selector("magnitude", {"k": 1}).select(net, ir)
    assert [(e.node, e.input, e.op) for e in g.cells["normal"].edges] == [
        (2, 1, "dil_conv_5x5"), (3, 2, "avg_pool_3x3"), (4, 2, "dil_conv_3x3"), (5, 4, "sep_conv_3x3")]
    with pytest.raises(BuildError, match="no option"):
        load_selector("magnitude", {"top": 3})
    with pytest.raises(BuildError, match="per layer, but space 'darts' has no `choice` layers"):
        load_selector("magnitude", {"per": "layer"}).check(ir)  # it would keep all 14 edges of each cell
    with pytest.raises(RegistryError) as info:
        load_selector("magnitdue")
    assert info.value.hint == "did you mean 'magnitude'?"


def test_k_without_per_node_is_refused():
    """`--select-opt k=3` on NB-201 (argmax per edge) was accepted and changed nothing: k counts the edges kept
    per node, and a per-edge or per-layer selection keeps one op on every edge."""
    for space, options in (("nb201", {"k": 3}), ("darts", {"per": "edge", "k": 3}),
                           ("proxyless", {"k": 3})):
        for name in ("magnitude", "perturbation")[:1 if "per" in options else 2]:  # perturbation has no `per`
            with pytest.raises(BuildError, match="k = 3 applies per node") as info:
                load_selector(name, options).check(_ir(space))
            assert "per=node" in info.value.hint
    load_selector("magnitude", {"per": "edge"}).check(_ir("darts"))  # the file's `top 2 per node` k stays allowed
    load_selector("magnitude", {"per": "node", "k": 1}).check(_ir("nb201"))


FIXED_EDGE_SPACE = """\
space fixed_edge(C = 4, layers = 3, classes = 10)
op sep_{k}x{k} = relu > dw_conv(k, stride) > conv(1) > bn
op skip = identity | on stride 2: factorized_reduce
op mp = max_pool(3, stride)
op none = zero(stride)
cell normal(s0, s1):
    nodes n0, n1
    edge s0, s1 -> n0: [skip, sep_3x3]
    edge s0, n0 -> n1: [mp, skip]
    edge s1 -> n1: sep_3x3
    output concat(n0..n1)
cell reduce = normal with stride 2 on inputs
network:
    stem conv(3, out = 2 * C) > bn
    preprocess relu > conv(1) > bn | on stride 2: factorized_reduce
    stack layers x normal, reduce at 1, widen 2 at reduce
    head global_avg_pool > linear(classes)
select top 1 per node excluding none
"""


def test_a_fixed_edge_stays_on_top_of_the_k_searched_edges(tmp_path):
    """The compiler counts top-k among the searched edges with fixed edges extra; the selector must agree
    (a fixed edge once took one of the k places, so a searched edge into that node could never be chosen)."""
    path = tmp_path / "fixed_edge.nas"
    path.write_text(FIXED_EDGE_SPACE)
    ir = compile_space(str(path), input_shape=(3, 8, 8))
    net = build_supernet(ir, load_relaxation("softmax"), generator=torch.Generator().manual_seed(0))
    for group in net.alphas:
        rows = net.group_rows[group]
        a = torch.zeros(len(rows), 2)
        a[rows.index("n1<-n0"), 1] = 5.0  # n0 -> n1 by skip is the strongest searched edge into n1
        _set(net, group, a)
    g = _select(net, ir)
    for cell in g.cells.values():
        into_n1 = sorted((e.input, e.op) for e in cell.edges if e.node == 3)
        assert into_n1 == [(1, "sep_3x3"), (2, "skip")]
        assert len([e for e in cell.edges if e.node == 2]) == 1
    specialise_to_genotype(ir, g)


def test_a_genotype_may_leave_out_a_fixed_edge_but_not_change_its_op(tmp_path):
    path = tmp_path / "fixed_edge.nas"
    path.write_text(FIXED_EDGE_SPACE)
    ir = compile_space(str(path), input_shape=(3, 8, 8))
    searched = [G.GenoEdge(node=2, input=0, op="skip"), G.GenoEdge(node=3, input=2, op="mp")]
    cells = lambda edges: {c: G.GenoCell(n_inputs=2, n_nodes=2, edges=tuple(edges), concat=(2, 3))  # noqa: E731
                           for c in ("normal", "reduce")}
    without = specialise_to_genotype(ir, G.Genotype(space="fixed_edge", cells=cells(searched)))
    named = specialise_to_genotype(ir, G.Genotype(space="fixed_edge", cells=cells(
        [*searched, G.GenoEdge(node=3, input=1, op="sep_3x3")])))
    assert without.meta["fingerprint"] == named.meta["fingerprint"]
    assert ("s1", "n1") in without.cells["normal"].edges
    with pytest.raises(GenotypeError, match="edge 3<-1: op .skip. is not a candidate; candidates: sep_3x3"):
        specialise_to_genotype(ir, G.Genotype(space="fixed_edge", cells=cells(
            [*searched, G.GenoEdge(node=3, input=1, op="skip")])))
