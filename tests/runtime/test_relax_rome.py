"""The rome relaxation (ROME, ICCV 2023): Gumbel-Top2 edges, GDAS ops, K-sample accumulation, selection."""

from __future__ import annotations

import itertools
import math
import json
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from nasc.compiler.pipeline import compile_space
from nasc.errors import BuildError, SearchError
from nasc.runtime.config import make_config
from nasc.runtime.relaxations import rome as rome_mod
from nasc.runtime.relaxations.base import RELAXATIONS, MixedEdge, load_relaxation, preset
from nasc.runtime.relaxations.rome import Rome
from nasc.runtime.selectors import derive, strengths
from nasc.runtime.supernet import build_supernet

torch.set_num_threads(1)  # tiny nets on a loaded 2-core machine


@pytest.fixture(autouse=True)
def rome_known(monkeypatch):
    """`load_relaxation("rome")` resolves presets through the catalogue; make sure it knows the name."""
    from nasc import catalog

    monkeypatch.setitem(catalog.BUILTIN_RELAXATIONS, "rome", "nasc.runtime.relaxations.rome")
    monkeypatch.setitem(catalog.PRESETS, "rome", "rome")


@pytest.fixture(scope="module")
def ir():
    return compile_space("spaces/rome.nas", params={"C": 4, "layers": 3}, input_shape=(1, 8, 8))


def supernet(ir, relax):
    net = build_supernet(ir, relax, generator=torch.Generator().manual_seed(0))
    relax.setup(ir, net)
    return net


def rows_by_node(node_of_row):
    out = {}
    for r, n in enumerate(node_of_row):
        out.setdefault(n, []).append(r)
    return out


