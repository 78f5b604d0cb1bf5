"""PARSEC (`parsec`): sampled children for w, an importance-weighted empirical-Bayes gradient for π = α."""

from __future__ import annotations

import json
import math
from itertools import combinations

import pytest
import torch
import torch.nn.functional as F

from nasc.catalog import PRESETS
from nasc.compiler.pipeline import compile_space
from nasc.errors import BuildError, SearchError
from nasc.runtime.relaxations import parsec as P
from nasc.runtime.relaxations.base import RELAXATIONS, load_relaxation, preset
from nasc.runtime.selectors import load_selector
from nasc.runtime.supernet import build_supernet

torch.set_num_threads(1)  # tiny networks on a loaded 2-core machine: one intra-op thread

# one searchable edge, three ops with different outputs, no BN (so a re-run gives the same loss)
TINY = """
space tiny(C = 2, classes = 3)

op skip_connect = identity | on stride 2: factorized_reduce
op avg_pool_3x3 = avg_pool(3, stride)
op conv_3x3     = conv(3, stride)

ops three = [skip_connect, avg_pool_3x3, conv_3x3]

cell c(x0):
    nodes x1 = sum
    edges dense: three
    output x1

network:
    input 1 x 4 x 4
    stem conv(3, out = C)
    stack 1 x c, width C
    head global_avg_pool > linear(classes)

alpha shared per cell
relax softmax
select argmax per edge
"""

# one edge; only skip_connect lets the input reach the head
TOY = """
space toy(C = 4, classes = 3)

op none         = zero(stride)
op blank        = zero(stride)
op skip_connect = identity | on stride 2: factorized_reduce

ops toy_ops = [none, blank, skip_connect]

cell c(x0):
    nodes x1 = sum
    edges dense: toy_ops
    output x1

network:
    input 1 x 4 x 4
    stem conv(3, out = C)
    stack 1 x c, width C
    head global_avg_pool > linear(classes)

alpha shared per cell
relax softmax
select argmax per edge
"""


# a node with a fixed input (n0 -> n1) and two searchable ones, under `select top 2 per node`
FIXED = """
space fixed(C = 4, classes = 3)

op skip_connect = identity | on stride 2: factorized_reduce
op avg_pool_3x3 = avg_pool(3, stride)
op conv_3x3     = conv(3, stride)

ops three = [skip_connect, avg_pool_3x3, conv_3x3]

cell c(x0, x1):
    nodes n0, n1 = sum
    edges dense: three
    edge n0 -> n1: skip_connect
    output concat(n0, n1)

network:
    input 1 x 4 x 4
    stem conv(3, out = C)
    stack 1 x c, width C
    head global_avg_pool > linear(classes)

alpha shared per cell
relax softmax
select top 2 per node
"""

def _build(ir, **options):
    relax = load_relaxation("parsec", options)
    net = build_supernet(ir, relax, generator=torch.Generator().manual_seed(0))
    relax.setup(ir, net)
    return relax, net


def _darts(**options):
    ir = compile_space("spaces/darts.nas", params={"C": 4, "layers": 3}, input_shape=(1, 8, 8), ctx=None)
    return (ir, *_build(ir, **options))


def _tiny(text=TINY, **options):
    ir = compile_space("t.nas", text=text)
    return (ir, *_build(ir, **options))


def _record(net):
    """Forward hooks on every candidate's last leaf module (mixed edges may run a candidate's
    submodules directly, sharing its leading ReLU): a list of (layer, edge key, candidate)."""
    calls: list[tuple[str, str, int]] = []
    hooks = []
    for lid, layer in net.layers.items():
        for key, edge in getattr(layer, "edges", {}).items():
            if isinstance(edge, P.ParsecEdge):
                for i, cand in enumerate(edge.candidates):
                    last = [m for m in cand.modules() if not list(m.children())][-1]
                    hooks.append(last.register_forward_hook(
                        lambda m, a, o, k=(lid, key, i): calls.append(k)))
    return calls, hooks


