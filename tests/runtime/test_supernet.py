"""Lowering a compiled space to a supernet (and a derived network): counts, α, forward/backward, BN rules."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasc.compiler import genotype as G
from nasc.compiler.derive import specialise_to_genotype
from nasc.compiler.pipeline import compile_space
from nasc.errors import BuildError
from nasc.runtime.relaxations.base import load_relaxation
from nasc.runtime.supernet import build_network, build_supernet

TINY = {"C": 4, "layers": 5, "N": 1}  # the size parameters a bundled space may declare
POOLS = (nn.MaxPool2d, nn.AvgPool2d)

DARTS_V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
            "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
            "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
NB201_ARCH = "|nor_conv_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"


@pytest.fixture(autouse=True)
def _one_thread():
    # Two intra-op threads on a loaded 2-core machine slow torch down by 10-50x; one is always enough here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.lru_cache(maxsize=None)
def _supernet(space: str):
    """A full-size supernet at 3x32x32, cached: the tests using it only read it."""
    # Compiled without a PassContext, so a space's own relaxation need not be registered; the structural
    # tests lower every space with the softmax relaxation, which keeps every candidate at full width.
    ir = compile_space(space, input_shape=(3, 32, 32))
    return ir, build_supernet(ir, load_relaxation("softmax"), generator=torch.Generator().manual_seed(0))


@functools.lru_cache(maxsize=None)
def _tiny_ir(space: str):
    params = {k: v for k, v in TINY.items() if k in compile_space(space).params}
    if "classes" in compile_space(space).params:
        params["classes"] = 10
    return compile_space(space, params=params, input_shape=(3, 32, 32))


def _tiny(space: str):
    """A small supernet of a bundled space (the IR is compiled once per space; the network is fresh)."""
    ir = _tiny_ir(space)
    return ir, build_supernet(ir, load_relaxation("softmax"), generator=torch.Generator().manual_seed(0))


def _weights(net) -> int:
    return sum(p.numel() for p in net.weight_parameters())


def test_weight_count_equals_compiler_cost(bundled_space):
    """With the space's own relaxation: the compiler costs what that relaxation builds (PC-DARTS: C/K wide edges)."""
    ir = compile_space(bundled_space, input_shape=(3, 32, 32))
    net = build_supernet(ir, load_relaxation(ir.relax.name, dict(ir.relax.options)))
    assert _weights(net) == ir.meta["costs"]["total_without_aux"]["params"]



@pytest.mark.parametrize("size", [33, 7])
def test_odd_input_runs_through_the_reductions(size):
    """An odd map before a reduction: the compiler's ceil(h/2) is what the padded FactorizedReduce produces."""
    ir = compile_space("darts", params={"C": 4, "layers": 5}, input_shape=(3, size, size))
    net = build_supernet(ir, load_relaxation("softmax"), generator=torch.Generator().manual_seed(0))
    assert _weights(net) == ir.meta["costs"]["total_without_aux"]["params"]
    assert net(torch.randn(2, 3, size, size)).shape == (2, 10)



def test_a_zero_node_in_a_reduction_cell_builds_at_the_reduced_resolution():
    text = """space d(C = 8)
op none = zero(stride)
cell normal(s0, s1):
    nodes n0, n1
    edge s0, s1 -> n0: [max_pool(3, stride), conv(3, stride)]
    edge n0 -> n1: none
    output concat
cell reduce = normal with stride 2 on inputs
network:
    stem conv(3, out = 2 * C) > bn
    preprocess relu > conv(1) > bn | on stride 2: factorized_reduce
    stack 3 x normal, reduce at [1], widen 2 at reduce
    head global_avg_pool > linear(10)
"""
    ir = compile_space("t.nas", text=text)
    net = build_supernet(ir, load_relaxation("softmax"), generator=torch.Generator().manual_seed(0))
    assert _weights(net) == ir.meta["costs"]["total_without_aux"]["params"]
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("space, expected", [
    # official quark0/darts cnn/model_search.py Network(C=16, num_classes=10, layers=8), 8 DARTS ops
    ("darts", 1_930_618),
    # AutoDL-Projects NB201 DARTS search model (TinyNetworkDarts), C=16, N=5, affine-free BN, biased cell convs
    ("nb201", 1_692_826),
])
def test_pinned_supernet_weight_counts(space, expected):
    ir, net = _supernet(space)
    assert ir.meta["costs"]["total_without_aux"]["params"] == expected
    assert _weights(net) == expected