def test_space_is_darts_without_none(ir):
    for group in ir.alpha_groups.values():
        for row in group["rows"]:
            assert row["ops"] == ["max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3",
                                  "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
    assert ir.relax.name == "rome"


def test_top2_picks_two_distinct_edges_per_node():
    relax = Rome({"tau": 1.0})
    node_of_row = [0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3]  # the DARTS cell: 2, 3, 4, 5 inputs
    beta = torch.randn(14, requires_grad=True)
    alpha = torch.randn(14, 7)
    mask = torch.ones(14, 7, dtype=torch.bool)
    torch.manual_seed(0)
    for _ in range(50):
        w = relax.group_weights(alpha, mask, {"beta": beta}, node_of_row)
        assert torch.all((w.edges.detach() == 0) | (w.edges.detach() == 1))
        for rows in rows_by_node(node_of_row).values():
            picked = [r for r in rows if w.edges[r].item() == 1.0]
            assert len(picked) == 2 and len(set(picked)) == 2
            for r in rows:
                assert (len(w.active[r]) == 1) == (r in picked)
        for r in range(14):  # every op weight is a straight-through one-hot
            assert w.ops[r].detach().sum().item() == pytest.approx(1.0)
            if w.active[r]:
                assert w.ops[r, w.active[r][0]].item() == pytest.approx(1.0)


def test_top_k_option_and_small_nodes():
    relax = Rome({"top": 3, "tau": 1.0})
    node_of_row = [0, 0, 1, 1, 1, 1]
    torch.manual_seed(1)
    w = relax.group_weights(torch.zeros(6, 2), torch.ones(6, 2, dtype=torch.bool),
                            {"beta": torch.zeros(6)}, node_of_row)
    assert w.edges[:2].tolist() == [1.0, 1.0]  # a node with ≤ top inputs keeps them all
    assert sum(w.edges[2:].tolist()) == 3.0


@pytest.mark.parametrize("space, params, top", [("spaces/rome.nas", {"C": 4, "layers": 3}, 2),
                                                 ("nb201", {"C": 4, "N": 1}, None)])
def test_auto_top_samples_as_many_inputs_as_the_selector_keeps(space, params, top):
    """ROME samples the in-degree the genotype has (§3.3: search and evaluation consistent). NAS-Bench-201
    selects per edge and keeps every edge; a fixed top 2 dropped one of node 3's three inputs in every
    training and validation pass, though the genotype keeps all three."""
    ir = compile_space(space, params=params, input_shape=(1, 8, 8))
    relax = load_relaxation("rome")
    net = supernet(ir, relax)
    assert relax.top == top and relax.options["top"] == "auto"
    group = "normal" if top else "cell"
    sizes = Counter(net.group_nodes[group])
    torch.manual_seed(0)
    for phase in ("weights", "eval"):
        relax.set_phase(phase)
        w = net.group_weights()[group]
        kept = Counter(n for n, a in zip(net.group_nodes[group], w.active) if a)
        assert kept == {n: min(c, top or c) for n, c in sizes.items()}
    explicit = load_relaxation("rome", {"top": 3})
    supernet(ir, explicit)
    assert explicit.top == explicit.options["top"] == 3  # an explicit top stays


def test_pair_frequencies_match_sampling_without_replacement():
    """The paper's theorem: Gumbel-Top2 on log softmax(β) = two draws without replacement from softmax(β)."""
    relax = Rome({"tau": 0.5})
    beta = torch.tensor([1.0, 0.0, -0.5, 0.7])
    node_of_row = [0, 0, 0, 0]
    p = torch.softmax(beta, 0).tolist()
    expected = {}
    for i, j in itertools.permutations(range(4), 2):  # ordered draws, then forget the order
        pair = frozenset((i, j))
        expected[pair] = expected.get(pair, 0.0) + p[i] * p[j] / (1 - p[i])
    torch.manual_seed(2)
    n = 6000
    counts = Counter()
    for _ in range(n):
        edges, picked = relax.sample_edges(beta, node_of_row)
        counts[frozenset(torch.nonzero(picked).squeeze(1).tolist())] += 1
    assert sum(counts.values()) == n and all(len(k) == 2 for k in counts)
    for pair, q in expected.items():
        se = (q * (1 - q) / n) ** 0.5
        assert abs(counts[pair] / n - q) < 4 * se + 1e-3, (sorted(pair), counts[pair] / n, q)


def test_a_diverged_search_stops_instead_of_redrawing_forever(bound_redraws):
    """A NaN β or α makes every Gumbel sample NaN; the redraw loops used to spin forever."""
    bound_redraws(rome_mod)
    relax = Rome({"tau": 1.0})
    with pytest.raises(SearchError, match="became NaN or infinite"):
        relax.sample_edges(torch.tensor([0.3, math.nan, 0.5, 0.1]), [0, 0, 0, 0])
    with pytest.raises(SearchError, match="became NaN or infinite"):
        relax.sample_ops(torch.tensor([[0.0, math.inf], [0.0, 0.0]]), torch.ones(2, 2, dtype=torch.bool))


def test_edge_weights_are_straight_through():
    relax = Rome({"tau": 2.0})
    beta = torch.tensor([0.3, -0.2, 0.5, 0.1], requires_grad=True)
    node_of_row = [0, 0, 0, 0]
    torch.manual_seed(3)
    b, picked = relax.sample_edges(beta, node_of_row)
    torch.manual_seed(3)
    g = rome_mod.gumbel_noise(beta)
    soft = torch.softmax((torch.log_softmax(beta, 0) + g) / 2.0, 0)
    assert b.detach().tolist() == picked.tolist()
    assert picked.tolist() == [1.0 if i in soft.topk(2).indices.tolist() else 0.0 for i in range(4)]
    c = torch.tensor([1.0, -2.0, 3.0, 0.5])
    (b * c).sum().backward()
    expected = torch.autograd.grad((soft * c).sum(), beta)[0]
    assert torch.allclose(beta.grad, expected, atol=1e-6)


def count_calls(net):
    counts = {}
    for mod in net.modules():
        if isinstance(mod, MixedEdge):
            counts[mod] = calls = [0] * len(mod.candidates)
            for i, cand in enumerate(mod.candidates):
                def hook(_m, _i, _o, calls=calls, i=i):
                    calls[i] += 1
                for sub in cand.modules():  # every submodule: an edge may run a candidate piecewise
                    sub.register_forward_hook(hook)
    return counts


def capture_weights(net):
    seen = []
    original = net.group_weights

    def wrapped():
        w = original()
        seen.append(w)
        return w
    net.group_weights = wrapped
    return seen


def test_only_sampled_edges_sampled_ops_run(ir):
    relax = load_relaxation("rome", {"samples": 1})
    net = supernet(ir, relax)
    counts = count_calls(net)
    seen = capture_weights(net)
    relax.set_phase("weights")
    torch.manual_seed(4)
    net(torch.randn(4, 1, 8, 8)).sum().backward()
    (weights,) = seen
    # per group and edge key: ops run exactly where `active` says, once per cell of the group
    cells = {g: [lid for lid, kind, _, gg in net.schedule if gg == g] for g in net.alphas}
    for g, lids in cells.items():
        w = weights[g]
        for lid in lids:
            cell = net.layers[lid]
            for key, row in ((k, r) for _, entries, _, _ in cell.plan for k, _, r in entries if r >= 0):
                calls = counts[cell.edges[key]]
                assert [i for i, c in enumerate(calls) if c] == w.active[row]
        assert sum(1 for a in w.active if a) == 2 * 4  # 4 nodes, 2 sampled inputs each
    # α and β both receive gradients
    for name, alpha in net.alphas.items():
        assert alpha.grad is not None and bool((alpha.grad != 0).any()), name
    for name, beta in net.arch_extras.items():
        assert beta.grad is not None and bool((beta.grad != 0).any()), name


def grads(net, loss):
    params = [p for p in net.parameters()]
    out = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, out)]


