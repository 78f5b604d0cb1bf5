"""The dropout-group relaxation (DropNAS): grouped masks, zero gradients for dropped ops, α-adjust, presets."""

from __future__ import annotations

import json
import math

import pytest
import torch

from nasc.compiler.pipeline import compile_space
from nasc.errors import BuildError
from nasc.runtime.config import make_config
from nasc.runtime.relaxations.base import MixedEdge, load_relaxation, preset
from nasc.runtime.relaxations.dropout_group import FREE, PAD, PARAM, DropoutGroup
from nasc.runtime.supernet import build_supernet

OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
       "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/runtime/conftest.py


@pytest.fixture(scope="module")
def ir():
    return compile_space("spaces/darts.nas", params={"C": 4, "layers": 3}, input_shape=(1, 8, 8))


def supernet(ir, relax):
    net = build_supernet(ir, relax, generator=torch.Generator().manual_seed(0))
    relax.setup(ir, net)
    # the relaxation's own semantics, without the lowering's exact savings (which skip `none`);
    # tests/runtime/test_memory_modes.py shows those savings change nothing numerically
    net.set_memory("plain", share=False)
    return net


def edges_of(ir, net, group):
    """(row, mixed edge) for every cell of an α group."""
    out = []
    for lid in ir.alpha_groups[group]["layers"]:
        for r, key in enumerate(net.group_rows[group]):
            out.append((r, net.layers[lid].edges[key]))
    return out


def test_groups_from_costs_and_by_name(ir):
    relax = load_relaxation("dropnas")
    net = supernet(ir, relax)
    normal = relax._plans["normal"].kind
    assert normal.tolist() == [[FREE] * 4 + [PARAM] * 4] * len(net.group_rows["normal"])
    reduce = relax._plans["reduce"].kind
    for r, key in enumerate(net.group_rows["reduce"]):
        strided = key.endswith("s0") or key.endswith("s1")  # stride-2 edges: skip is a factorized reduce
        assert reduce[r, 3].item() == (PARAM if strided else FREE)
    p = relax._plans["normal"].p_drop
    assert torch.allclose(p, torch.full_like(p, 3e-5 ** 0.25))
    named = load_relaxation("dropnas", {"free_ops": OPS[:4]})
    supernet(ir, named)
    assert named._plans["reduce"].kind.tolist() == [[FREE] * 4 + [PARAM] * 4] * len(net.group_rows["reduce"])


def test_free_ops_must_name_candidates(ir):
    """A misspelt free_ops name once left skip_connect silently in the parameterised group."""
    relax = load_relaxation("dropnas", {"free_ops": ["none", "skip_conect"]})
    with pytest.raises(BuildError, match="free_ops names 'skip_conect'") as e:
        supernet(ir, relax)
    assert "skip_connect" in e.value.hint


def test_dropped_ops_get_exactly_zero_gradient(ir):
    relax = load_relaxation("dropout-group", {"r": 0.5})
    net = supernet(ir, relax)
    torch.manual_seed(0)
    relax.set_phase("weights")
    net(torch.randn(4, 1, 8, 8)).square().mean().backward()
    some_dropped = 0
    for g, alpha in net.alphas.items():
        keep = relax._kept[g]
        valid = net.mask(g)
        dropped = valid & ~keep
        some_dropped += int(dropped.sum())
        assert bool((alpha.grad[dropped] == 0).all())
        many = keep.sum(-1) >= 2  # a lone kept op has weight 1 whatever α is
        assert bool((alpha.grad[keep & many.unsqueeze(-1)] != 0).all())
        for r, edge in edges_of(ir, net, g):
            for i, cand in enumerate(edge.candidates):
                params = list(cand.parameters())
                if not params:
                    continue
                if keep[r, i]:
                    assert any(p.grad is not None and bool((p.grad != 0).any()) for p in params)
                else:
                    assert all(p.grad is None or bool((p.grad == 0).all()) for p in params)
    assert some_dropped > 0