def test_sharpdarts_sharper_ops_are_the_official_sharper_primitives():
    """sharpdarts.nas' `sharper_ops` is sharpDARTS' SHARPER_PRIMITIVES (cnn/genotypes.py), dil_flood_conv_3x3
    included; its supernet (C=16, 8 cells) holds the official model_search.Network's 9,707,002 weights. The set
    lacked dil_flood_conv_3x3: 1,979,264 weights and an op short."""
    text = ('space sharper extends "sharpdarts.nas"\n'
            "cell normal(s0, s1):\n    nodes n0..n3 = sum\n    edges dense: sharper_ops\n    output concat(n0..n3)\n")
    ir = compile_space("sharper.nas", text=text)
    assert ir.alpha_groups["normal"]["rows"][0]["ops"] == [
        "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "sep_conv_7x7",
        "dil_conv_3x3", "dil_conv_5x5", "flood_conv_3x3", "flood_conv_5x5", "dil_flood_conv_3x3"]
    assert ir.meta["costs"]["total_without_aux"]["params"] == 9_707_002

def test_pcdarts_under_softmax_is_the_darts_supernet():
    """PC-DARTS extends the DARTS space; only its relaxation narrows the edges (to C/K channels)."""
    _, net = _supernet("pcdarts")
    assert _weights(net) == 1_930_618


@pytest.mark.parametrize("space, shapes", [
    ("darts", {"normal": (14, 8), "reduce": (14, 8)}),
    ("nb201", {"cell": (6, 5)}),
])
def test_alpha_shapes(space, shapes):
    _, net = _supernet(space)
    assert {g: tuple(a.shape) for g, a in net.alphas.items()} == shapes
    assert all(net.mask(g).all() for g in net.alphas)  # every edge offers every op: no padding
    assert net.arch_parameters() == list(net.alphas.values())


def test_alpha_rows_follow_darts_edge_order():
    _, net = _tiny("darts")
    # node 2 takes {0, 1}, node 3 {0, 1, 2}, node 4 {0..3}, node 5 {0..4} (DARTS model_search.py)
    assert net.group_nodes["normal"] == [2, 2, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 5]
    assert net.group_ops["normal"][0] == ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
                                          "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]


def test_nb201_alpha_rows_are_the_sorted_edges():
    _, net = _tiny("nb201")
    assert net.group_nodes["cell"] == [1, 2, 2, 3, 3, 3]
    assert net.group_ops["cell"][0] == ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]


def test_forward_backward(bundled_space):
    ir, net = _tiny(bundled_space)
    classes = ir.params.get("classes", 10)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 2])
    out = net(x)
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()
    F.cross_entropy(out, y).backward()
    for a in net.arch_parameters():
        assert a.grad is not None and a.grad.abs().sum() > 0
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing  # every candidate runs in the softmax supernet, so every weight gets a gradient


def test_group_weights_are_row_softmaxes(bundled_space):
    _, net = _tiny(bundled_space)
    for g, w in net.group_weights().items():
        assert w.ops.shape == net.alphas[g].shape
        torch.testing.assert_close(w.ops.sum(dim=1), torch.ones(w.ops.shape[0]))
        assert torch.all(w.ops[~net.mask(g)] == 0)


def test_arch_and_weight_parameters_partition_the_parameters(bundled_space):
    _, net = _tiny(bundled_space)
    arch = {id(p) for p in net.arch_parameters()}
    weights = {id(p) for p in net.weight_parameters()}
    assert arch and weights
    assert not arch & weights
    assert arch | weights == {id(p) for p in net.parameters()}
    assert len(weights) == len(net.weight_parameters())  # no parameter listed twice