def single_sample_grads(net, x, y, k, seed, phase):
    """Replay the K samples one at a time from the same seed."""
    torch.manual_seed(seed)
    per, losses = [], []
    for _ in range(k):
        net.relax.set_phase(phase)
        loss = F.cross_entropy(net(x), y)
        losses.append(loss.detach())
        per.append(grads(net, loss))
    return per, losses


@pytest.mark.parametrize("accumulate", [True, False])
def test_arch_loss_is_the_mean_of_k_samples(ir, accumulate):
    relax = load_relaxation("rome", {"samples": 3, "accumulate": accumulate})
    net = supernet(ir, relax)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    per, losses = single_sample_grads(net, x, y, 3, seed=5, phase="arch")
    torch.manual_seed(5)
    relax.set_phase("arch")
    loss = relax.arch_loss(net, lambda a, b: F.cross_entropy(net(a), b), x, y)
    assert float(loss.detach()) == pytest.approx(float(sum(losses) / 3), rel=1e-5)
    got = grads(net, loss)
    arch = {id(p) for p in net.arch_parameters()}
    for i, (p, g) in enumerate(zip(net.parameters(), got)):
        mean = sum(s[i] for s in per) / 3
        if id(p) in arch or not accumulate:
            assert torch.allclose(g, mean, atol=1e-6, rtol=1e-4)
        else:  # the α/β step discards weight gradients: the accumulated surrogate carries none
            assert not bool(g.any())
    arch_grads = [g for p, g in zip(net.parameters(), got) if id(p) in arch]
    assert len(arch_grads) == 4 and all(bool((g != 0).any()) for g in arch_grads)  # α and β of both groups
    # the samples differ (else the test proves nothing)
    assert any(not torch.equal(a, b) for a, b in zip(per[0], per[1]))


