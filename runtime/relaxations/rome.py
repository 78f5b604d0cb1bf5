"""ROME: topology disentangled from operations, Gumbel-Top2 edges, gradient accumulation.

Wang et al., "ROME: Robustifying Memory-Efficient NAS via Topology
Disentanglement and Gradient Accumulation", ICCV 2023 (arXiv 2011.11233, v2 of
the method). No official code exists (none is linked from the paper, CVF or
arXiv pages); this follows the paper's §3–4 text.

Architecture parameters per α group: α (rows × ops) as in GDAS, and β (one per
searchable edge, `extra_parameters`), whose softmax is taken over the incoming
edges of each destination node (`node_of_row`). Per forward pass and group
(once for all cells of a type, as nasc's GDAS does):

* **Topology (Gumbel-Top-k, k = `top`, 2 in the paper).** `top = "auto"` (the
  default) takes k from the space's selection rule, so that the search samples
  as many inputs per node as the genotype keeps (ROME's point, §3.2–3.3):
  `select top k per node` gives k; a space that selects per edge or per layer
  (NAS-Bench-201 keeps every edge) samples no topology, every edge runs
  (before `setup`, auto is the paper's 2). Per node j with
  incoming edges E_j: p̃ = softmax(β_{E_j}), g ~ Gumbel(0, 1) per edge,
  B̃ = softmax((log p̃ + g)/τ) over E_j. The `top` edges with the largest B̃
  get B = 1, the others B = 0, straight-through: B = hard − B̃.detach() + B̃
  (`GroupWeights.edges`). Taking the top k of log p̃ + g samples k distinct
  edges without replacement from p̃ (the paper's theorem; tested). A node with
  at most `top` searchable inputs keeps all of them (the same formula: B = 1
  forward, B̃'s gradient backward). Unselected edges are left out of
  `GroupWeights.active` (an empty list), so none of their ops run.
* **Operations (GDAS).** Per edge: h = softmax((log softmax(α) + g)/τ),
  idx = argmax h, weights one_hot(idx) − h.detach() + h; only op idx runs.
  α and β start at 1e-3·N(0, 1) (the DARTS/GDAS code's α init; the paper
  states none).
* **Gradient accumulation (K = `samples`, 7 in the paper).** `arch_loss`
  returns a loss whose value is the mean of K sampled sub-architectures'
  losses on the α batch and whose gradient is the mean of their K gradients;
  `weight_loss` returns (a loss whose value and gradient are the sum over K
  sampled sub-networks on the weight batch, the logits of the first). With
  `accumulate = true` (default) each sample is differentiated on its own and a
  linear surrogate Σ_p ⟨p, ḡ_p⟩ carries the accumulated gradient, so memory is
  one path's, as the paper's GA intends; `accumulate = false` keeps the K
  graphs and differentiates their mean/sum (same gradient, K× memory). The
  surrogate is linear in the parameters. The search is first-order: each forward
  pass of an unrolled step would draw its own edges and ops.
  Algorithm 1 steps α/β first, then w, as nasc's loop does.

Temperature: `tau` is a number or a ramp, annealed linearly per epoch like
AutoDL's GDAS, default 10 → 0.1. **UNVERIFIED**: the paper only says τ
"gradually decreases in search"; the range and schedule are not given, so the
GDAS code's are assumed (the GDAS paper says 10 → 1).

Evaluation (phase "eval") is deterministic: per node the `top` edges with the
largest β, argmax α on each; nothing else runs.

Selection (z* = argmax p(z; α, β): per node the top-2 edges by β, argmax α on
each): `edge_strengths` is softmax(β) per node and `probabilities` is
softmax(α) divided by its row maximum, so the strongest op of every edge
scores exactly p̃(e) and the magnitude rule's "top k per node by
strength × op prob" ranks edges by β alone. Exception: when an edge's argmax
op is excluded by the selector (`none` in a space that has it; ROME's S0 has
no `none`), its best allowed op scores below 1 and α enters the ranking.

Preset `rome`: these defaults and the paper's search settings: 50 epochs,
weights SGD momentum 0.9 lr 0.05, α/β Adam lr 3e-4. Batch, weight decays and
the lr schedule are not stated (UNVERIFIED) and stay the space's (DARTS').
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasc.compiler.expr import Ramp
from nasc.errors import BuildError, SearchError
from nasc.runtime.relaxations.base import (RELAXATIONS, GroupWeights, MixedEdge, Relaxation, first_order_only,
                                          masked_softmax)
from nasc.runtime.relaxations.gumbel import AnnealedTemperature, check_redraw, flag, gumbel_noise


def node_members(node_of_row: list[int], device: torch.device | None = None) -> torch.Tensor:
    """(nodes, rows) boolean: [m, r] is True when row r ends at the m-th node (sorted)."""
    nodes = sorted(set(node_of_row))
    return torch.tensor([[n == m for n in node_of_row] for m in nodes], dtype=torch.bool, device=device)


def node_log_softmax(beta: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """log softmax(β) over each node's rows: (nodes, rows), −inf off the node."""
    return torch.log_softmax(beta.unsqueeze(0).masked_fill(~member, float("-inf")), dim=1)