def test_dropped_ops_are_not_computed_and_eval_runs_all(ir):
    relax = load_relaxation("dropout-group", {"r": 0.5})
    net = supernet(ir, relax)
    calls = {}
    for mod in net.modules():
        if isinstance(mod, MixedEdge):
            calls[id(mod)] = c = [0] * len(mod.candidates)
            for i, cand in enumerate(mod.candidates):
                cand.register_forward_hook(lambda _m, _i, _o, c=c, i=i: c.__setitem__(i, c[i] + 1))
    torch.manual_seed(1)
    relax.set_phase("arch")
    net(torch.randn(2, 1, 8, 8))
    for g in net.alphas:
        for r, edge in edges_of(ir, net, g):
            assert calls[id(edge)] == [int(k) for k in relax._kept[g][r].tolist()]
    for c in calls.values():
        c[:] = [0] * len(c)
    relax.set_phase("eval")
    with torch.no_grad():
        net(torch.randn(2, 1, 8, 8))
    assert all(c == [1] * len(c) for c in calls.values())
    w = relax.group_weights(net.alphas["normal"], net.mask("normal"), {}, net.group_nodes["normal"])
    assert w.active is None
    assert torch.allclose(w.ops, torch.softmax(net.alphas["normal"], -1))


def test_weights_are_softmax_over_kept_ops():
    relax = DropoutGroup({"r": 0.5})
    alpha = torch.randn(6, 8)
    mask = torch.ones(6, 8, dtype=torch.bool)
    relax.set_groups("g", alpha, [[FREE] * 4 + [PARAM] * 4] * 6)
    torch.manual_seed(0)
    w = relax.group_weights(alpha, mask, {}, [0] * 6)
    keep = relax._kept["g"]
    expect = torch.where(keep, alpha.exp(), torch.zeros_like(alpha))
    assert torch.allclose(w.ops, expect / expect.sum(-1, keepdim=True))
    assert w.active == [[i for i in range(8) if keep[r, i]] for r in range(6)]


def test_every_group_keeps_an_op():
    relax = DropoutGroup({"r": 0.9})  # p_d = 0.974 with 4 ops: whole groups drop all the time
    rows = 14
    kinds = [[FREE] * 4 + [PARAM] * 4] * 7 + [[FREE] * 3 + [PARAM] * 5] * 6 + [[PARAM] * 5 + [PAD] * 3]
    alpha = torch.zeros(rows, 8)
    relax.set_groups("g", alpha, kinds)
    kind = relax._plans["g"].kind
    lone = 0
    for _ in range(500):
        keep = relax.sample_mask(relax._plans["g"])
        assert not bool(keep[kind == PAD].any())
        for gid in (PARAM, FREE):
            member = kind == gid
            has = member.any(-1)
            assert bool(((keep & member).any(-1) | ~has).all())
        lone += int(((keep & (kind == FREE)).sum(-1) == 1).sum())
    assert lone > 0.5 * 500 * 13  # with so high a rate most groups are down to one op


def test_per_op_drop_frequency():
    r = 0.01
    relax = DropoutGroup({"r": r, "r_free": 0.05})
    rows = 50
    alpha = torch.zeros(rows, 8)
    relax.set_groups("g", alpha, [[FREE] * 4 + [PARAM] * 4] * rows)
    plan = relax._plans["g"]
    draws = 400
    dropped = torch.zeros(rows, 8)
    for _ in range(draws):
        dropped += (~relax.sample_mask(plan)).float()
    freq = dropped / draws
    for rate, cols in ((0.05, slice(0, 4)), (r, slice(4, 8))):
        p = rate ** 0.25
        q = p * (1 - p ** 3) / (1 - p ** 4)  # the marginal once an emptied group is drawn again
        assert freq[:, cols].mean().item() == pytest.approx(q, abs=0.01)
        assert freq[:, cols].mean().item() == pytest.approx(p, abs=0.03)


