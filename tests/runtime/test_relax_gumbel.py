"""The gumbel relaxation (GDAS hard / SNAS soft): sampling, straight-through gradients, temperature, presets."""

from __future__ import annotations

import math

import pytest
import torch

from nasc.compiler.expr import Ramp
from nasc.compiler.pipeline import compile_space
from nasc.errors import BuildError, SearchError
from nasc.runtime.config import make_config
from nasc.runtime.relaxations import gumbel as gumbel_mod
from nasc.runtime.relaxations.base import MixedEdge, load_relaxation, preset
from nasc.runtime.relaxations.gumbel import Gumbel, linear_ramp
from nasc.runtime.supernet import build_supernet


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


def count_calls(net):
    """Forward hooks on every candidate; returns {id(mixed edge): [calls per candidate]}."""
    counts = {}
    for mod in net.modules():
        if isinstance(mod, MixedEdge):
            counts[id(mod)] = calls = [0] * len(mod.candidates)
            for i, cand in enumerate(mod.candidates):
                def hook(_m, _i, _o, calls=calls, i=i):
                    calls[i] += 1
                cand.register_forward_hook(hook)
    return counts


def test_hard_runs_one_candidate_per_edge_and_alpha_gets_gradient(ir):
    relax = load_relaxation("gdas")
    net = supernet(ir, relax)
    counts = count_calls(net)
    assert counts
    torch.manual_seed(1)
    relax.set_phase("weights")
    net(torch.randn(4, 1, 8, 8)).square().mean().backward()
    for calls in counts.values():
        assert sum(calls) == 1 and max(calls) == 1
    for alpha in net.alphas.values():
        assert alpha.grad is not None and bool((alpha.grad != 0).any())