def top_per_node(scores: torch.Tensor, member: torch.Tensor, k: int) -> torch.Tensor:
    """(nodes, rows) 0/1: the k largest finite scores of each node (all of its rows when it has ≤ k)."""
    scores = scores.masked_fill(~member, float("-inf"))
    k = min(k, scores.shape[1])
    index = scores.topk(k, dim=1).indices  # (nodes, k)
    hard = torch.zeros_like(scores).scatter_(1, index, 1.0)
    return hard * member  # a node with < k rows picked some −inf entries: drop them


class RomeEdge(MixedEdge):
    """A mixed edge that computes nothing when no candidate is active (an edge Gumbel-Top-k left out).

    It returns a 0-dim zero, which the cell scales by the edge weight B (0) and
    broadcasts into the node's sum; B's gradient from such an edge is 0, as
    nothing of it was computed.
    """

    def forward(self, x: torch.Tensor, w: torch.Tensor, active: list[int] | None = None) -> torch.Tensor:
        if active is not None and len(active) == 0:
            return x.new_zeros(())
        return super().forward(x, w, active)


@RELAXATIONS.register("rome")
class Rome(AnnealedTemperature, Relaxation):
    """ROME: Gumbel-Top-k edges per node by β, one GDAS-sampled op per edge, K-sample gradient accumulation."""

    name = "rome"
    evaluates_one_path = True
    defaults: dict[str, Any] = {"tau": {"from": 10.0, "to": 0.1}, "top": "auto", "samples": 7, "accumulate": True}
    presets = {
        "rome": ({"tau": Ramp(10.0, 0.1), "samples": 7},
                 {"epochs": 50, "lr": 0.05, "arch_lr": 3e-4}),
    }

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        self._init_temperature("rome")
        self._auto_top = self.options["top"] == "auto"
        for key in ("samples",) if self._auto_top else ("top", "samples"):
            value = self.options[key]
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BuildError(f"rome option {key} must be a positive integer"
                                 f"{' or auto' if key == 'top' else ''}, got {self.options[key]!r}")
            self.options[key] = value
        # auto: the paper's in-degree until `setup` reads the space's selection rule
        self.top = 2 if self._auto_top else self.options["top"]
        self.samples = self.options["samples"]
        self.accumulate = flag(self.options["accumulate"], "rome option accumulate")
        self.options["accumulate"] = self.accumulate
        self._generator: torch.Generator | None = None
        self._members: dict[tuple[tuple[int, ...], str], torch.Tensor] = {}

    # ---- construction ----
    def check_config(self, config: Any) -> None:
        first_order_only("rome", config, "sample of edges and ops")
        if config.levels != 2 and self.samples > 1:  # arch_loss and weight_loss run in bi-level steps only
            raise SearchError(f"rome option samples = {self.samples} needs bi-level search (levels = 2): a "
                              "single-level step differentiates one sampled sub-network, so the K-sample gradient "
                              "accumulation would be silently skipped",
                              hint="search bi-level (--opt levels=2), or set --relax-opt samples=1")

    def make_edge(self, candidates: list[nn.Module], names: list[str], *, channels: int, stride: int) -> nn.Module:
        return RomeEdge(candidates, names)

    def setup(self, ir: Any, net: nn.Module) -> None:
        """`top = auto`: sample as many inputs per node as the space's selector keeps (all, selecting per edge)."""
        if not self._auto_top:
            return
        from nasc.compiler.count import selection_rule  # local: the compiler is not needed to define relaxations

        per, k, _ = selection_rule(ir)
        self.top = k if per == "node" else None  # None: every input of every node

    def init_alpha(self, rows: int, cols: int, generator: torch.Generator | None = None) -> torch.Tensor:
        self._generator = generator  # β of the same group is drawn from the same stream, right after α
        return 1e-3 * torch.randn(rows, cols, generator=generator)

    def extra_parameters(self, group: str, rows: int, node_of_row: list[int]) -> dict[str, torch.Tensor]:
        return {"beta": 1e-3 * torch.randn(rows, generator=self._generator)}

    # ---- sampling ----
    def members(self, node_of_row: list[int], device: torch.device) -> torch.Tensor:
        key = (tuple(node_of_row), str(device))
        if key not in self._members:
            self._members[key] = node_members(node_of_row, device)
        return self._members[key]

    def sample_edges(self, beta: torch.Tensor, node_of_row: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, selected): Gumbel-Top-k per node, B straight-through (rows,), selected 0/1 (rows,)."""
        member = self.members(node_of_row, beta.device)
        logp = node_log_softmax(beta, member)  # (nodes, rows)
        draws = 0
        while True:
            g = gumbel_noise(beta)  # (rows,): one draw per edge
            scores = (logp + g.unsqueeze(0)) / self.tau
            soft = torch.softmax(scores, dim=1)  # B̃ per node; exactly 0 off the node
            if bool(torch.isfinite(g).all()) and bool(torch.isfinite(soft).all()):
                break
            draws += 1
            check_redraw(beta, draws, self.tau, "rome")
        hard = top_per_node(scores.detach(), member, self.top or member.shape[1])
        b = (hard - soft.detach() + soft).sum(0)  # each row sits in exactly one node
        return b, hard.sum(0)

    def sample_ops(self, alpha: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """GDAS: (one-hot weights with softmax backward, sampled index per row)."""
        logp = torch.log_softmax(alpha.masked_fill(~mask, float("-inf")), dim=-1)
        draws = 0
        while True:
            g = gumbel_noise(alpha)
            h = torch.softmax((logp + g) / self.tau, dim=-1)
            if bool(torch.isfinite(g[mask]).all()) and bool(torch.isfinite(h).all()):
                break
            draws += 1
            check_redraw(alpha, draws, self.tau, "rome")
        index = h.detach().argmax(-1, keepdim=True)
        one_hot = torch.zeros_like(h).scatter_(-1, index, 1.0)
        return one_hot - h.detach() + h, index.squeeze(-1).tolist()

    def group_weights(self, alpha: torch.Tensor, mask: torch.Tensor, extras: Mapping[str, torch.Tensor],
                      node_of_row: list[int]) -> GroupWeights:
        beta = extras["beta"]
        if self.phase == "eval":
            member = self.members(node_of_row, beta.device)
            picked = top_per_node(beta.detach().unsqueeze(0).expand(member.shape), member,
                                  self.top or member.shape[1]).sum(0)
            index = alpha.detach().masked_fill(~mask, float("-inf")).argmax(-1, keepdim=True)
            ops = torch.zeros_like(alpha).scatter_(-1, index, 1.0)
            chosen = index.squeeze(-1).tolist()
            keep = picked.bool().tolist()
            return GroupWeights(ops, picked.to(alpha.dtype),
                                active=[[i] if k else [] for i, k in zip(chosen, keep)])
        edges, picked = self.sample_edges(beta, node_of_row)
        ops, chosen = self.sample_ops(alpha, mask)
        keep = picked.bool().tolist()
        return GroupWeights(ops, edges, active=[[i] if k else [] for i, k in zip(chosen, keep)])

    # ---- losses: K-sample gradient accumulation ----
    def _accumulated(self, params: list[nn.Parameter], losses_of,
                     reduce: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Run K samples one at a time; a surrogate with value reduce·Σ L_k and gradient reduce·Σ ∇L_k in
        `params` only: the α/β step differentiates α and β, the weight step the weights (each step discards
        the other's gradient, so computing it too only cost backward time)."""
        params = [p for p in params if p.requires_grad]
        total: list[torch.Tensor | None] = [None] * len(params)
        value = 0.0
        first_logits = None
        for _ in range(self.samples):
            loss, logits = losses_of()
            if first_logits is None and logits is not None:
                first_logits = logits.detach()  # keep no graph: memory stays one path's
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            for i, g in enumerate(grads):
                if g is not None:
                    total[i] = g if total[i] is None else total[i] + g
            value = value + loss.detach()
        surrogate = sum((p * (g * reduce)).sum() for p, g in zip(params, total) if g is not None)
        if not isinstance(surrogate, torch.Tensor):  # nothing reached a parameter
            surrogate = value.new_zeros((), requires_grad=True)
        return value * reduce + (surrogate - surrogate.detach()), first_logits

    def arch_loss(self, net: nn.Module, loss_fn: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """Mean over K independently sampled sub-architectures (value and gradient)."""
        if self.samples == 1:
            return loss_fn(x, y)
        if not self.accumulate:
            return sum(loss_fn(x, y) for _ in range(self.samples)) / self.samples
        loss, _ = self._accumulated(net.arch_parameters(), lambda: (loss_fn(x, y), None), 1.0 / self.samples)
        return loss

    def weight_loss(self, net: nn.Module, x: torch.Tensor,
                    y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(Σ over K sampled sub-networks' cross-entropies, logits of the first sample)."""
        if self.samples == 1:
            return None  # one pass and its cross-entropy: the loop's default

        def one() -> tuple[torch.Tensor, torch.Tensor]:
            logits = net(x)
            return F.cross_entropy(logits, y), logits

        if not self.accumulate:
            losses, first = [], None
            for _ in range(self.samples):
                loss, logits = one()
                first = logits if first is None else first
                losses.append(loss)
            return sum(losses), first
        loss, logits = self._accumulated(net.weight_parameters(), one, 1.0)
        return loss, logits

    # ---- selection ----
    def probabilities(self, alpha: torch.Tensor, mask: torch.Tensor, extras: Mapping[str, torch.Tensor],
                      node_of_row: list[int]) -> torch.Tensor:
        """softmax(α) / its row maximum: the argmax op of every edge scores exactly 1."""
        p = masked_softmax(alpha.detach(), mask)
        return p / p.max(dim=-1, keepdim=True).values

    def edge_strengths(self, alpha: torch.Tensor, mask: torch.Tensor, extras: Mapping[str, torch.Tensor],
                       node_of_row: list[int]) -> torch.Tensor | None:
        """softmax(β) over each node's incoming edges, per row."""
        beta = extras["beta"].detach()
        member = self.members(node_of_row, beta.device)
        return node_log_softmax(beta, member).exp().sum(0)

    def describe(self) -> str:
        return f"rome(top = {self.top or 'all'}, samples = {self.samples}, tau = {self._tau_text()})"