# ---- one child per forward ----

@pytest.mark.parametrize("topology", [True, False])
def test_weight_phase_runs_exactly_one_sampled_child(topology):
    torch.manual_seed(0)
    ir, relax, net = _darts(topology=topology)
    assert ("normal__beta" in net.arch_extras) == topology
    x = torch.randn(2, 1, 8, 8)
    for trial in range(3):
        calls, hooks = _record(net)
        relax.set_phase("weights")
        net(x).logsumexp(1).sum().backward()
        for h in hooks:
            h.remove()
        assert len(calls) == len(set(calls))  # every candidate ran at most once
        ran: dict[tuple[str, str], list[int]] = {}
        for lid, key, i in calls:
            ran.setdefault((lid, key), []).append(i)
        assert all(len(v) == 1 for v in ran.values())  # one op per edge that is in the child
        for group, info in ir.alpha_groups.items():
            keys = net.group_rows[group]
            per_cell = [{k: ran.get((lid, k)) for k in keys} for lid in info["layers"]]
            assert all(c == per_cell[0] for c in per_cell)  # one sample shared by the group's cells
            nodes = net.group_nodes[group]
            for node in set(nodes):
                on = [k for k, n in zip(keys, nodes) if n == node and per_cell[0][k] is not None]
                n_in = nodes.count(node)
                assert len(on) == (min(2, n_in) if topology else n_in)  # DARTS: two inputs per node
    assert all(a.grad is None for a in net.arch_parameters())  # constant weights: no gradient to π


def test_eval_runs_the_most_probable_architecture():
    torch.manual_seed(1)
    ir, relax, net = _darts()
    with torch.no_grad():
        for p in net.arch_parameters():
            p.copy_(torch.randn_like(p))
    calls, hooks = _record(net)
    relax.set_phase("eval")
    with torch.no_grad():
        net(torch.randn(2, 1, 8, 8))
    for h in hooks:
        h.remove()
    ran = {(lid, key): i for lid, key, i in calls}
    for group, info in ir.alpha_groups.items():
        alpha, beta, nodes = net.alphas[group], net.arch_extras[f"{group}__beta"], net.group_nodes[group]
        for node in set(nodes):
            rows = [r for r, n in enumerate(nodes) if n == node]
            top = sorted(rows, key=lambda r: -float(beta[r].detach()))[:2]
            for r in rows:
                got = ran.get((info["layers"][0], net.group_rows[group][r]))
                assert got == (int(alpha[r].argmax()) if r in top else None)


@pytest.mark.parametrize("which", ["alpha", "beta"])
def test_a_diverged_search_stops_with_an_error(which):
    """NaN α or β (the weights diverged first) ended the search with 'internal error: RuntimeError:
    probability tensor contains either inf, nan or element < 0' from torch.multinomial."""
    ir, relax, net = _darts()
    group = next(iter(ir.alpha_groups))
    param = net.alphas[group] if which == "alpha" else net.arch_extras[f"{group}__beta"]
    with torch.no_grad():
        param.view(-1)[0] = float("nan")
    relax.set_phase("weights")
    with pytest.raises(SearchError, match="became NaN or infinite"):
        net(torch.randn(2, 1, 8, 8))


def test_a_fixed_input_does_not_take_a_sampled_slot():
    """The selector keeps a node's 2 strongest searchable inputs and its fixed ones on top (so does the
    compiler's count), but PARSEC gave the fixed input one of the k slots: n1's children had one of its
    two searchable inputs, its genotype both, and the per-epoch evaluation ran a cell the genotype is not."""
    ir, relax, net = _tiny(FIXED, samples=2)
    genotype = load_selector("magnitude", {}).select(net, ir)
    assert sorted(e.input for e in genotype.cells["c"].edges if e.node == 3) == [0, 1, 2]
    torch.manual_seed(0)
    for _ in range(5):
        for g, a in net.alphas.items():
            assert all(relax.sample(a, net.mask(g), net.extras(g)).on), "every searchable input is in the child"
    calls, hooks = _record(net)
    relax.set_phase("eval")
    net(torch.randn(2, 1, 4, 4))
    for h in hooks:
        h.remove()
    assert len({key for _, key, _ in calls}) == 4  # both nodes' searchable edges ran