def _bns(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_search_bn_is_affine_free_inside_cells_and_affine_in_the_stem(space):
    ir, net = _tiny(space)
    kinds = {l.id: l.kind for l in ir.layers()}
    cells = [lid for lid, kind in kinds.items() if kind == "cell"]
    assert cells
    for lid in cells:
        bns = _bns(net.layers[lid])
        assert bns and all(not bn.affine for bn in bns), lid
    stem = [lid for lid, kind in kinds.items() if kind == "stem"][0]
    assert _bns(net.layers[stem]) and all(bn.affine for bn in _bns(net.layers[stem]))


def test_nb201_search_cells_have_biased_convs():
    """AutoDL: conv bias = not affine, so the affine-free search cells carry biases."""
    _, net = _tiny("nb201")
    convs = [m for m in net.layers["cell0"].modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.bias is not None for c in convs)


def test_supernet_pools_are_followed_by_bn():
    _, net = _tiny("darts")
    edge = net.layers["cell0"].edges["n0<-s0"]
    for name, cand in zip(edge.names, edge.candidates):
        if name in ("max_pool_3x3", "avg_pool_3x3"):
            mods = list(cand.modules())
            assert any(isinstance(m, POOLS) for m in mods) and any(isinstance(m, nn.BatchNorm2d) for m in mods)


def test_avg_pool_excludes_padding():
    """DARTS and NB201 pool with count_include_pad=False."""
    for space in ("darts", "nb201"):
        _, net = _tiny(space)
        pools = [m for m in net.modules() if isinstance(m, nn.AvgPool2d) and m.kernel_size == 3]
        assert pools and all(not p.count_include_pad for p in pools)


def _pool_edges_have_no_bn(net) -> int:
    seen = 0
    for lid, module in net.layers.items():
        if not hasattr(module, "edges"):
            continue
        for key, edge in module.edges.items():
            mods = list(edge.modules())
            if any(isinstance(m, POOLS) for m in mods):
                seen += 1
                assert not any(isinstance(m, nn.BatchNorm2d) for m in mods), f"{lid} {key}"
    return seen


def test_derived_darts_network_is_affine_and_has_no_bn_after_pooling():
    ir = compile_space("darts", params={"C": 4, "layers": 5}, input_shape=(3, 32, 32))
    net = build_network(specialise_to_genotype(ir, G.from_darts(DARTS_V2)))
    assert net.arch_parameters() == []
    bns = _bns(net)
    assert bns and all(bn.affine for bn in bns)
    assert _pool_edges_have_no_bn(net) > 0  # DARTS_V2's reduction cell is mostly max pools
    x = torch.randn(2, 3, 32, 32)
    logits, aux = net(x, with_aux=True)
    assert logits.shape == (2, 10) and aux.shape == (2, 10)
    assert net(x).shape == (2, 10)


def test_derived_nb201_network_is_affine_with_unbiased_convs():
    ir = compile_space("nb201", params={"C": 4, "N": 1}, input_shape=(3, 32, 32))
    net = build_network(specialise_to_genotype(ir, G.from_nb201(NB201_ARCH)))
    bns = _bns(net)
    assert bns and all(bn.affine for bn in bns)
    convs = [m for m in net.layers["cell0"].modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.bias is None for c in convs)
    assert _pool_edges_have_no_bn(net) > 0
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_build_network_refuses_a_space_with_choices_left():
    ir = compile_space("nb201", params={"C": 4, "N": 1})
    with pytest.raises(BuildError, match="choices"):
        build_network(ir)


def test_same_generator_same_alphas_and_forward_is_stateless():
    _, a = _tiny("nb201")
    _, b = _tiny("nb201")
    for ga, gb in zip(a.arch_parameters(), b.arch_parameters()):
        assert torch.equal(ga, gb)
    a.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(a(x), a(x))


def _load_into_supernet(derived, supernet, choice: dict[tuple[str, str], int]) -> None:
    """Copy the derived network's tensors into the supernet's chosen candidates (names differ by `candidates.k`)."""
    target = supernet.state_dict()
    with torch.no_grad():
        for name, value in derived.state_dict().items():
            parts = name.split(".")  # layers.<cell>.edges.<key>.<rest>
            if parts[1] in derived.aux_ids:
                continue  # the aux head exists in the derived network only
            if parts[2:3] == ["edges"] and (parts[1], parts[3]) in choice:
                name = ".".join(parts[:4] + ["candidates", str(choice[parts[1], parts[3]])] + parts[4:])
            if name in target:
                target[name].copy_(value)
            else:  # only the derived network's affine BN parameters (at their 1 / 0 init) have no counterpart
                assert name.endswith((".weight", ".bias")), name
        for name, value in target.items():
            if name.endswith(".bias") and name not in derived.state_dict():
                value.zero_()  # NB201 search convs carry a bias; the benchmark network's do not
    supernet.load_state_dict(target)


@pytest.mark.parametrize("space, text", [
    ("nb201", NB201_ARCH.replace("avg_pool_3x3", "skip_connect")),  # no pools: supernet pools add BN
    ("darts", "Genotype(normal=[('sep_conv_3x3', 1), ('dil_conv_5x5', 0), ('skip_connect', 2), ('sep_conv_5x5', 1), "
              "('dil_conv_3x3', 3), ('sep_conv_3x3', 0), ('skip_connect', 4), ('sep_conv_5x5', 2)], "
              "normal_concat=[2, 3, 4, 5], reduce=[('sep_conv_5x5', 0), ('skip_connect', 1), ('dil_conv_3x3', 2), "
              "('sep_conv_3x3', 0), ('dil_conv_5x5', 1), ('skip_connect', 3), ('sep_conv_3x3', 4), "
              "('dil_conv_3x3', 0)], reduce_concat=[2, 3, 4, 5])"),
])
def test_one_hot_supernet_equals_the_derived_network(space, text):
    """Equivalence: with α one-hot on the genotype (and `none` on dropped edges) the supernet computes the derived
    network, once the derived network's weights are copied into the chosen candidates."""
    ir, supernet = _tiny(space)
    genotype = G.parse_any(text)
    derived = build_network(specialise_to_genotype(ir, genotype))
    choice, hot = {}, {}
    for group, alpha in supernet.alphas.items():
        a = torch.zeros_like(alpha)
        ops = supernet.group_ops[group]
        for r in range(len(supernet.group_rows[group])):
            a[r, ops[r].index("none")] = 1e4
        hot[group] = a
    for lid, kind, _, group in supernet.schedule:
        if kind != "cell":
            continue
        cell = supernet.layers[lid]
        index = {}
        for _, entries, _, _ in cell.plan:
            for key, src, row in entries:
                index[key] = (src, row)
        for e in genotype.cells[group].edges:
            key = next(k for k, (src, row) in index.items()
                       if src == e.input and supernet.group_nodes[group][row] == e.node)
            row = index[key][1]
            k = supernet.group_ops[group][row].index(e.op)
            hot[group][row] = 0
            hot[group][row, k] = 1e4
            choice[lid, key] = k
    _load_into_supernet(derived, supernet, choice)
    with torch.no_grad():
        for group, a in hot.items():
            supernet.alphas[group].copy_(a)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    supernet.train()
    derived.train()
    torch.testing.assert_close(supernet(x), derived(x), rtol=1e-4, atol=1e-5)


def test_context_names_in_op_bodies_and_candidate_lists_mean_the_edges_values_over_a_parameter():
    """docs/language.md: inside an op body `C` is the edge's channels even though the space has a parameter C.

    sharpDARTS' flood conv widens its middle to 4·C of the edge (official SharpSepConv: C_mid = 4·C_out);
    evaluated with the parameter it was a constant 4·16 in every cell.
    """
    text = ('space flood extends "sharpdarts.nas"\n'
            "ops darts_ops = [flood_conv_3x3, conv(1, stride, out = C), skip_connect]\n")
    ir = compile_space("flood.nas", text=text, params={"C": 4, "layers": 3}, input_shape=(3, 8, 8))
    net = build_supernet(ir, load_relaxation("softmax"), generator=torch.Generator().manual_seed(0))
    widths = set()
    for edge in (m for m in net.modules() if hasattr(m, "names") and hasattr(m, "candidates")):
        flood = [m for m in edge.candidates[edge.names.index("flood_conv_3x3")].modules() if isinstance(m, nn.Conv2d)]
        middle, last = flood[1], flood[-1]
        assert middle.out_channels == 4 * last.out_channels
        inline = next(m for m in edge.candidates[1].modules() if isinstance(m, nn.Conv2d))
        assert inline.out_channels == last.out_channels
        widths.add(last.out_channels)
    assert widths == {4, 8, 16}
    assert ir.alpha_groups["normal"]["rows"][0]["ops"][1] == "conv(1, stride, out=C)"  # named as written



def test_an_op_used_as_the_stem_reads_the_space_parameter_c_as_the_stem_itself_does():
    """The network's own pipelines keep C the parameter, inside ops too (3 * C = 48 stem channels)."""
    text = ('space st extends "darts.nas"\nop mystem = conv(3, out = 3 * C) > bn\nnetwork:\n    stem mystem\n'
            "    preprocess relu > conv(1) > bn | on stride 2: factorized_reduce\n"
            "    stack layers x normal, reduce at [layers // 3, 2 * layers // 3], widen 2 at reduce\n"
            "    head global_avg_pool > linear(classes)\n")
    ir = compile_space("st.nas", text=text)
    darts = compile_space("darts")
    assert ir.meta["costs"]["total_without_aux"]["params"] == darts.meta["costs"]["total_without_aux"]["params"]
