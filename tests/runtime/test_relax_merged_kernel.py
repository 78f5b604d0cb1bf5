"""merged-kernel (MergeNAS): one masked shared kernel must equal the α-weighted separate convolutions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nasc.compiler.pipeline import compile_space
from nasc.errors import BuildError
from nasc.runtime.relaxations.base import MixedEdge, load_relaxation
from nasc.runtime.relaxations.merged_kernel import (MergedConv, MergedEdge, MergedKernel, kernel_mask, lattice,
                                                     merge_candidates)
from nasc.runtime.supernet import build_supernet

DARTS_CONVS = ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]

POOLS_ONLY = """
space pools(C = 4, layers = 3, classes = 10)
op max_pool_3x3 = max_pool(3, stride) > bn if searching
op avg_pool_3x3 = avg_pool(3, stride) > bn if searching
op skip_connect = identity | on stride 2: factorized_reduce
op none         = zero(stride)
op conv_3x3     = relu > conv(3, stride) > bn
ops pool_ops = [none, max_pool_3x3, avg_pool_3x3, skip_connect, conv_3x3]
cell normal(s0, s1):
    nodes n0..n1 = sum
    edges dense: pool_ops
    output concat(n0..n1)
cell reduce = normal with stride 2 on inputs
network:
    input 1 x 8 x 8
    stem conv(3, out = 3 * C) > bn
    preprocess relu > conv(1) > bn | on stride 2: factorized_reduce
    stack layers x normal, reduce at [layers // 3, 2 * layers // 3], widen 2 at reduce
    head global_avg_pool > linear(classes)
alpha shared per cell
relax softmax
select top 2 per node excluding none
"""


def _darts(relax: str = "darts", **params):
    ir = compile_space("spaces/darts.nas", params={"C": 4, "layers": 3, **params}, input_shape=(1, 8, 8))
    return ir, build_supernet(ir, load_relaxation(relax), generator=torch.Generator().manual_seed(0))


def _softmax_edge(space: str, stride: int):
    """Candidates and names of one searchable edge of the given stride in a softmax supernet."""
    torch.manual_seed(0)
    if space == "darts":
        _, net = _darts()
    else:
        ir = compile_space("spaces/nb201.nas", params={"C": 4, "N": 1}, input_shape=(1, 8, 8))
        net = build_supernet(ir, load_relaxation("darts"))
    for cell in net.layers.values():
        for edge in getattr(cell, "edges", {}).values():
            if isinstance(edge, MixedEdge):
                conv = next(m for m in edge.candidates if isinstance(m, nn.Sequential) and len(m) > 2)
                if conv[1].stride[0] == stride:
                    return list(edge.candidates), list(edge.names)
    raise AssertionError("no such edge")


def _in_channels(edge: MergedEdge) -> int:
    conv = edge.merged[0]
    return conv.weight.shape[1] * conv.groups


def _randomise_bn(module: nn.Module, gen: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.randn(m.num_features, generator=gen))
                m.bias.data.copy_(torch.randn(m.num_features, generator=gen))


# -- masks -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("k,d,expected", [(3, 1, [3, 4, 5]), (5, 1, [2, 3, 4, 5, 6]), (3, 2, [2, 4, 6]),
                                          (5, 2, [0, 2, 4, 6, 8])])
def test_lattices_inside_the_9x9_kernel(k, d, expected):
    assert lattice(k, d, 9) == expected
    mask = kernel_mask(k, d, 9)
    assert mask.shape == (9, 9) and mask.sum() == k * k
    # EASY's slicing (operations_merge.py::MergeSepConv.get_merge_kernel)
    easy = {(3, 1): (slice(3, 6), slice(3, 6)), (5, 1): (slice(2, 7), slice(2, 7)),
            (3, 2): (slice(2, 7, 2), slice(2, 7, 2)), (5, 2): (slice(0, 9, 2), slice(0, 9, 2))}[(k, d)]
    ref = torch.zeros(9, 9)
    ref[easy] = 1
    assert torch.equal(mask, ref)


def test_lattice_rejects_kernels_that_do_not_fit():
    with pytest.raises(ValueError):
        lattice(5, 2, 7)


# -- recognising and merging the DARTS and NB201 candidates ----------------------------------------


def test_darts_edge_merges_the_four_convolutions():
    cands, names = _softmax_edge("darts", 1)
    edge = merge_candidates(cands, names)
    assert isinstance(edge, MergedEdge)
    assert len(edge.merged) == 1
    conv = edge.merged[0]
    assert conv.names == DARTS_CONVS and conv.geometry == [(3, 1), (5, 1), (3, 2), (5, 2)]
    assert conv.k_max == 9 and conv.weight.shape == (4, 1, 9, 9)
    assert [names[i] for i in edge.separate_ids] == ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"]
    # the initial shared kernel holds each candidate's own initial kernel on its taps (smallest window wins)
    assert torch.equal(conv.weight[:, :, 3:6, 3:6], cands[names.index("sep_conv_3x3")][1].weight)
    dil5 = cands[names.index("dil_conv_5x5")][1].weight
    assert torch.equal(conv.weight[:, :, 0:9:2, 0:9:2][:, :, [0, 4]], dil5[:, :, [0, 4]])  # outer rows: dil5's own


def test_nb201_edge_merges_the_dense_convolutions():
    cands, names = _softmax_edge("nb201", 1)
    edge = merge_candidates(cands, names)
    conv = edge.merged[0]
    assert conv.family == "dense" and conv.names == ["nor_conv_1x1", "nor_conv_3x3"]
    assert conv.k_max == 3 and conv.weight.shape == (4, 4, 3, 3) and conv.bias is not None


def _check_equivalence(space: str, stride: int, size: int, renormalise: bool = True):
    cands, names = _softmax_edge(space, stride)
    edge = merge_candidates(cands, names, renormalise=renormalise)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for conv in edge.merged:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
    _randomise_bn(edge, gen)
    c = _in_channels(edge)
    x = torch.randn(3, c, size, size, generator=gen)
    w = torch.softmax(torch.randn(len(names), generator=gen), 0)
    separate = edge.candidate_modules()
    # before BN, train or eval alike: a convex combination of the candidates' features (a bias is shared)
    conv, ids = edge.merged[0], edge.merge_ids[0]
    a = w[ids] / w[ids].sum()
    feats = conv.features(x, a)
    ref = sum(a[j] * nn.Sequential(*list(separate[i])[:-1])(x) for j, i in enumerate(ids))  # drop the BN
    assert torch.allclose(feats, ref, atol=1e-5)
    # after BN, with fixed (eval) statistics: the merged edge is exactly the α-weighted sum of the candidates
    edge.eval()
    for m in separate:
        m.eval()
    out = edge(x, w)
    ref = sum(wi * m(x) for wi, m in zip(w, separate))
    assert out.shape == ref.shape == (3, c, -(-size // stride), -(-size // stride))
    return out, ref


@pytest.mark.parametrize("space", ["darts", "nb201"])
@pytest.mark.parametrize("stride,size", [(1, 8), (2, 8), (2, 7)])
def test_merged_conv_equals_weighted_separate_convs(space, stride, size):
    if space == "nb201" and stride == 2:
        pytest.skip("NB201 cells have no stride-2 edges")
    out, ref = _check_equivalence(space, stride, size)
    assert torch.allclose(out, ref, atol=1e-5), (out - ref).abs().max()


def test_easy_literal_form_is_linear_before_bn_only():
    # renormalise = False: EASY's MergeSepConv; pre-BN linearity still holds (checked inside), the BN shift does not
    out, ref = _check_equivalence("darts", 1, 8, renormalise=False)
    assert not torch.allclose(out, ref, atol=1e-3)


def test_active_subset_and_zero_weights():
    cands, names = _softmax_edge("darts", 1)
    edge = merge_candidates(cands, names).eval()
    separate = edge.candidate_modules()
    for m in separate:
        m.eval()
    x = torch.randn(2, 4, 8, 8)
    w = torch.softmax(torch.randn(len(names)), 0)
    i = names.index("dil_conv_3x3")
    assert torch.allclose(edge(x, w, [i]), w[i] * separate[i](x), atol=1e-5)
    assert torch.allclose(edge(x, w, [0, i]), w[0] * separate[0](x) + w[i] * separate[i](x), atol=1e-5)
    assert isinstance(edge(x, w, [1]), torch.Tensor)
    assert torch.equal(edge(x, w, [0]), torch.zeros_like(x))  # only `none` active
    full = edge(x, w)
    edge.share = False  # computing `none` too changes nothing
    assert torch.allclose(edge(x, w), full, atol=1e-6)
    w0 = torch.zeros(len(names))
    w0[names.index("skip_connect")] = 1.0  # hard one-hot on a non-conv: the merged branch adds exactly zero
    out = edge(x, w0)
    assert torch.isfinite(out).all() and torch.allclose(out, x)


class _ListIndexSpy(torch.Tensor):
    """Edge weights that record indexing with a Python list (a host-to-device copy on a GPU)."""

    lists: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.__getitem__ and isinstance(args[1], list):
            cls.lists.append(args[1])
        return super().__torch_function__(func, types, args, kwargs or {})


def test_full_pass_takes_the_merged_weights_without_host_data():
    """graph_safe: a CUDA graph cannot capture w[[4, 5, 6, 7]] (the list is copied to the device every pass)."""
    cands, names = _softmax_edge("darts", 1)
    edge = merge_candidates(cands, names).eval()
    x = torch.randn(2, 4, 8, 8)
    w = torch.softmax(torch.randn(len(names)), 0)
    ref = edge(x, w)
    _ListIndexSpy.lists = []
    out = edge(x, w.as_subclass(_ListIndexSpy))
    assert _ListIndexSpy.lists == []
    torch.testing.assert_close(out.as_subclass(torch.Tensor), ref)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("renormalise", [True, False])
def test_alpha_gradient_matches_finite_differences(train, renormalise):
    cands, names = _softmax_edge("darts", 2)
    edge = merge_candidates(cands, names, renormalise=renormalise).double()
    _randomise_bn(edge, torch.Generator().manual_seed(3))
    edge.train(train)
    c = _in_channels(edge)
    x = torch.randn(2, c, 6, 6, dtype=torch.double)
    proj = torch.randn(2, c, 3, 3, dtype=torch.double)
    alpha = (0.5 * torch.randn(len(names), dtype=torch.double)).requires_grad_()

    def loss(a):
        return (edge(x, torch.softmax(a, 0)) * proj).sum()

    assert torch.autograd.gradcheck(loss, (alpha,), eps=1e-6, atol=1e-6)
    (g,) = torch.autograd.grad(loss(alpha), alpha)
    for n in DARTS_CONVS:
        assert g[names.index(n)].abs() > 0


# -- the relaxation in a supernet ------------------------------------------------------------------


def test_preset_and_options():
    relax = load_relaxation("mergenas")
    assert isinstance(relax, MergedKernel) and relax.name == "merged-kernel"
    assert relax.options == {"renormalise": True}
    assert load_relaxation("merged-kernel", {"renormalise": False}).options["renormalise"] is False
    with pytest.raises(BuildError, match="no option"):
        load_relaxation("mergenas", {"stages": 2})
    with pytest.raises(BuildError, match="renormalise"):
        load_relaxation("mergenas", {"renormalise": "yes"})


def test_darts_supernet_builds_forwards_backwards_with_fewer_weights():
    torch.manual_seed(0)
    ir, net = _darts("mergenas")
    net.relax.setup(ir, net)
    edges = [e for cell in net.layers.values() for e in getattr(cell, "edges", {}).values()]
    assert len(edges) == 3 * 14 and all(isinstance(e, MergedEdge) for e in edges)
    x = torch.randn(4, 1, 8, 8)
    logits = net(x)
    assert logits.shape == (4, 10)
    logits.square().mean().backward()
    for a in net.arch_parameters():
        assert a.grad is not None and a.grad.abs().sum() > 0
    assert all(e.merged[0].weight.grad is not None for e in edges)
    merged_weights = sum(p.numel() for p in net.weight_parameters())
    _, soft = _darts("darts")
    assert merged_weights < sum(p.numel() for p in soft.weight_parameters())
    probs = net.relax.probabilities(net.alphas["normal"], net.mask("normal"), {}, net.group_nodes["normal"])
    assert probs.shape == (14, 8) and torch.allclose(probs.sum(1), torch.ones(14))


def test_nb201_supernet_builds():
    ir = compile_space("spaces/nb201.nas", params={"C": 4, "N": 1}, input_shape=(1, 8, 8))
    relax = load_relaxation("mergenas")
    net = build_supernet(ir, relax)
    relax.setup(ir, net)
    net(torch.randn(2, 1, 8, 8)).sum().backward()


def test_space_without_mergeable_convolutions_is_rejected():
    ir = compile_space("t.nas", text=POOLS_ONLY)
    relax = load_relaxation("mergenas")
    net = build_supernet(ir, relax)  # every edge falls back to a plain mixture
    assert not any(isinstance(m, MergedConv) for m in net.modules())
    with pytest.raises(BuildError, match="no edge has two convolution candidates") as info:
        relax.setup(ir, net)
    assert "pools" in info.value.message and info.value.hint


def test_space_without_mergeable_convolutions_is_rejected_by_search(tmp_path):
    from nasc.runtime.search import Request, prepare

    path = tmp_path / "pools.nas"
    path.write_text(POOLS_ONLY)
    with pytest.raises(BuildError, match="merged-kernel"):
        prepare(Request(space=str(path), relax="mergenas", overrides={"epochs": 1, "batch": 32}))


def _search(tmp_path):
    from nasc.runtime.search import Request, prepare, run_search

    job = prepare(Request(space="spaces/darts.nas", params={"C": 4, "layers": 5}, relax="mergenas",
                          overrides={"epochs": 1, "batch": 32, "train_portion": 0.2}))
    assert isinstance(job.relax, MergedKernel)
    return run_search(job, tmp_path / "run")


@pytest.mark.slow
def test_one_epoch_search_end_to_end(tmp_path):
    import json

    result = _search(tmp_path)
    ops = {e.op for cell in result.genotype.cells.values() for e in cell.edges}
    assert ops and ops <= {"max_pool_3x3", "avg_pool_3x3", "skip_connect", *DARTS_CONVS}  # real op names
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["relax"]["name"] == "merged-kernel"


def test_recompute_lowering_gives_the_same_outputs_and_alpha_gradients():
    x = torch.randn(4, 1, 8, 8)
    results = []
    for mode in ("plain", "recompute"):
        torch.manual_seed(0)
        _, net = _darts("mergenas")
        net.set_memory(mode)
        y = net(x)
        y.square().mean().backward()
        results.append((y.detach(), net.alphas["normal"].grad.clone()))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-7)
