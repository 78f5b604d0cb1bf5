"""PARSEC (Casale, Gordon & Fusi 2019, "Probabilistic Neural Architecture Search", arXiv 1902.05116).

No code of PARSEC exists and its full text was not available; this follows the
verified points and the estimator derived in the reference notes (algorithms.md §5.9).

Prior. An architecture A is a draw of independent categoricals, one per
choice, with logits π = the α parameters (probabilities softmax(α)):

* every searchable edge's op: o_e ~ Cat(softmax(α_e));
* with `topology` ("auto", the default), in spaces whose selector keeps the top
  k inputs per node (the DARTS space: k = 2), each node's *set of inputs* too:
  m = k distinct searchable input edges (fixed inputs stay, on top, as the
  selector and the compiler's count keep them) are drawn without
  replacement from softmax(β_node) (Plackett-Luce; β is one logit per edge,
  initialised 0, registered by `setup` as the group's extra tensor "beta"), so
  every sampled child is a valid DARTS cell. The paper's prior covers inputs
  and ops; whether it draws the two inputs of a node without replacement (as
  here: an edge of nasc carries one op, so two inputs on the same edge cannot
  be expressed) is UNVERIFIED. Nodes that combine by `mean`, or have ≤ m
  searchable inputs, are not sampled (every input kept). `topology = false`
  samples the ops only (then every edge runs its sampled op).

log p(A|π) sums log softmax(α_e)[o_e] over the edges that are *in* A (the op
of an unselected edge does not change the network; dropping it is the exact
Rao-Blackwellisation, its posterior equals its prior) plus log P(S_node | β).

Per forward pass and α group (shared by the group's cells, as the other
sampling relaxations), on the global CPU RNG (a seeded run replays exactly):

* phase "weights": one architecture; only its op runs on each selected edge
  (`GroupWeights.active`), weight exactly 1, no gradient to α; unselected
  edges run nothing and contribute 0. Memory is that of one child.
* phase "eval": the most probable architecture: argmax op per edge and the
  top-m edges per node by β (the mode of the Plackett-Luce subset law).
* α step (`arch_loss`, on the validation batch): K = `samples` children
  A_k ~ p(A|π), each evaluated without gradient (torch.no_grad: one child's
  memory), ℓ_k = summed batch cross-entropy (= −log p(y|X, w, A_k)),
  ω = softmax_k(−ℓ_k) (in log space, stable for any loss size), and the
  surrogate −Σ_k ω_k.detach()·log p(A_k|π), whose gradient
  −Σ_k ω_k ∇_π log p(A_k|π) is (minus) the self-normalised importance-sampling
  estimate of ∇_π log p(y|X, w, π), §5.9; Adam descends it, i.e. ascends the
  marginal likelihood. The returned value (what the metrics log as
  `arch_loss`) is instead the importance-sampled estimate of the mean
  negative log marginal likelihood per example, −(log mean_k exp(−ℓ_k))/B;
  the gradient is exactly that of the surrogate.
* weight step, `weight_estimator`:
  - "uniform" (default): one child per step, plain cross-entropy (the
    (1/K)Σ_k gradient with K = 1);
  - "importance": K children, ω as above from no-grad passes, then
    Σ_k ω_k·CE_k (mean batch cross-entropy, so the learning rate keeps its
    scale), back-propagated one child at a time (memory of one child; about
    2K forwards and up to K backwards per step; children with ω_k = 0 skipped).
  Whether PARSEC weights w's gradient by ω_k or by 1/K is UNVERIFIED (§5.9).

Selection. `probabilities` is softmax(α): a magnitude selector taking the
argmax per edge gives the most probable ops. For topology groups
`edge_strengths` is P(edge ∈ S_node)/max_allowed softmax(α_e), so the strongest
allowed op of an edge shows the edge's inclusion probability and the top-k rule
keeps the top-m edges by β — the most probable input set (inclusion
probability is monotone in β) — with their most probable op other than the
excluded ones (DARTS: `none`). With `topology = false` in the DARTS space the
usual DARTS top-2 rule applies to softmax(α).

Hyper-parameters (optimisers, learning rates, epochs, batch) of the paper are
UNVERIFIED: the preset `parsec` only sets K = 16 (§5.9) and keeps the
space's DARTS defaults. Use first order (`order = 1`, the DARTS default): the
surrogate does not depend on w, so the unrolled second-order term vanishes.
Bi-level search is required (`check_config` refuses `levels = 1`): the
weight-phase children carry no gradient to π.
Not reproduced: any hyper-prior on π (UNVERIFIED whether there is one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import combinations, permutations
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasc.errors import BuildError, SearchError
from nasc.runtime.relaxations.base import (RELAXATIONS, GroupWeights, MixedEdge, Relaxation, diverged, first_order_only,
                                          masked_softmax)

_MAX_PERMUTATIONS = 720  # m! orderings per node for the exact subset probability (m ≤ 6)
_MAX_ENUMERATION = 20000  # subsets × orderings for exact inclusion probabilities (else softmax(β))


def importance_weights(losses: torch.Tensor) -> torch.Tensor:
    """ω = softmax(−ℓ), in log space after shifting by min ℓ (exact differences, finite for any loss size)."""
    shifted = losses.min() - losses  # ≤ 0, the best child at exactly 0
    return torch.exp(shifted - torch.logsumexp(shifted, dim=0))


def subset_log_prob(beta: torch.Tensor, chosen: list[int]) -> torch.Tensor:
    """log P(S = set(chosen)) when |S| items are drawn without replacement ∝ exp(β) (Plackett-Luce)."""
    terms = []
    n = beta.shape[0]
    for order in permutations(chosen):
        lp = beta.new_zeros(())
        for t, i in enumerate(order):
            left = [j for j in range(n) if j not in order[:t]]  # not drawn yet
            lp = lp + beta[i] - torch.logsumexp(beta[left], dim=0)
        terms.append(lp)
    return torch.logsumexp(torch.stack(terms), dim=0)


def inclusion_probabilities(beta: torch.Tensor, m: int) -> torch.Tensor:
    """P(i ∈ S) for the m-subset law of `subset_log_prob` (softmax(β) when enumerating is too costly)."""
    n = beta.shape[0]
    if math.comb(n, m) * math.factorial(m) > _MAX_ENUMERATION:
        return torch.softmax(beta, dim=0)
    out = torch.zeros_like(beta)
    for subset in combinations(range(n), m):
        out[list(subset)] += subset_log_prob(beta, list(subset)).exp()
    return out


class ParsecEdge(MixedEdge):
    """A mixed edge that an architecture may leave out: `active == []` runs nothing and adds 0."""

    def forward(self, x: torch.Tensor, w: torch.Tensor, active: list[int] | None = None) -> torch.Tensor:
        if active is not None and not active:
            return x.new_zeros(())  # broadcasts in the node's sum
        return super().forward(x, w, active)


class _Node:
    """One node whose inputs are sampled: its searchable rows and how many of them a child keeps."""

    __slots__ = ("rows", "m")

    def __init__(self, rows: list[int], m: int):
        self.rows, self.m = rows, m


class _Plan:
    """Per α group: the sampled nodes, the rows that are never in a child, and the ops a selector excludes."""

    __slots__ = ("alpha", "nodes", "off", "allowed")

    def __init__(self, alpha: torch.Tensor, nodes: list[_Node], off: list[int], allowed: torch.Tensor):
        self.alpha, self.nodes, self.off, self.allowed = alpha, nodes, off, allowed


class Sample:
    """One architecture of one group: an op per row, and whether the row (edge) is in the child."""

    __slots__ = ("ops", "on", "sets")

    def __init__(self, ops: list[int], on: list[bool], sets: list[list[int]]):
        self.ops, self.on, self.sets = ops, on, sets  # sets: per sampled node, chosen positions in node.rows


def _flag_or_auto(value: Any) -> str | bool:
    if value in ("auto", True, False):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "auto"):
        return {"true": True, "false": False, "auto": "auto"}[value.lower()]
    raise BuildError(f"parsec option topology must be auto, true or false, got {value!r}")


@RELAXATIONS.register("parsec")
class Parsec(Relaxation):
    """PARSEC: a categorical prior over architectures, learned by importance-weighted empirical Bayes."""

    name = "parsec"
    evaluates_one_path = True
    defaults: dict[str, Any] = {"samples": 16, "weight_estimator": "uniform", "topology": "auto"}
    presets = {"parsec": ({"samples": 16}, {})}  # the paper's optimisers and schedule are UNVERIFIED

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        k = self.options["samples"]
        if isinstance(k, str) and k.isdigit():
            k = int(k)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise BuildError(f"parsec option samples must be an integer ≥ 1, got {self.options['samples']!r}")
        if self.options["weight_estimator"] not in ("uniform", "importance"):
            raise BuildError(f"parsec option weight_estimator must be \"uniform\" or \"importance\", "
                             f"got {self.options['weight_estimator']!r}")
        self.options["samples"] = self.samples = k
        self.options["topology"] = self.topology = _flag_or_auto(self.options["topology"])
        self._plans: dict[int, _Plan] = {}  # id(α parameter) -> topology plan

    # ---- construction ----
    def check_config(self, config: Any) -> None:
        if config.levels != 2:
            raise SearchError("parsec needs bi-level search (levels = 2): π learns only in α steps (the "
                              "estimator of `arch_loss`), so with one level it would never move",
                              hint="search bi-level (--opt levels=2)")
        first_order_only("parsec", config, "architecture samples")

    def make_edge(self, candidates: list[nn.Module], names: list[str], *, channels: int, stride: int) -> nn.Module:
        return ParsecEdge(candidates, names)

    def setup(self, ir: Any, net: nn.Module) -> None:
        """Find the nodes whose inputs are sampled and register their β (zeros: uniform over inputs)."""
        from nasc.compiler.count import selection_rule

        per, k, exclude = selection_rule(ir)
        for group, info in ir.alpha_groups.items():
            alpha = net.alphas[group]
            ops = net.group_ops[group]
            allowed = torch.zeros(alpha.shape, dtype=torch.bool)
            for r, names in enumerate(ops):
                keep = [i for i, o in enumerate(names) if o not in exclude] or list(range(len(names)))
                allowed[r, keep] = True
            if self.topology is False or per != "node" or info["kind"] != "cell":
                continue
            cell = ir.cells[info["cell"]]
            row_of = {key: r for r, key in enumerate(net.group_rows[group])}
            nodes, off = [], []
            for node in cell.graph["nodes"]:
                keys = [cell.edges[src, node]["edge"].key for src in cell.predecessors(node)]
                rows = sorted(row_of[key] for key in keys if key in row_of)
                m = k  # the selector keeps the k strongest searchable inputs, and fixed ones on top of them
                if not rows or cell.nodes[node].get("combine", "sum") != "sum" or len(rows) <= m:
                    continue  # every input kept
                if m == 0:
                    off.extend(rows)
                    continue
                if math.factorial(m) > _MAX_PERMUTATIONS:
                    raise BuildError(f"parsec cannot sample {m} inputs per node (at most 6)",
                                     hint="use --relax-opt topology=false")
                nodes.append(_Node(rows, m))
            if not nodes and not off:
                continue
            self._plans[id(alpha)] = _Plan(alpha, nodes, off, allowed)
            name = f"{group}__beta"
            if name not in net.arch_extras:
                net.arch_extras[name] = nn.Parameter(torch.zeros(alpha.shape[0], dtype=alpha.dtype,
                                                                 device=alpha.device))

    def _plan(self, alpha: torch.Tensor) -> _Plan | None:
        """The group's plan: by the α parameter, or by its storage (selectors pass `α.detach()`)."""
        plan = self._plans.get(id(alpha))
        if plan is None:
            for p in self._plans.values():
                if p.alpha.data_ptr() == alpha.data_ptr() and p.alpha.shape == alpha.shape:
                    return p
        return plan

    # ---- sampling ----
    def sample(self, alpha: torch.Tensor, mask: torch.Tensor, extras: Mapping[str, torch.Tensor]) -> Sample:
        """One architecture of a group, drawn on the CPU RNG (the same on every device)."""
        probs = masked_softmax(alpha.detach(), mask).cpu()
        if not bool(torch.isfinite(probs).all()):  # torch.multinomial would fail with an internal error
            raise diverged("parsec")
        ops = torch.multinomial(probs, 1).squeeze(1).tolist()
        on = [True] * alpha.shape[0]
        sets: list[list[int]] = []
        plan = self._plan(alpha)
        if plan is not None:
            for r in plan.off:
                on[r] = False
            beta = extras["beta"].detach().cpu()
            if not bool(torch.isfinite(beta).all()):
                raise diverged("parsec")
            for node in plan.nodes:
                q = torch.softmax(beta[node.rows], dim=0)
                chosen = sorted(torch.multinomial(q, node.m, replacement=False).tolist())
                sets.append(chosen)
                picked = set(chosen)
                for j, r in enumerate(node.rows):
                    on[r] = j in picked
        return Sample(ops, on, sets)

    def mode(self, alpha: torch.Tensor, mask: torch.Tensor, extras: Mapping[str, torch.Tensor]) -> Sample:
        """The most probable architecture: argmax op per edge, top-m inputs per node by β."""
        ops = alpha.detach().masked_fill(~mask, float("-inf")).argmax(-1).tolist()
        on = [True] * alpha.shape[0]
        sets: list[list[int]] = []
        plan = self._plan(alpha)
        if plan is not None:
            for r in plan.off:
                on[r] = False
            beta = extras["beta"].detach().cpu()
            for node in plan.nodes:
                b = beta[node.rows].tolist()
                chosen = sorted(sorted(range(len(b)), key=lambda j: (-b[j], j))[: node.m])
                sets.append(chosen)
                for j, r in enumerate(node.rows):
                    on[r] = j in chosen
        return Sample(ops, on, sets)

    def log_prob(self, alpha: torch.Tensor, mask: torch.Tensor, extras: Mapping[str, torch.Tensor],
                 s: Sample) -> torch.Tensor:
        """log p(A|π) of a group's sample, differentiable in α (and β)."""
        logp = torch.log_softmax(alpha.masked_fill(~mask, float("-inf")), dim=-1)
        rows = [r for r, on in enumerate(s.on) if on]
        idx = torch.tensor(rows, dtype=torch.long, device=alpha.device)
        col = torch.tensor([s.ops[r] for r in rows], dtype=torch.long, device=alpha.device)
        total = logp[idx, col].sum()
        plan = self._plan(alpha)
        if plan is not None:
            beta = extras["beta"]
            for node, chosen in zip(plan.nodes, s.sets):
                total = total + subset_log_prob(beta[node.rows], chosen)
        return total

    @staticmethod
    def weights_of(alpha: torch.Tensor, s: Sample) -> GroupWeights:
        """Constant one-hot weights of a sample; only the selected edges' sampled ops run."""
        w = torch.zeros(alpha.shape, dtype=alpha.dtype)
        active: list[list[int]] = []
        for r, (o, on) in enumerate(zip(s.ops, s.on)):
            if on:
                w[r, o] = 1.0
            active.append([o] if on else [])
        return GroupWeights(w.to(alpha.device), active=active)

    def draw(self, net: nn.Module) -> dict[str, Sample]:
        """One architecture of the whole network (one sample per α group)."""
        return {g: self.sample(a, net.mask(g), net.extras(g)) for g, a in net.alphas.items()}

    # ---- every forward pass ----
    def group_weights(self, alpha: torch.Tensor, mask: torch.Tensor, extras: Mapping[str, torch.Tensor],
                      node_of_row: list[int]) -> GroupWeights:
        s = self.mode(alpha, mask, extras) if self.phase == "eval" else self.sample(alpha, mask, extras)
        return self.weights_of(alpha, s)

    def _children(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor
                  ) -> tuple[list[dict[str, Sample]], torch.Tensor]:
        """K architectures and their summed batch cross-entropies ℓ_k (no gradient: one child's memory)."""
        drawn, losses = [], []
        with torch.no_grad():
            for _ in range(self.samples):
                arch = self.draw(net)
                weights = {g: self.weights_of(net.alphas[g], s) for g, s in arch.items()}
                loss = F.cross_entropy(net(x, weights=weights), y, reduction="sum")
                losses.append(loss.to("cpu", torch.float64))  # K scalars: ω in double precision
                drawn.append(arch)
        return drawn, torch.stack(losses)

    # ---- α step ----
    def arch_loss(self, net: nn.Module, loss_fn: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        drawn, losses = self._children(net, x, y)
        omega = importance_weights(losses)
        logps = torch.stack([sum(self.log_prob(net.alphas[g], net.mask(g), net.extras(g), s)
                                 for g, s in arch.items()) for arch in drawn])
        surrogate = -(omega.to(logps.device, logps.dtype) * logps).sum()
        # the value: −log((1/K) Σ_k exp(−ℓ_k)) per example, the IS estimate of −log p(y|X, w, π)/B
        nll = (math.log(self.samples) - torch.logsumexp(-losses, dim=0)) / max(y.numel(), 1)
        return surrogate - surrogate.detach() + nll.to(surrogate.device, surrogate.dtype)

    # ---- weight step ----
    def weight_loss(self, net: nn.Module, x: torch.Tensor,
                    y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.options["weight_estimator"] == "uniform":
            return None  # the loop's one forward: group_weights samples one child
        drawn, losses = self._children(net, x, y)
        omega = importance_weights(losses).tolist()
        best = max(range(len(drawn)), key=lambda k: omega[k])
        order = [k for k in range(len(drawn)) if k != best and omega[k] > 0.0] + [best]
        for k in order:
            weights = {g: self.weights_of(net.alphas[g], s) for g, s in drawn[k].items()}
            logits = net(x, weights=weights)
            loss = omega[k] * F.cross_entropy(logits, y)
            if k != best:
                loss.backward()  # accumulate child by child: one child's activations at a time
        return loss, logits

    # ---- selection ----
    def edge_strengths(self, alpha: torch.Tensor, mask: torch.Tensor, extras: Mapping[str, torch.Tensor],
                       node_of_row: list[int]) -> torch.Tensor | None:
        plan = self._plan(alpha)
        if plan is None or "beta" not in extras:
            return None
        probs = masked_softmax(alpha.detach(), mask)
        allowed = plan.allowed.to(alpha.device)
        best = probs.masked_fill(~allowed, 0.0).amax(-1).clamp_min(1e-30)  # (rows,)
        incl = torch.ones(alpha.shape[0], dtype=alpha.dtype, device=alpha.device)
        incl[plan.off] = 0.0
        beta = extras["beta"].detach()
        for node in plan.nodes:
            incl[node.rows] = inclusion_probabilities(beta[node.rows], node.m)
        return incl / best

    def describe(self) -> str:
        return (f"parsec(samples = {self.samples}, weight_estimator = {self.options['weight_estimator']}, "
                f"topology = {self.topology})")
