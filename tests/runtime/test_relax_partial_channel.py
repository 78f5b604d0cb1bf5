"""PC-DARTS (`partial-channel`): 1/k of the channels through the ops, shuffle, edge normalisation β."""

from __future__ import annotations

import json

import pytest
import torch

from nasc.compiler.pipeline import compile_space
from nasc.errors import BuildError
from nasc.runtime.config import make_config
from nasc.runtime.relaxations.base import load_relaxation, preset
from nasc.runtime.relaxations.partial_channel import PartialChannel, PartialChannelEdge, node_softmax
from nasc.runtime.selectors import load_selector, strengths
from nasc.runtime.supernet import build_supernet

C, K = 8, 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These networks are tiny: one intra-op thread avoids oversubscription on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    ir = compile_space("spaces/darts.nas", params={"C": C, "layers": 3}, input_shape=(1, 8, 8), ctx=None)
    relax = load_relaxation("partial-channel", {"k": K})
    net = build_supernet(ir, relax, generator=torch.Generator().manual_seed(0))
    relax.setup(ir, net)
    return ir, relax, net


def _edges(net, stride):
    return [m for m in net.modules() if isinstance(m, PartialChannelEdge) and m.stride == stride]


def _shuffled(cat: torch.Tensor, k: int) -> torch.Tensor:
    """The channel shuffle written as an explicit permutation: output channel j·k + g is input g·(C/k) + j."""
    c = cat.shape[1]
    order = [g * (c // k) + j for j in range(c // k) for g in range(k)]
    return cat[:, order]


def test_only_a_kth_of_the_channels_reach_the_ops(tiny):
    _, _, net = tiny
    seen: list[tuple[int, int]] = []
    hooks = []
    for edge in _edges(net, 1) + _edges(net, 2):
        for cand in edge.candidates:
            hooks.append(cand.register_forward_pre_hook(
                lambda m, args, edge=edge: seen.append((args[0].shape[1], edge.channels))))
    try:
        net(torch.randn(2, 1, 8, 8))
    finally:
        for h in hooks:
            h.remove()
    assert seen and all(got == full // K for got, full in seen)


@pytest.mark.parametrize("stride", [1, 2])
def test_edge_is_mixture_on_first_part_bypass_and_shuffle(tiny, stride):
    _, _, net = tiny
    edge = _edges(net, stride)[0].eval()  # eval: BN uses running statistics, so each op is a fixed function
    c = edge.channels
    x = torch.randn(2, c, 4, 4)
    w = torch.softmax(torch.randn(len(edge.candidates)), 0)
    with torch.no_grad():
        out = edge(x, w)
        part = x[:, : c // K]
        mixed = sum(wi * op(part) for wi, op in zip(w, edge.candidates))
        bypass = x[:, c // K:] if stride == 1 else torch.nn.functional.max_pool2d(x[:, c // K:], 2, 2)
    assert out.shape == (2, c, 4 // stride, 4 // stride)
    torch.testing.assert_close(out, _shuffled(torch.cat([mixed, bypass], 1), K))
    if stride == 1:  # the bypass channels come out unchanged, at their shuffled positions
        order = [g * (c // K) + j for j in range(c // K) for g in range(K)]
        for pos, src in enumerate(order):
            if src >= c // K:
                assert torch.equal(out[:, pos], x[:, src])


def test_beta_is_normalised_per_node(tiny):
    _, relax, net = tiny
    for group in net.alphas:
        beta = net.extras(group)["beta"]
        assert beta.shape == (len(net.group_rows[group]),)
        assert 0 < beta.abs().max() < 1e-2  # 1e-3·N(0, 1)
        with torch.no_grad():
            beta.copy_(torch.randn_like(beta))
        w = relax.group_weights(net.alphas[group], net.mask(group), net.extras(group), net.group_nodes[group])
        torch.testing.assert_close(w.ops, torch.softmax(net.alphas[group], -1))
        nodes = net.group_nodes[group]
        for n in set(nodes):
            rows = [r for r, m in enumerate(nodes) if m == n]
            torch.testing.assert_close(w.edges[rows], torch.softmax(beta[rows], 0))
            assert float(w.edges[rows].detach().sum()) == pytest.approx(1.0, abs=1e-6)
        # β is trained: the node weights carry a gradient back to it
        w.edges.pow(2).sum().backward()
        assert beta.grad is not None and beta.grad.abs().sum() > 0
        beta.grad = None


def test_edge_weights_copy_nothing_from_the_host_after_the_first_pass(tiny, monkeypatch):
    """graph_safe: a CUDA graph cannot capture torch.tensor(host data, device=...), so no forward pass may make one."""
    _, relax, net = tiny
    g = "normal"
    args = (net.alphas[g], net.mask(g), net.extras(g), net.group_nodes[g])
    first = relax.group_weights(*args).edges  # the first (eager, uncaptured) pass may build its constants

    def no_host_copies(*a, **k):
        raise AssertionError("torch.tensor(...) in a forward pass")

    monkeypatch.setattr(torch, "tensor", no_host_copies)
    torch.testing.assert_close(relax.group_weights(*args).edges, first)
    relax.edge_strengths(*args)


def test_node_softmax_keeps_row_order():
    beta = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    out = node_softmax(beta, [3, 2, 3, 2, 2])
    torch.testing.assert_close(out[[0, 2]], torch.softmax(beta[[0, 2]], 0))
    torch.testing.assert_close(out[[1, 3, 4]], torch.softmax(beta[[1, 3, 4]], 0))


def test_supernet_weights_match_the_compilers_count():
    ir = compile_space("spaces/pcdarts.nas", ctx=None)
    relax = load_relaxation("partial-channel", dict(ir.relax.options))
    net = build_supernet(ir, relax, generator=torch.Generator().manual_seed(0))
    n = sum(p.numel() for p in net.weight_parameters())
    assert n == ir.meta["costs"]["total_without_aux"]["params"] == 299_578
    assert sum(p.numel() for p in net.arch_parameters()) == 2 * 14 * 8 + 2 * 14  # α and β of both cell types


def test_selection_uses_alpha_times_beta(tiny):
    ir, relax, net = tiny
    group = "normal"
    rows = {key: r for r, key in enumerate(net.group_rows[group])}
    ops = net.group_ops[group][0]
    sep = ops.index("sep_conv_3x3")
    with torch.no_grad():
        alpha, beta = net.alphas[group], net.extras(group)["beta"]
        alpha.zero_()
        beta.zero_()
        # node n1: by α alone n0 → n1 is strongest; β says s0 and s1
        alpha[rows["n1<-s0"], sep] = 2.0
        alpha[rows["n1<-s1"], sep] = 2.0
        alpha[rows["n1<-n0"], sep] = 3.0
        beta[rows["n1<-s0"]] = 2.0
        beta[rows["n1<-s1"]] = 2.0
        beta[rows["n1<-n0"]] = -2.0
    table = strengths(net, group)
    expect = torch.softmax(alpha, -1) * node_softmax(beta, net.group_nodes[group]).unsqueeze(1)
    torch.testing.assert_close(table, expect.detach())
    geno = load_selector("magnitude").select(net, ir, relax=relax)
    n1 = net.group_nodes[group][rows["n1<-s0"]]
    kept = sorted(e.input for e in geno.cells[group].edges if e.node == n1)
    assert kept == [0, 1]


def test_without_edge_norm_there_is_no_beta():
    ir = compile_space("spaces/darts.nas", params={"C": C, "layers": 3}, input_shape=(1, 8, 8), ctx=None)
    relax = load_relaxation("partial-channel", {"edge_norm": False})
    net = build_supernet(ir, relax)
    assert len(net.arch_extras) == 0
    g = "normal"
    w = relax.group_weights(net.alphas[g], net.mask(g), net.extras(g), net.group_nodes[g])
    assert w.edges is None
    assert relax.edge_strengths(net.alphas[g], net.mask(g), {}, net.group_nodes[g]) is None
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_k_1_is_edge_normalisation_alone():
    """k = 1 puts every channel through the ops; its stride-2 edges used to max-pool an empty bypass and crash."""
    ir = compile_space("spaces/darts.nas", params={"C": 4, "layers": 3}, input_shape=(1, 8, 8), ctx=None)
    relax = load_relaxation("partial-channel", {"k": 1})
    net = build_supernet(ir, relax, generator=torch.Generator().manual_seed(0))
    relax.setup(ir, net)
    assert _edges(net, 2)
    net(torch.randn(2, 1, 8, 8)).sum().backward()
    assert all(p.grad is not None for p in net.arch_parameters())
    edge = _edges(net, 2)[0].eval()
    x = torch.randn(2, edge.channels, 4, 4)
    w = torch.softmax(torch.randn(len(edge.candidates)), 0)
    with torch.no_grad():
        torch.testing.assert_close(edge(x, w), sum(wi * op(x) for wi, op in zip(w, edge.candidates)))


def test_bad_options_and_indivisible_channels():
    with pytest.raises(BuildError):
        PartialChannel({"k": 3}).edge_channels(8)
    with pytest.raises(BuildError):
        PartialChannel({"k": 0})
    with pytest.raises(BuildError):
        PartialChannel({"shuffle": False})
    ir = compile_space("spaces/proxyless.nas", params={"classes": 10}, input_shape=(3, 32, 32), ctx=None)
    relax = PartialChannel()
    with pytest.raises(BuildError, match="cell edges"):
        relax.setup(ir, None)


def test_preset_loads():
    relax = load_relaxation("pcdarts")
    assert isinstance(relax, PartialChannel)
    assert relax.options == {"k": 4, "edge_norm": True}
    options, settings = preset("pcdarts")
    assert settings == {"batch": 256, "lr": 0.1, "lr_min": 0.0, "arch_lr": 6e-4, "arch_start": 15}
    cfg = make_config({}, settings)
    assert (cfg.batch, cfg.lr, cfg.lr_min, cfg.arch_lr, cfg.arch_start) == (256, 0.1, 0.0, 6e-4, 15)


@pytest.mark.slow
def test_end_to_end_search(tmp_path):
    from nasc.runtime.search import Request, prepare, run_search

    job = prepare(Request(space="spaces/pcdarts.nas", params={"C": 8, "layers": 3},
                          overrides={"epochs": 2, "batch": 32, "arch_start": 1}))
    assert isinstance(job.relax, PartialChannel)
    betas0 = {k: v.detach().clone() for k, v in job.net.arch_extras.items()}
    result = run_search(job, tmp_path / "run")
    assert (result.run_dir / "genotype.json").is_file()
    epochs = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["type"] == "epoch"]
    assert [e["arch_updates"] for e in epochs] == [False, True]
    assert all(not torch.equal(v.detach(), betas0[k]) for k, v in job.net.arch_extras.items())
    assert set(result.genotype.cells) == {"normal", "reduce"}