def test_hard_weights_are_one_hot_forward_softmax_backward():
    relax = Gumbel({"hard": True, "tau": 1.0})
    alpha = torch.tensor([[0.3, -0.2, 1.0, 0.0], [0.1, 0.2, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    torch.manual_seed(0)
    w = relax.group_weights(alpha, mask, {}, [0, 0])
    idx = [a[0] for a in w.active]
    assert all(len(a) == 1 for a in w.active)
    assert torch.allclose(w.ops.detach(), torch.nn.functional.one_hot(torch.tensor(idx), 4).float(), atol=1e-6)
    assert w.ops[1, 3].item() == 0.0  # padding never chosen, weight exactly 0
    assert idx[1] != 3
    # backward is that of h = softmax((log_softmax(α) + g)/τ): replay the same noise
    c = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    (w.ops * c).sum().backward()
    g_st = alpha.grad.clone()
    alpha.grad = None
    torch.manual_seed(0)
    h, _ = relax.sample(alpha, mask)
    (h * c).sum().backward()
    assert torch.allclose(g_st, alpha.grad, atol=1e-6)
    assert bool((g_st != 0).any())


def test_soft_runs_every_candidate(ir):
    relax = load_relaxation("snas")
    net = supernet(ir, relax)
    counts = count_calls(net)
    net(torch.randn(2, 1, 8, 8)).sum().backward()
    for calls in counts.values():
        assert calls == [1] * len(calls)
    for alpha in net.alphas.values():
        assert bool((alpha.grad != 0).any())


def test_soft_weights_are_concrete_sample():
    relax = Gumbel({"hard": False, "tau": 0.5})
    alpha = torch.randn(3, 5)
    mask = torch.ones(3, 5, dtype=torch.bool)
    torch.manual_seed(3)
    w = relax.group_weights(alpha, mask, {}, [0] * 3)
    torch.manual_seed(3)
    g = -torch.empty_like(alpha).exponential_().log()
    assert w.active is None
    assert torch.allclose(w.ops, torch.softmax((alpha + g) / 0.5, -1), atol=1e-6)


def test_temperature_schedule():
    relax = Gumbel({"tau": Ramp(10, 0.1)})
    epochs = 250
    for epoch in (0, 125, 249):
        relax.set_progress(epoch, epochs)
        assert relax.tau == pytest.approx(10 - (10 - 0.1) * epoch / (epochs - 1))
    relax.set_progress(0, epochs)
    assert relax.tau == pytest.approx(10.0)
    relax.set_progress(249, epochs)
    assert relax.tau == pytest.approx(0.1)
    assert linear_ramp(1.0, 0.03, 0, 1) == 1.0  # a 1-epoch run stays at the start
    fixed = Gumbel({"tau": 2.0})
    fixed.set_progress(7, 10)
    assert fixed.tau == 2.0
    # other spellings of a ramp: {"from", "to"} (config.json), a pair, and "a -> b" (--relax-opt)
    for spelling in ({"from": 5, "to": 1}, (5, 1), "5 -> 1"):
        r = Gumbel({"tau": spelling})
        r.set_progress(2, 3)
        assert r.tau == pytest.approx(1.0)
        assert r.options["tau"] == {"from": 5.0, "to": 1.0}
    with pytest.raises(BuildError):
        Gumbel({"tau": 0})
    with pytest.raises(BuildError):
        Gumbel({"temperature": 1})


def test_same_seed_same_samples():
    relax = Gumbel({"hard": True, "tau": 1.0})
    alpha = torch.randn(14, 8)
    mask = torch.ones(14, 8, dtype=torch.bool)

    def draw(seed):
        torch.manual_seed(seed)
        return [relax.group_weights(alpha, mask, {}, [0] * 14) for _ in range(3)]

    a, b, c = draw(0), draw(0), draw(1)
    assert [w.active for w in a] == [w.active for w in b]
    assert all(torch.equal(x.ops, y.ops) for x, y in zip(a, b))
    assert [w.active for w in a] != [w.active for w in c]


def test_sampled_index_distribution_matches_softmax():
    relax = Gumbel({"hard": True, "tau": 1.0})
    row = torch.tensor([1.0, 0.0, -1.0, 0.5, 2.0])
    n = 40_000
    alpha = row.expand(n, 5).clone()
    mask = torch.ones(n, 5, dtype=torch.bool)
    mask_pad = mask.clone()
    torch.manual_seed(0)
    w = relax.group_weights(alpha, mask, {}, [0] * n)
    freq = torch.bincount(torch.tensor([a[0] for a in w.active]), minlength=5).double() / n
    assert torch.allclose(freq, torch.softmax(row.double(), 0), atol=0.01)
    # with the last candidate padded, the others share its mass
    mask_pad[:, 4] = False
    w = relax.group_weights(alpha, mask_pad, {}, [0] * n)
    freq = torch.bincount(torch.tensor([a[0] for a in w.active]), minlength=5).double() / n
    assert freq[4] == 0
    assert torch.allclose(freq[:4], torch.softmax(row[:4].double(), 0), atol=0.01)


def test_redraws_non_finite_samples(monkeypatch):
    relax = Gumbel({"hard": True, "tau": 1.0})
    real = gumbel_mod.gumbel_noise
    calls = []

    def noisy(like):
        calls.append(1)
        g = real(like)
        if len(calls) == 1:
            g[0, 0] = math.inf
        return g

    monkeypatch.setattr(gumbel_mod, "gumbel_noise", noisy)
    alpha = torch.zeros(2, 3)
    w = relax.group_weights(alpha, torch.ones(2, 3, dtype=torch.bool), {}, [0, 0])
    assert len(calls) == 2
    assert bool(torch.isfinite(w.ops).all())


def test_a_sample_that_can_never_be_finite_stops_the_search(bound_redraws):
    """It used to be redrawn forever: a diverged GDAS search (NaN weights, then NaN α) hung instead of
    stopping, as a softmax search does, with 'the training loss became nan'; so did tau = nan."""
    bound_redraws(gumbel_mod)
    mask = torch.ones(2, 3, dtype=torch.bool)
    relax = Gumbel({"hard": True, "tau": 1.0})
    with pytest.raises(SearchError, match="became NaN or infinite"):
        relax.group_weights(torch.tensor([[0.0, math.nan, 0.0], [0.0, 0.0, 0.0]]), mask, {}, [0, 0])
    relax.tau = 1e-320  # finite and positive, but (log p + g)/τ overflows on every draw
    with pytest.raises(SearchError, match="samples in a row were not finite"):
        relax.group_weights(torch.randn(2, 3), mask, {}, [0, 0])
    for bad in (math.nan, math.inf, "nan", "10 -> nan"):
        with pytest.raises(BuildError, match="positive and finite"):
            Gumbel({"tau": bad})
    for bad in (True, Ramp(10.0, False)):  # float(True) is 1: `tau = true` was a temperature of 1
        with pytest.raises(BuildError, match="must be a number or a ramp"):
            Gumbel({"tau": bad})


@pytest.mark.parametrize("relax, name", [("gdas", "gumbel"), ("snas", "gumbel"), ("rome", "rome"),
                                         ("dropnas", "dropout-group"), ("parsec", "parsec")])
def test_second_order_is_refused_where_every_forward_pass_samples(relax, name):
    """It ran: each of the unrolled step's forward passes drew its own sample, so the finite-difference
    Hessian term differenced two architectures' gradients (noise far above the first-order term)."""
    from nasc.runtime.search import Request, prepare

    request = Request(space="spaces/nb201.nas", params={"C": 2, "N": 1}, relax=relax,
                      overrides={"epochs": 1, "levels": 2, "order": 2})
    with pytest.raises(SearchError, match=f"{name} has no second-order step"):
        prepare(request)


@pytest.mark.parametrize("relax, name", [("gdas", "gumbel"), ("proxylessnas", "binary-gate"), ("rome", "rome"),
                                         ("parsec", "parsec")])
def test_fix_alpha_is_refused_where_evaluation_is_the_argmax_of_alpha(relax, name):
    """fix_alpha holds α at 0: the argmax of every edge was its first op (`none`), so every validation pass and
    every DARTS-PT perturbation score was the all-`none` network's, and the genotype came out all `none`."""
    from nasc.runtime.search import Request, prepare

    def request(relax, **overrides):
        return Request(space="spaces/nb201.nas", params={"C": 2, "N": 1}, relax=relax,
                       overrides={"epochs": 1, "fix_alpha": True, **overrides})

    with pytest.raises(SearchError, match=f"{name}.* evaluates the most probable architecture"):
        prepare(request(relax))
    assert prepare(request("snas")).config.fix_alpha  # soft samples evaluate softmax(0): the uniform mixture


def test_eval_phase_is_deterministic():
    alpha = torch.tensor([[0.1, 0.9, -0.3], [2.0, 0.0, 1.0]])
    mask = torch.ones(2, 3, dtype=torch.bool)
    hard = Gumbel({"hard": True})
    hard.set_phase("eval")
    w = hard.group_weights(alpha, mask, {}, [0, 0])
    assert w.active == [[1], [0]]
    assert torch.equal(w.ops, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    soft = Gumbel({"hard": False})
    soft.set_phase("eval")
    w = soft.group_weights(alpha, mask, {}, [0, 0])
    assert w.active is None
    assert torch.allclose(w.ops, torch.softmax(alpha, -1))


def test_scalar_others_with_soft_samples_is_refused():
    """`--relax snas --relax-opt scalar_others=true` was accepted and changed nothing: only a hard sample
    leaves candidates out for the scalars to stand in for."""
    with pytest.raises(BuildError, match="scalar_others applies to hard sampling"):
        Gumbel({"hard": False, "scalar_others": True})
    assert Gumbel({"hard": True, "scalar_others": True}).scalar_others
    recorded = Gumbel({"hard": False}).options  # a run's recorded options load again on resume
    assert Gumbel(recorded).options == recorded


def test_scalar_others_keeps_value_and_feeds_every_alpha():
    """AutoDL's NB201 forward_gdas: + Σ_{o≠idx} hardwts[o], 0 forward, a gradient for every α entry."""
    torch.manual_seed(0)
    cands = [torch.nn.Conv2d(2, 2, 1) for _ in range(3)]
    x = torch.randn(1, 2, 3, 3)
    alpha = torch.zeros(1, 3, requires_grad=True)
    mask = torch.ones(1, 3, dtype=torch.bool)
    outs, grads = [], []
    for flag in (False, True):
        relax = Gumbel({"hard": True, "tau": 1.0, "scalar_others": flag})
        edge = relax.make_edge(cands, ["a", "b", "c"], channels=2, stride=1)
        torch.manual_seed(5)
        w = relax.group_weights(alpha, mask, {}, [0])
        out = edge(x, w.ops[0], w.active[0])
        outs.append(out.detach())
        alpha.grad = None
        out.sum().backward()
        grads.append(alpha.grad.clone())
    assert torch.equal(outs[0], outs[1])
    assert not torch.allclose(grads[0], grads[1])


def test_alpha_initialisation():
    soft, hard = Gumbel({"hard": False}), Gumbel({"hard": True})
    a = soft.init_alpha(200, 8, torch.Generator().manual_seed(0))
    assert a.mean().item() == pytest.approx(1.0, abs=2e-3)
    assert a.std().item() == pytest.approx(0.01, rel=0.1)
    b = hard.init_alpha(200, 8, torch.Generator().manual_seed(0))
    assert b.abs().max().item() < 1e-2
    assert Gumbel({"hard": True, "init": "snas"}).init_alpha(3, 3).mean().item() == pytest.approx(1.0, abs=0.05)


def test_presets():
    gdas = load_relaxation("gdas")
    assert isinstance(gdas, Gumbel) and gdas.hard
    assert (gdas.tau_start, gdas.tau_end) == (10.0, 0.1)
    snas = load_relaxation("snas")
    assert isinstance(snas, Gumbel) and not snas.hard and snas.init == "snas"
    assert (snas.tau_start, snas.tau_end) == (1.0, 0.03)
    assert load_relaxation("gdas", {"hard": False}).hard is False  # explicit options win
    opts, settings = preset("gdas")
    assert opts == {"hard": True, "tau": Ramp(10.0, 0.1)}
    assert settings["epochs"] == 250 and settings["batch"] == 256 and settings["nesterov"] is True
    cfg = make_config({}, settings)
    assert cfg.weight_decay == 5e-4 and cfg.lr_min == 0.001 and cfg.levels == 2
    cfg = make_config({}, preset("snas")[1])
    assert cfg.levels == 1 and cfg.epochs == 150 and cfg.arch_clip == 10
    assert cfg.arch_optimizer == "sgd" and cfg.arch_lr == 3e-4 and cfg.arch_weight_decay == 0
    import json
    json.dumps(gdas.options)  # recorded in config.json


def test_a_preset_the_space_names_keeps_the_settings_written_beside_it(tmp_path):
    # `relax gdas` in a file: GDAS' settings replace what darts.nas declares, not the file's own
    # `batch = 32`; a command-line --relax gdas overrides the block where the preset sets a value
    # (docs/methods.md), and keeps the block's other settings (gd.nas: lr = 0.05)
    from nasc.runtime.search import Request, prepare

    (tmp_path / "gd.nas").write_text('space gd extends "darts.nas"\nrelax gdas\nsearch:\n    batch = 32\n')
    (tmp_path / "lr.nas").write_text('space lr extends "darts.nas"\nsearch:\n    batch = 32\n'
                                     '    weights = sgd(lr = 0.05)\n')
    (tmp_path / "more.nas").write_text('space more extends "gd.nas"\nsearch:\n    epochs = 3\n')
    small = {"C": 4, "layers": 3}
    cfg = prepare(Request(space=str(tmp_path / "gd.nas"), params=small)).config
    assert (cfg.batch, cfg.epochs, cfg.nesterov, cfg.weight_decay) == (32, 250, True, 5e-4)
    cfg = prepare(Request(space=str(tmp_path / "more.nas"), params=small)).config
    assert (cfg.batch, cfg.epochs) == (32, 3)
    cfg = prepare(Request(space="spaces/darts.nas", params=small, relax="gdas")).config
    assert (cfg.batch, cfg.epochs) == (256, 250)
    cfg = prepare(Request(space=str(tmp_path / "lr.nas"), params=small, relax="gdas")).config
    assert (cfg.batch, cfg.epochs, cfg.lr) == (256, 250, 0.05)


@pytest.mark.slow
@pytest.mark.parametrize("space,params", [("spaces/darts.nas", {"C": 4, "layers": 5}),
                                          ("spaces/nb201.nas", {"C": 4, "N": 1})])
def test_search_end_to_end(tmp_path, space, params):
    from nasc.runtime.search import Request, prepare, run_search

    job = prepare(Request(space=space, params=params, relax="gdas", overrides={"epochs": 1, "batch": 32}))
    assert isinstance(job.relax, Gumbel) and job.config.epochs == 1 and job.config.nesterov
    result = run_search(job, tmp_path / "run")
    assert (result.run_dir / "genotype.json").exists()
    assert math.isfinite(result.final["train_loss"])