@pytest.mark.parametrize("accumulate", [True, False])
def test_weight_loss_is_the_sum_of_k_samples(ir, accumulate):
    relax = load_relaxation("rome", {"samples": 3, "accumulate": accumulate})
    net = supernet(ir, relax)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    per, losses = single_sample_grads(net, x, y, 3, seed=6, phase="weights")
    torch.manual_seed(6)
    relax.set_phase("weights")
    total, logits = relax.weight_loss(net, x, y)
    assert float(total.detach()) == pytest.approx(float(sum(losses)), rel=1e-5)
    assert float(F.cross_entropy(logits.detach(), y)) == pytest.approx(float(losses[0]), rel=1e-5)
    total.backward()
    arch = {id(p) for p in net.arch_parameters()}
    for i, p in enumerate(net.parameters()):
        expected = sum(s[i] for s in per)
        got = torch.zeros_like(p) if p.grad is None else p.grad
        if id(p) in arch and accumulate:  # the weight step discards α/β gradients: none are accumulated
            assert not bool(got.any())
        else:
            assert torch.allclose(got, expected, atol=1e-6, rtol=1e-4)


def test_accumulated_arch_step_computes_no_weight_gradients(ir):
    """The α/β step of K = 7 samples differentiated every sample w.r.t. all supernet weights too, and the
    step threw those gradients away: each of the K backward passes did the weight-gradient work for nothing."""
    relax = load_relaxation("rome", {"samples": 2})
    net = supernet(ir, relax)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    computed = []
    for w in net.weight_parameters():
        w.register_hook(lambda g: computed.append(g) or g)
    relax.set_phase("arch")
    loss = relax.arch_loss(net, lambda a, b: F.cross_entropy(net(a), b), x, y)
    assert computed == []
    torch.autograd.grad(loss, net.arch_parameters(), allow_unused=True)
    assert computed == []


def test_recompute_mode_gives_the_same_gradients(ir):
    relax = load_relaxation("rome", {"samples": 2})
    net = supernet(ir, relax)
    if not hasattr(net, "set_memory"):
        pytest.skip("this build has no memory modes")
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    results = []
    for mode in ("plain", "recompute"):
        net.set_memory(mode)
        torch.manual_seed(8)
        relax.set_phase("arch")
        results.append(grads(net, relax.arch_loss(net, lambda a, b: F.cross_entropy(net(a), b), x, y)))
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_one_sample_uses_the_default_paths(ir):
    relax = load_relaxation("rome", {"samples": 1})
    net = supernet(ir, relax)
    assert relax.weight_loss(net, torch.randn(2, 1, 8, 8), torch.tensor([0, 1])) is None


def test_eval_is_deterministic_top2_by_beta_and_argmax_alpha(ir):
    relax = load_relaxation("rome")
    net = supernet(ir, relax)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()
    relax.set_phase("eval")
    w1, w2 = net.group_weights(), net.group_weights()
    for g, w in w1.items():
        beta, alpha = net.extras(g)["beta"].detach(), net.alphas[g].detach()
        for rows in rows_by_node(net.group_nodes[g]).values():
            top = sorted(rows, key=lambda r: -float(beta[r]))[:2]
            for r in rows:
                assert w.active[r] == ([int(alpha[r].argmax())] if r in top else [])
                assert float(w.edges[r]) == (1.0 if r in top else 0.0)
        assert w.active == w2[g].active


def test_derive_picks_top2_by_beta_regardless_of_alpha(ir):
    relax = load_relaxation("rome")
    net = supernet(ir, relax)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for g in net.alphas:
            # β nearly flat (so strength × op-prob would be dominated by α), α very peaked on some rows
            net.extras(g)["beta"].copy_(0.01 * torch.randn(net.alphas[g].shape[0], generator=gen))
            net.alphas[g].copy_(5 * torch.randn(net.alphas[g].shape, generator=gen))
    geno = derive(ir, net, per="node", k=2, exclude=frozenset({"none"}))
    product_rule_differs = False
    for g, cell in geno.cells.items():
        beta, alpha = net.extras(g)["beta"].detach(), net.alphas[g].detach()
        rows = net.group_rows[g]
        ops = net.group_ops[g]
        soft = torch.softmax(alpha, -1)
        by_node = rows_by_node(net.group_nodes[g])
        for node, rs in by_node.items():
            want = sorted(rs, key=lambda r: -float(beta[r]))[:2]
            p_beta = torch.softmax(beta[rs], 0)
            prod = sorted(rs, key=lambda r: -float(p_beta[rs.index(r)] * soft[r].max()))[:2]
            product_rule_differs |= set(prod) != set(want)
            picked = [e for e in cell.edges if e.node == node]
            assert len(picked) == 2
            for e in picked:
                r = next(r for r in want if rows[r].split("<-")[1] == _state_name(ir, g, e.input))
                assert e.op == ops[r][int(alpha[r].argmax())]
    assert product_rule_differs  # plain softmax(α) × softmax(β) would have chosen differently somewhere
    table = strengths(net, next(iter(net.alphas)))
    assert float(table.max()) <= 1.0