def test_genotype_is_the_mode_top_inputs_by_beta_and_best_op():
    torch.manual_seed(2)
    ir, relax, net = _darts()
    with torch.no_grad():
        for p in net.arch_parameters():
            p.copy_(torch.randn_like(p))
    geno = load_selector("magnitude").select(net, ir)
    index = {key: r for r, key in enumerate(net.group_rows["normal"])}
    cell = ir.cells["normal"]
    idx = {n: cell.nodes[n]["index"] for n in cell.nodes}
    beta, alpha = net.arch_extras["normal__beta"].detach(), net.alphas["normal"].detach()
    ops = net.group_ops["normal"]
    want = set()
    for node in cell.graph["nodes"]:
        srcs = sorted(cell.predecessors(node), key=lambda n: -float(beta[index[cell.edges[n, node]["edge"].key]]))
        for src in srcs[:2]:
            r = index[cell.edges[src, node]["edge"].key]
            best = max((i for i, o in enumerate(ops[r]) if o != "none"), key=lambda i: float(alpha[r, i]))
            want.add((idx[node], idx[src], ops[r][best]))
    assert {(e.node, e.input, e.op) for e in geno.cells["normal"].edges} == want


# ---- the estimator ----

def test_arch_gradient_matches_the_hand_computed_estimator():
    torch.manual_seed(3)
    ir, relax, net = _tiny(samples=6)
    net = net.double()
    alpha = net.alphas["c"]
    with torch.no_grad():
        alpha.copy_(torch.tensor([[0.4, -0.3, 0.1]], dtype=torch.float64))
    x, y = torch.randn(5, 1, 4, 4, dtype=torch.float64), torch.randint(0, 3, (5,))
    # ℓ per op, by enumeration (the supernet with one fixed op)
    ell = []
    with torch.no_grad():
        for o in range(3):
            w = torch.zeros(1, 3, dtype=torch.float64)
            w[0, o] = 1.0
            weights = {"c": P.GroupWeights(w, active=[[o]])}
            ell.append(float(F.cross_entropy(net(x, weights=weights), y, reduction="sum")))
    assert len(set(ell)) == 3
    calls, hooks = _record(net)
    relax.set_phase("arch")
    loss = relax.arch_loss(net, None, x, y)
    (grad,) = torch.autograd.grad(loss, [alpha])
    for h in hooks:
        h.remove()
    picked = [i for _, _, i in calls]  # the op of each of the K children, in order
    assert len(picked) == 6
    # by hand: ω_k ∝ exp(−ℓ_{o_k}); ∇ = −Σ_k ω_k (onehot(o_k) − softmax(α))
    lk = [ell[o] for o in picked]
    m = min(lk)
    e = [math.exp(-(v - m)) for v in lk]
    omega = [v / sum(e) for v in e]
    p = torch.softmax(alpha.detach()[0], 0).tolist()
    want = [-sum(omega[k] * ((o == picked[k]) - p[o]) for k in range(6)) for o in range(3)]
    assert grad[0].tolist() == pytest.approx(want, abs=1e-10)
    # the logged value: the IS estimate of the mean negative log marginal likelihood
    nll = -(math.log(sum(math.exp(-v) for v in lk) / 6)) / 5
    assert float(loss.detach()) == pytest.approx(nll, rel=1e-9)