def test_a_rate_near_1_samples_without_hanging_from_the_same_law(monkeypatch):
    """r = 0.999999 needs ~10⁶ rejection rounds per pass: the mask is drawn from the law rejection converges
    to (each op kept independently, given ≥ 1 kept) instead, for that r and, as checked here, for any."""
    import itertools
    import signal

    from nasc.runtime.relaxations import dropout_group as D

    def too_long(*_):
        raise TimeoutError("sample_mask hangs with r = 0.999999")

    relax = DropoutGroup({"r": 0.999999})
    kinds = [[FREE] * 4 + [PARAM] * 4] * 14
    relax.set_groups("g", torch.zeros(14, 8), kinds)
    kind = relax._plans["g"].kind
    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(20)
    try:
        for _ in range(20):
            keep = relax.sample_mask(relax._plans["g"])
            for gid in (PARAM, FREE):
                assert bool((keep & (kind == gid)).any(-1).all())
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    # the direct draw alone (no rejection round) against the exact conditional law of unequal rates
    monkeypatch.setattr(D, "REDRAWS", 0)
    p = [0.9, 0.5, 0.7]
    relax = DropoutGroup({"r": 0.5})
    relax.set_groups("h", torch.zeros(1, 3), [[FREE] * 3])
    relax._plans["h"].p_drop[0] = torch.tensor(p, dtype=torch.float64)
    torch.manual_seed(0)
    draws = 20000
    seen = {}
    for _ in range(draws):
        key = tuple(relax.sample_mask(relax._plans["h"])[0].tolist())
        seen[key] = seen.get(key, 0) + 1
    nonempty = 1 - math.prod(p)
    for key in itertools.product([False, True], repeat=3):
        exact = math.prod(1 - pi if k else pi for k, pi in zip(key, p)) / nonempty if any(key) else 0.0
        assert seen.get(key, 0) / draws == pytest.approx(exact, abs=0.012)


def test_after_arch_step_preserves_kept_and_dropped_mass(ir):
    relax = load_relaxation("dropout-group", {"r": 0.3})
    net = supernet(ir, relax)
    with torch.no_grad():
        for a in net.alphas.values():
            a.normal_()  # spread-out α, so the masses are far from uniform
    opt = torch.optim.Adam(net.arch_parameters(), lr=0.2, betas=(0.5, 0.999), weight_decay=1e-3)
    torch.manual_seed(3)
    for _ in range(2):  # twice, so Adam's moments would move a dropped α if nothing stopped it
        opt.zero_grad(set_to_none=True)
        relax.set_phase("weights")
        net(torch.randn(4, 1, 8, 8)).square().mean().backward()
        old = {g: a.detach().clone() for g, a in net.alphas.items()}
        relax.before_arch_step(net)
        opt.step()
        stepped = {g: a.detach().clone() for g, a in net.alphas.items()}
        relax.after_arch_step(net)
        n_rows = 0
        for g, alpha in net.alphas.items():
            keep, valid = relax._kept[g], net.mask(g)
            dropped = valid & ~keep
            new = alpha.detach()
            assert torch.equal(new[dropped], old[g][dropped])  # dropped α did not move (no decay, no momentum)
            p_old, p_new = torch.softmax(old[g], -1), torch.softmax(new, -1)
            kept_old = (p_old * keep).sum(-1)
            kept_new = (p_new * keep).sum(-1)
            assert torch.allclose(kept_old, kept_new, atol=1e-6)
            assert torch.allclose(p_old[dropped], p_new[dropped], atol=1e-6)
            rows = dropped.any(-1)
            n_rows += int(rows.sum())
            # the paper's shift: x = ln(Σ_kept exp α_old / Σ_kept exp α_stepped)
            x = (torch.logsumexp(old[g].masked_fill(~keep, -math.inf), -1)
                 - torch.logsumexp(stepped[g].masked_fill(~keep, -math.inf), -1))
            assert torch.allclose(new[keep & rows.unsqueeze(-1)],
                                  (stepped[g] + x.unsqueeze(-1))[keep & rows.unsqueeze(-1)], atol=1e-5)
            assert torch.equal(new[~rows], stepped[g][~rows])  # edges with nothing dropped: the plain step
            assert not torch.equal(new[keep], old[g][keep])  # kept α did learn
        assert n_rows > 0


