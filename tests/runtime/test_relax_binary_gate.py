"""ProxylessNAS (`binary-gate`): one path for weights, two sampled paths and a BinaryConnect gradient for α."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nasc.compiler.pipeline import compile_space
from nasc.errors import BuildError, SearchError
from nasc.runtime.config import make_config
from nasc.runtime.ops import Zero
from nasc.runtime.relaxations.base import load_relaxation, preset
from nasc.runtime.relaxations.binary_gate import BinaryGate, BinaryGateEdge
from nasc.runtime.supernet import build_supernet


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These networks are tiny: one intra-op thread avoids oversubscription on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _proxyless(**options):
    ir = compile_space("spaces/proxyless.nas", params={"classes": 10}, input_shape=(3, 32, 32), ctx=None)
    relax = load_relaxation("binary-gate", options)
    net = build_supernet(ir, relax, generator=torch.Generator().manual_seed(0))
    relax.setup(ir, net)
    return ir, relax, net


def _darts(**options):
    ir = compile_space("spaces/darts.nas", params={"C": 8, "layers": 3}, input_shape=(1, 8, 8), ctx=None)
    relax = load_relaxation("binary-gate", options)
    net = build_supernet(ir, relax, generator=torch.Generator().manual_seed(0))
    relax.setup(ir, net)
    return ir, relax, net


@pytest.fixture(scope="module")
def proxyless():
    return _proxyless()


def _count_calls(net):
    calls: dict[tuple[int, int], int] = {}
    hooks = []
    edges = [m for m in net.modules() if isinstance(m, BinaryGateEdge)]
    for e, edge in enumerate(edges):
        for i, cand in enumerate(edge.candidates):
            def hook(m, args, out, key=(e, i)):
                calls[key] = calls.get(key, 0) + 1
            hooks.append(cand.register_forward_hook(hook))
    return edges, calls, hooks


@pytest.mark.parametrize("space", ["proxyless", "darts"])
def test_weight_phase_runs_and_stores_one_candidate_per_edge(space):
    torch.manual_seed(0)
    _, relax, net = _proxyless() if space == "proxyless" else _darts()
    x = torch.randn(2, *(3, 32, 32) if space == "proxyless" else (1, 8, 8))
    edges, calls, hooks = _count_calls(net)
    relax.set_phase("weights")
    net(x).logsumexp(1).sum().backward()
    for h in hooks:
        h.remove()
    for e, edge in enumerate(edges):
        ran = [i for i in range(len(edge.candidates)) if calls.get((e, i))]
        assert len(ran) == 1 and calls[(e, ran[0])] == 1
        # only the sampled op kept activations for backward: no other candidate has a gradient
        for i, cand in enumerate(edge.candidates):
            grads = [p.grad for p in cand.parameters()]
            if i != ran[0]:
                assert all(g is None for g in grads)
    assert all(a.grad is None for a in net.alphas.values())  # weight-phase gates are constants


def test_arch_phase_runs_two_paths_and_eval_the_argmax(proxyless):
    torch.manual_seed(1)
    _, relax, net = proxyless
    x = torch.randn(2, 3, 32, 32)
    edges, calls, hooks = _count_calls(net)
    relax.set_phase("arch")
    out = net(x)
    per_edge = [[i for i in range(len(ed.candidates)) if calls.get((e, i))] for e, ed in enumerate(edges)]
    assert all(len(r) == 2 for r in per_edge)
    calls.clear()
    with torch.no_grad():
        for a in net.alphas.values():
            a.copy_(torch.randn_like(a))
    relax.set_phase("eval")
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    groups = list(net.alphas)  # proxyless: one group per block, in block order
    for e, edge in enumerate(edges):
        ran = [i for i in range(len(edge.candidates)) if calls.get((e, i))]
        assert ran == [int(net.alphas[groups[e]].argmax())]
    assert out.shape == (2, 10)


def test_alpha_gradient_is_the_binaryconnect_formula():
    torch.manual_seed(3)
    cands = [nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 3, padding=1, bias=False)]
    edge = BinaryGateEdge(cands, ["a", "b", "c"])
    relax = BinaryGate()
    relax.set_phase("arch")
    alpha = nn.Parameter(torch.tensor([[0.3, -0.2, 0.5], [0.1, 0.0, 0.0]]))
    mask = torch.tensor([[True, True, True], [True, False, False]])
    x, target = torch.randn(4, 2, 5, 5), torch.randn(4, 2, 5, 5)
    for _ in range(6):  # several samples: every pair / active choice gives the same rule
        alpha.grad = None
        for c in cands:
            c.zero_grad(set_to_none=True)
        w = relax.group_weights(alpha, mask, {}, [0, 0])
        assert w.active[1] == [0]  # a row with one valid candidate runs it alone
        a, b = w.active[0]
        assert a != b
        out = edge(x, w.ops[0], w.active[0])
        assert torch.equal(out, cands[a](x))  # numerically the active op's output
        (out * target).sum().backward()
        with torch.no_grad():
            dg = {j: float((target * cands[j](x)).sum()) for j in (a, b)}  # ∂L/∂g_j = ⟨∂L/∂out, o_j⟩
            q = torch.softmax(alpha[0, [a, b]], 0)
            qj = {a: float(q[0]), b: float(q[1])}
        expect = torch.zeros_like(alpha)
        for i in (a, b):
            expect[0, i] = sum(dg[j] * qj[j] * ((i == j) - qj[i]) for j in (a, b))
        torch.testing.assert_close(alpha.grad, expect, rtol=1e-5, atol=1e-6)
        assert all(p.grad is None for p in cands[b].parameters())  # the inactive op is detached


def _arch_step(relax, net, x, y, optimiser):
    relax.set_phase("arch")
    arch = net.arch_parameters()
    loss = F.cross_entropy(net(x), y)
    reg = relax.regularizer(net)
    if reg is not None:
        loss = loss + reg
    grads = torch.autograd.grad(loss, arch, allow_unused=True)
    for p, g in zip(arch, grads):
        p.grad = torch.zeros_like(p) if g is None else g
    relax.before_arch_step(net)
    optimiser.step()
    relax.after_arch_step(net)


def test_unsampled_ops_keep_alpha_and_probability_after_an_arch_step():
    torch.manual_seed(4)
    _, relax, net = _proxyless(**{"lambda": 0.3})
    with torch.no_grad():
        for a in net.alphas.values():
            a.copy_(torch.randn_like(a))
    # momentum and weight decay on purpose: unsampled α must still stay where they were
    opt = torch.optim.Adam(net.arch_parameters(), lr=0.05, betas=(0.5, 0.999), weight_decay=1e-3)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    for _ in range(2):
        before = {g: a.detach().clone() for g, a in net.alphas.items()}
        _arch_step(relax, net, x, y, opt)
        moved = 0
        for g, a in net.alphas.items():
            sample = relax._samples[id(a)]
            inv = sample.involved[0]
            frozen = 0 in sample.frozen
            p0, p1 = torch.softmax(before[g][0], 0), torch.softmax(a.detach()[0], 0)
            assert torch.equal(a.detach()[0][~inv], before[g][0][~inv])
            torch.testing.assert_close(p1[~inv], p0[~inv], rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(p1[inv].sum(), p0[inv].sum(), rtol=1e-5, atol=1e-7)
            if frozen:
                assert torch.equal(a.detach(), before[g])
            else:
                assert int(inv.sum()) == 2
                moved += int(not torch.equal(a.detach()[0][inv], before[g][0][inv]))
        assert moved > 0


def test_zero_op_active_gives_no_alpha_update():
    _, relax, net = _proxyless()
    zero_groups = []
    with torch.no_grad():
        for g, a in net.alphas.items():
            ops = net.group_ops[g][0]
            if "zero" in ops:
                a.fill_(-30.0)
                a[0, ops.index("zero")] = 3.0
                a[0, 0] = 3.0  # the pair is {zero, op 0}, either one active with probability 1/2
                zero_groups.append(g)
    opt = torch.optim.Adam(net.arch_parameters(), lr=0.1, betas=(0.0, 0.999), weight_decay=0.0)
    torch.manual_seed(5)
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))
    before = {g: a.detach().clone() for g, a in net.alphas.items()}
    _arch_step(relax, net, x, y, opt)
    frozen = [g for g in zero_groups if relax._samples[id(net.alphas[g])].frozen]
    live = [g for g in zero_groups if g not in frozen]
    assert frozen and live
    for g in frozen:
        zero = net.group_ops[g][0].index("zero")
        assert relax._samples[id(net.alphas[g])].involved[0, zero]
        assert torch.equal(net.alphas[g].detach(), before[g])
        # no gradient at all, as the code's `AP_path_alpha.grad = None`: Adam skips the block and keeps no
        # state for it (a zero gradient advanced its step count and decayed its second moment)
        assert net.alphas[g].grad is None and net.alphas[g] not in opt.state
    assert all(net.alphas[g] in opt.state for g in live)
    assert any(not torch.equal(net.alphas[g].detach(), before[g]) for g in live)
    edges = {g: net.layers[net.group_rows[g][0]].edge for g in zero_groups}
    assert all(isinstance(edges[g].candidates[net.group_ops[g][0].index("zero")], Zero) for g in zero_groups)


def _expected_by_hand(ir, net, probs, kind):
    costs = ir.meta["costs"]["layers"]
    total = 0.0
    for layer in ir.layers():
        if layer.kind == "aux":
            continue
        entry = costs[layer.id]
        total += entry["fixed"][kind]
        for key, ops in entry.get("edges", {}).items():
            group = next((g for g, info in ir.alpha_groups.items() if layer.id in info["layers"]), None)
            if group is None:
                total += sum(c[kind] for c in ops.values())
                continue
            r = net.group_rows[group].index(key)
            for i, op in enumerate(net.group_ops[group][r]):
                total += float(probs[group][r, i]) * ops[op][kind]
    return total


def test_regularizer_is_lambda_times_expected_cost_over_ref():
    ir, relax, net = _proxyless(**{"lambda": 0.5, "ref": 1e6})
    with torch.no_grad():
        for a in net.alphas.values():
            a.copy_(torch.randn_like(a))
    x = torch.randn(2, 3, 32, 32)
    relax.set_phase("weights")
    net(x)
    probs = {g: torch.softmax(a.detach(), -1) for g, a in net.alphas.items()}
    reg = relax.regularizer(net)
    assert float(reg.detach()) == pytest.approx(0.5 * _expected_by_hand(ir, net, probs, "madds") / 1e6, rel=1e-5)
    # arch phase: the two-path probabilities q of the sampled pair (zero elsewhere), as current_prob_over_ops
    relax.set_phase("arch")
    net(x)
    two = {}
    for g, a in net.alphas.items():
        inv = relax._samples[id(a)].involved
        q = torch.zeros_like(a.detach())
        q[inv] = torch.softmax(a.detach()[inv], 0)
        two[g] = q
    reg = relax.regularizer(net)
    assert float(reg.detach()) == pytest.approx(0.5 * _expected_by_hand(ir, net, two, "madds") / 1e6, rel=1e-5)
    grads = torch.autograd.grad(reg, list(net.alphas.values()))
    for (g, a), gr in zip(net.alphas.items(), grads):
        inv = relax._samples[id(a)].involved
        assert float(gr[~inv].abs().sum()) == 0.0
    # the fixed part plus every candidate is the compiler's total
    ones = {g: torch.ones_like(a) for g, a in net.alphas.items()}
    assert _expected_by_hand(ir, net, ones, "madds") == ir.meta["costs"]["total_without_aux"]["madds"]


def test_regularizer_defaults_and_shared_groups():
    ir, relax, net = _darts(**{"lambda": 2.0, "cost": "params"})
    relax.set_phase("weights")
    assert float(relax.regularizer(net).detach()) == pytest.approx(2.0, rel=1e-5)  # ref = E[cost] at initialisation
    probs = {g: torch.softmax(a.detach(), -1) for g, a in net.alphas.items()}
    assert relax.ref == pytest.approx(_expected_by_hand(ir, net, probs, "params"), rel=1e-6)
    layers = ir.alpha_groups["reduce"]["layers"]
    assert len(layers) == 2
    key, op = net.group_rows["reduce"][3], net.group_ops["reduce"][3][5]
    by_hand = sum(ir.meta["costs"]["layers"][lid]["edges"][key][op]["params"] for lid in layers)
    assert float(relax._costs["reduce"][3, 5]) == by_hand
    assert load_relaxation("binary-gate").regularizer(net) is None  # λ = 0: off


def test_options():
    with pytest.raises(BuildError, match="mul_log"):
        BinaryGate({"form": "mul_log"})
    with pytest.raises(BuildError):
        BinaryGate({"cost": "latency"})
    with pytest.raises(BuildError):
        BinaryGate({"lambda": -1})
    with pytest.raises(BuildError):
        BinaryGate({"ref": 0})
    for bad in ({"lambda": float("nan")}, {"ref": float("nan")}, {"ref": float("inf")}):  # NaN passed `< 0`
        with pytest.raises(BuildError):
            BinaryGate(bad)


def test_cost_and_ref_without_lambda_are_refused():
    """`--relax-opt ref=5` or `cost="params"` with the default lambda = 0 was accepted and changed nothing:
    they shape the expected-cost regulariser alone, which lambda = 0 turns off."""
    for options in ({"ref": 5.0}, {"cost": "params"}, {"cost": "params", "ref": 5.0}):
        with pytest.raises(BuildError, match="has no effect with lambda = 0") as info:
            BinaryGate(options)
        assert "set lambda > 0" in info.value.hint
    assert BinaryGate({"lambda": 0.1, "cost": "params", "ref": 5.0}).options["ref"] == 5.0
    recorded = BinaryGate({}).options  # a run records every option; resuming it loads them all again
    assert BinaryGate(recorded).options == recorded


@pytest.mark.parametrize("phase", ["weights", "arch"])
def test_a_diverged_search_stops_with_an_error(phase):
    """NaN α (the weights diverged, then the validation loss and α's gradient) ended the search with
    'internal error: RuntimeError: probability tensor contains either inf, nan or element < 0'."""
    relax = BinaryGate()
    relax.set_phase(phase)
    alpha = torch.tensor([[0.1, float("nan"), 0.2], [0.0, 0.0, 0.0]])
    with pytest.raises(SearchError, match="became NaN or infinite"):
        relax.group_weights(alpha, torch.ones(2, 3, dtype=torch.bool), {}, [0, 0])


def test_preset_loads():
    relax = load_relaxation("proxylessnas")
    assert isinstance(relax, BinaryGate)
    options, settings = preset("proxylessnas")
    assert options == {}
    cfg = make_config({}, settings)
    assert cfg.arch_lr == 1e-3 and tuple(cfg.arch_betas) == (0.0, 0.999) and cfg.arch_weight_decay == 0.0
    assert cfg.weight_decay == 4e-5 and cfg.nesterov and cfg.lr_min == 0.0


def test_space_file_searches_as_the_preset(proxyless):
    """spaces/proxyless.nas writes out the preset's settings; it once left out arch_every = 5 (α every step)."""
    ir, _, _ = proxyless
    from_file = make_config(ir.search, {})
    for key, value in preset("proxylessnas")[1].items():
        assert getattr(from_file, key) == value, key


@pytest.mark.parametrize("setting", [{"levels": 1}, {"order": 2}])
def test_single_level_and_second_order_are_refused(setting):
    """levels = 1 once left α at its initial value (weight-phase gates carry no gradient), silently."""
    from nasc.runtime.search import Request, prepare

    request = Request(space="spaces/darts.nas", params={"C": 4, "layers": 3}, relax="binary-gate",
                      overrides={"epochs": 1, **setting})
    with pytest.raises(SearchError, match="binary-gate"):
        prepare(request)


def _phases(tmp_path, relax, **overrides):
    """Per epoch, the phases of a tiny search in order: "W" a weight step, "A" an α step."""
    from nasc.runtime.search import Request, prepare, run_search

    job = prepare(Request(space="spaces/darts.nas", params={"C": 4, "layers": 3}, relax=relax,
                          overrides={"epochs": 2, "batch": 128, "train_portion": 0.5, **overrides}))
    seen, set_phase = [], job.relax.set_phase
    job.relax.set_phase = lambda phase: (seen.append(phase), set_phase(phase))[1]
    run_search(job, tmp_path / relax)
    epochs = "".join({"weights": "W", "arch": "A", "eval": "|"}[p] for p in seen).split("|")
    return [e for e in epochs if e]


def test_alpha_steps_follow_every_fifth_weight_step_after_an_alpha_free_first_epoch(tmp_path):
    """The official `nas_manager.py` steps α after the weight step of batch i where (i + 1) % 5 == 0, and not in
    its first epoch; nasc stepped α before the weight step where i % 5 == 0, from the first epoch on."""
    first, second = _phases(tmp_path, "proxylessnas")
    steps = len(first)
    assert first == "W" * steps  # `arch_start = 1` in the preset
    assert second == "".join("W" + "A" * ((i + 1) % 5 == 0) for i in range(steps)) and steps >= 5
    # the DARTS order is unchanged: α first, at the first of every `arch_every` steps
    _, darts = _phases(tmp_path, "darts", arch_every=5)
    assert darts == "".join("A" * (i % 5 == 0) + "W" for i in range(steps))


def test_a_search_too_short_for_one_alpha_step_an_epoch_says_so():
    """After every 5th weight step of an epoch: 3 steps an epoch (718 digits, batch 256) never step α."""
    from nasc.runtime.search import Request, prepare

    def warnings(**overrides):
        job = prepare(Request(space="spaces/darts.nas", params={"C": 4, "layers": 3}, relax="proxylessnas",
                              overrides={"epochs": 2, "train_portion": 0.5, **overrides}))
        return " ".join(job.ir.meta.get("warnings", []))

    assert "α is never trained" in warnings(batch=256) and "an epoch has 3" in warnings(batch=256)
    assert "α is never trained" not in warnings(batch=128)


def _search(tmp_path, request):
    from nasc.runtime.search import prepare, run_search

    job = prepare(request)
    assert isinstance(job.relax, BinaryGate)
    alphas0 = {k: v.detach().clone() for k, v in job.net.alphas.items()}
    result = run_search(job, tmp_path / "run")
    assert (result.run_dir / "genotype.json").is_file()
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [e["arch_updates"] for e in epochs] == [False, True]
    assert any(not torch.equal(v.detach(), alphas0[k]) for k, v in job.net.alphas.items())
    return job, result


@pytest.mark.slow
def test_end_to_end_proxyless(tmp_path):
    from nasc.runtime.search import Request

    job, result = _search(tmp_path, Request(space="spaces/proxyless.nas", relax="proxylessnas",
                                            relax_options={"lambda": 0.1},
                                            overrides={"epochs": 2, "batch": 32, "arch_start": 1}))
    assert len(result.genotype.layers) == 21


@pytest.mark.slow
def test_end_to_end_darts(tmp_path):
    from nasc.runtime.search import Request

    job, result = _search(tmp_path, Request(space="spaces/darts.nas", params={"C": 8, "layers": 5},
                                            relax="binary-gate",
                                            overrides={"epochs": 2, "batch": 32, "arch_start": 1}))
    assert set(result.genotype.cells) == {"normal", "reduce"}