def _state_name(ir, group, index):
    cell = ir.cells[ir.alpha_groups[group]["cell"]]
    return next(n for n in cell.nodes if cell.nodes[n]["index"] == index)


def test_temperature_ramp_state_and_options():
    relax = Rome()
    assert relax.options["tau"] == {"from": 10.0, "to": 0.1}
    relax.set_progress(0, 50)
    assert relax.tau == 10.0
    relax.set_progress(49, 50)
    assert relax.tau == pytest.approx(0.1)
    assert Rome().load_state_dict(relax.state_dict()) is None
    other = Rome()
    other.load_state_dict(relax.state_dict())
    assert other.tau == pytest.approx(0.1)
    assert Rome({"tau": "5->1", "top": "3"}).top == 3
    for bad in ({"top": 0}, {"samples": 1.5}, {"tau": -1}, {"tau": "nan"}, {"accumulate": "maybe"}, {"k": 4}):
        with pytest.raises(BuildError):
            Rome(bad)


def test_registry_and_preset():
    assert RELAXATIONS.get("rome") is Rome
    relax = load_relaxation("rome")
    assert isinstance(relax, Rome)
    assert (relax.top, relax.samples, relax.tau_start, relax.tau_end) == (2, 7, 10.0, 0.1)
    options, settings = preset("rome")
    assert settings == {"epochs": 50, "lr": 0.05, "arch_lr": 3e-4}
    cfg = make_config({}, settings)
    assert (cfg.epochs, cfg.lr, cfg.arch_lr) == (50, 0.05, 3e-4)


def test_single_level_with_several_samples_is_refused():
    """levels = 1 steps α and w on one forward pass: arch_loss and weight_loss, the K-sample accumulation,
    never ran, so `samples = 7` (the preset's) changed nothing."""
    with pytest.raises(SearchError, match="samples = 7 needs bi-level search"):
        load_relaxation("rome").check_config(make_config({}, {"levels": 1}))
    load_relaxation("rome", {"samples": 1}).check_config(make_config({}, {"levels": 1}))
    load_relaxation("rome").check_config(make_config({}, {"levels": 2}))


@pytest.mark.slow
def test_end_to_end_search(tmp_path):
    from nasc.runtime.search import Request, prepare, run_search

    job = prepare(Request(space="spaces/rome.nas", params={"C": 4, "layers": 5}, relax_options={"samples": 2},
                          overrides={"epochs": 1, "batch": 32}))
    assert isinstance(job.relax, Rome)
    assert (job.config.lr, job.config.arch_lr) == (0.05, 3e-4)
    extras0 = {k: v.detach().clone() for k, v in job.net.arch_extras.items()}
    result = run_search(job, tmp_path / "run")
    assert (result.run_dir / "genotype.json").is_file()
    lines = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(e["type"] == "epoch" for e in lines)
    assert all(not torch.equal(v.detach(), extras0[k]) for k, v in job.net.arch_extras.items())
    for cell in result.genotype.cells.values():
        nodes = Counter(e.node for e in cell.edges)
        assert all(c == 2 for c in nodes.values())
        assert len({(e.node, e.input) for e in cell.edges}) == len(cell.edges)