def test_partial_weight_decay_skips_dropped_ops(ir):
    """The loop clears grads to None; SGD then neither decays nor moves the weights of a dropped op."""
    relax = load_relaxation("dropout-group", {"r": 0.5})
    net = supernet(ir, relax)
    opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    torch.manual_seed(4)
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        relax.set_phase("weights")
        net(torch.randn(4, 1, 8, 8)).square().mean().backward()
        before = {id(p): p.detach().clone() for p in net.weight_parameters()}
        opt.step()
        for g in net.alphas:
            keep = relax._kept[g]
            for r, edge in edges_of(ir, net, g):
                for i, cand in enumerate(edge.candidates):
                    for p in cand.parameters():
                        assert torch.equal(p, before[id(p)]) != bool(keep[r, i])


def test_options_and_preset():
    relax = load_relaxation("dropnas")
    assert isinstance(relax, DropoutGroup)
    assert relax.r == relax.r_param == relax.r_free == 3e-5
    opts, settings = preset("dropnas")
    assert opts == {}
    cfg = make_config({}, settings)
    assert (cfg.levels, cfg.epochs, cfg.batch, cfg.lr, cfg.lr_min, cfg.clip) == (1, 76, 96, 0.0375, 0.0015, 3.0)
    json.dumps(relax.options)
    custom = load_relaxation("dropout-group", {"r_param": 1e-4, "r_free": 1e-5})
    assert (custom.r_param, custom.r_free) == (1e-4, 1e-5)
    with pytest.raises(BuildError):
        DropoutGroup({"r": 1.0})
    with pytest.raises(BuildError):
        DropoutGroup({"p": 0.1})


def test_hand_built_edges_without_setup():
    """Without setup (no compiler costs) every row is one group; each row still keeps an op."""
    relax = DropoutGroup({"r": 0.9})
    alpha = torch.zeros(3, 4, requires_grad=True)
    mask = torch.tensor([[True] * 4, [True, True, False, False], [True, False, False, False]])
    for _ in range(50):
        w = relax.group_weights(alpha, mask, {}, [0, 0, 0])
        assert all(len(a) >= 1 for a in w.active)
        assert w.active[2] == [0]
        assert all(i < 2 for i in w.active[1])


def test_warm_up_epochs_drop_nothing():
    """DropNAS' warmup_epochs (nasc: arch_start) train every op: drop rate 0 until α starts learning."""
    relax = DropoutGroup({"r": 0.9})  # p_d = 0.974: almost every op would be dropped
    relax.check_config(make_config({}, {"levels": 1, "arch_start": 2, "epochs": 4}))
    alpha = torch.randn(3, 4)
    mask = torch.ones(3, 4, dtype=torch.bool)
    relax.set_phase("weights")
    for epoch in (0, 1):
        relax.set_progress(epoch, 4)
        w = relax.group_weights(alpha, mask, {}, [0, 0, 0])
        assert w.active is None and torch.allclose(w.ops, torch.softmax(alpha, -1))
    relax.set_progress(2, 4)
    torch.manual_seed(0)
    w = relax.group_weights(alpha, mask, {}, [0, 0, 0])
    assert w.active is not None and any(len(a) < 4 for a in w.active)


@pytest.mark.slow
def test_search_end_to_end(tmp_path):
    from nasc.runtime.search import Request, prepare, run_search

    job = prepare(Request(space="spaces/darts.nas", params={"C": 4, "layers": 3}, relax="dropnas",
                          overrides={"epochs": 1, "batch": 32}))
    assert isinstance(job.relax, DropoutGroup) and job.config.levels == 1 and job.config.clip == 3.0
    result = run_search(job, tmp_path / "run")
    assert (result.run_dir / "genotype.json").exists()
    assert math.isfinite(result.final["train_loss"])