def test_topology_log_prob_and_gradient_by_hand():
    beta = torch.tensor([0.3, -0.5, 1.1], dtype=torch.float64, requires_grad=True)

    def by_hand(i, j):  # draw i then j, or j then i, without replacement
        q = torch.softmax(beta, 0)
        return q[i] * q[j] / (1 - q[i]) + q[j] * q[i] / (1 - q[j])


    total = 0.0
    for i, j in combinations(range(3), 2):
        lp = P.subset_log_prob(beta, [i, j])
        want = torch.log(by_hand(i, j))
        assert float(lp.detach()) == pytest.approx(float(want.detach()), rel=1e-12)
        g1, = torch.autograd.grad(lp, beta)
        g2, = torch.autograd.grad(want, beta)
        assert torch.allclose(g1, g2, atol=1e-12)
        total += float(lp.detach().exp())
    assert total == pytest.approx(1.0)
    incl = P.inclusion_probabilities(beta.detach(), 2)
    assert float(incl.sum()) == pytest.approx(2.0)
    assert incl.argsort().tolist() == beta.detach().argsort().tolist()  # monotone in β
    # the sampler draws from the same law
    torch.manual_seed(0)
    q = torch.softmax(beta.detach(), 0)
    counts = {s: 0 for s in combinations(range(3), 2)}
    n = 4000
    for _ in range(n):
        counts[tuple(sorted(torch.multinomial(q, 2, replacement=False).tolist()))] += 1
    for (i, j), c in counts.items():
        assert c / n == pytest.approx(float(by_hand(i, j).detach()), abs=0.03)


def test_darts_arch_gradient_reaches_alpha_and_beta_and_is_finite():
    torch.manual_seed(4)
    ir, relax, net = _darts(samples=3)
    relax.set_phase("arch")
    loss = relax.arch_loss(net, None, torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,)))
    grads = torch.autograd.grad(loss, net.arch_parameters())
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    # rows of node 0 (two inputs, both always kept) get no β gradient
    nodes = net.group_nodes["normal"]
    beta_grad = grads[list(net.arch_extras).index("normal__beta") + len(net.alphas)]
    assert all(float(beta_grad[r]) == 0.0 for r, n in enumerate(nodes) if n == min(nodes))


def test_importance_weights_are_stable_for_large_losses():
    losses = torch.tensor([1.0e4, 1.0e4 + 1.0, 2.5e4, 1.0e4])
    omega = P.importance_weights(losses)
    assert torch.isfinite(omega).all() and float(omega.sum()) == pytest.approx(1.0)
    assert omega.tolist() == pytest.approx([1 / (2 + math.exp(-1)), math.exp(-1) / (2 + math.exp(-1)), 0.0,
                                            1 / (2 + math.exp(-1))])
    # end to end: a head scaled so every child's summed loss is ~1e4 or more
    torch.manual_seed(5)
    ir, relax, net = _tiny(samples=8)
    with torch.no_grad():
        net.layers["head"][1].weight.mul_(1e5)
    x, y = torch.randn(16, 1, 4, 4), torch.randint(0, 3, (16,))
    relax.set_phase("arch")
    _, ells = relax._children(net, x, y)
    assert float(ells.min()) > 1e3
    loss = relax.arch_loss(net, None, x, y)
    (g,) = torch.autograd.grad(loss, [net.alphas["c"]])
    assert math.isfinite(float(loss.detach())) and torch.isfinite(g).all()


def test_importance_weight_estimator_gradient():
    torch.manual_seed(6)
    ir, relax, net = _tiny(samples=4, weight_estimator="importance")
    net = net.double()
    x, y = torch.randn(6, 1, 4, 4, dtype=torch.float64), torch.randint(0, 3, (6,))
    relax.set_phase("weights")
    weights = net.weight_parameters()
    calls, hooks = _record(net)
    total, logits = relax.weight_loss(net, x, y)
    total.backward()
    for h in hooks:
        h.remove()
    got = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in weights]
    picked = [i for _, _, i in calls][:4]  # the K no-grad children come first
    ells, grads = [], []
    for o in picked:
        net.zero_grad()
        w = torch.zeros(1, 3, dtype=torch.float64)
        w[0, o] = 1.0
        out = net(x, weights={"c": P.GroupWeights(w, active=[[o]])})
        ells.append(float(F.cross_entropy(out, y, reduction="sum").detach()))
        F.cross_entropy(out, y).backward()
        grads.append([torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in weights])
    omega = P.importance_weights(torch.tensor(ells, dtype=torch.float64)).tolist()
    for i, g in enumerate(got):
        want = sum(omega[k] * grads[k][i] for k in range(4))
        assert torch.allclose(g, want, atol=1e-10)
    assert logits.shape == (6, 3)
    assert relax.weight_loss.__func__ is P.Parsec.weight_loss
    assert load_relaxation("parsec").weight_loss(net, x, y) is None  # uniform: the loop's one sampled child


def test_pi_concentrates_on_the_clearly_best_op():
    torch.manual_seed(7)
    ir, relax, net = _tiny(TOY, samples=4)
    alpha = net.alphas["c"]
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.2, momentum=0.9)
    a_opt = torch.optim.Adam([alpha], lr=0.05, betas=(0.5, 0.999))

    def batch():
        y = torch.randint(0, 3, (32,))
        return torch.randn(32, 1, 4, 4) * 0.5 + (y.float() - 1).view(-1, 1, 1, 1), y

    for step in range(150):
        if step >= 20:  # a short weight-only warm-up, then an α step per weight step
            relax.set_phase("arch")
            a_opt.zero_grad()
            xv, yv = batch()
            relax.arch_loss(net, None, xv, yv).backward()
            a_opt.step()
        relax.set_phase("weights")
        w_opt.zero_grad()
        x, y = batch()
        F.cross_entropy(net(x), y).backward()
        w_opt.step()
    p = torch.softmax(alpha.detach()[0], 0)
    assert float(p[2]) > 0.9, p  # skip_connect: the only op through which the input reaches the head


# ---- registration and options ----

def test_registered_and_options():
    assert RELAXATIONS.get("parsec") is P.Parsec
    relax = load_relaxation("parsec")
    assert isinstance(relax, P.Parsec) and relax.options == {"samples": 16, "weight_estimator": "uniform",
                                                              "topology": "auto"}
    assert P.Parsec.presets["parsec"] == ({"samples": 16}, {})
    if "parsec" in PRESETS:
        assert preset("parsec") == ({"samples": 16}, {})
    assert load_relaxation("parsec", {"samples": "4", "topology": "false"}).options["topology"] is False
    for bad in ({"samples": 0}, {"samples": True}, {"weight_estimator": "omega"}, {"topology": "maybe"},
                {"temperature": 1}):
        with pytest.raises(BuildError):
            load_relaxation("parsec", bad)


def test_single_level_is_refused():
    """levels = 1 once searched nothing: weight-phase children are constant one-hots, so π never moved."""
    from nasc.runtime.search import Request, prepare

    with pytest.raises(SearchError, match="parsec"):
        prepare(Request(space="spaces/darts.nas", params={"C": 4, "layers": 3}, relax="parsec",
                        overrides={"epochs": 1, "levels": 1}))


@pytest.mark.slow
def test_darts_search_one_epoch(tmp_path):
    from nasc.runtime.search import Request, prepare, run_search

    job = prepare(Request(space="spaces/darts.nas", params={"C": 4, "layers": 5}, relax="parsec",
                          relax_options={"samples": 4}, overrides={"epochs": 1, "batch": 32}))
    before = {k: v.detach().clone() for k, v in job.net.named_parameters() if k.startswith(("alphas", "arch"))}
    result = run_search(job, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["relax"]["name"] == "parsec" and config["relax"]["options"]["samples"] == 4
    after = dict(job.net.named_parameters())
    assert any(not torch.equal(v, after[k].detach()) for k, v in before.items())  # π moved
    assert "arch_extras.normal__beta" in before
    for cell in result.genotype.cells.values():
        assert cell.n_nodes == 4 and len(cell.edges) == 8 and all(e.op != "none" for e in cell.edges)
