"""DropNAS (Hong et al., IJCAI 2020): grouped operation dropout on a one-level DARTS search.

The candidates of every edge are split into two groups, parameterised and
parameter-free. A candidate is parameter-free when the compiler's cost model
gives it 0 parameters on that edge in every layer of its α group
(`ir.meta["costs"]`; affine-free BN after a pool counts as free), or, with
`free_ops`, when its name is listed (DropNAS groups by name: on the DARTS
space `--relax-opt free_ops=[none, max_pool_3x3, avg_pool_3x3, skip_connect]`,
in a `.nas` file `free_ops = ["none", "max_pool_3x3", ...]`, also puts the stride-2 skip, a parameterised factorized reduce, in the free
group, as the DropNAS code does).

In the training phases ("arch", "weights"), once per forward pass and α group
(shared by all cells of a type), every candidate of every edge is kept
independently with probability 1 − p_d, p_d = r^(1/|group|), so a whole group
is dropped with probability r; a group left empty on an edge is drawn again,
so each edge keeps ≥ 1 op of each of its groups (after 64 tries, as with r near 1,
it is drawn from that same conditional law directly instead of again). The masks come from the
global torch RNG (CPU), so a seeded run replays exactly. The edge weights are
the softmax restricted to the kept ops, exp(α_o)/Σ_kept exp(α); dropped ops
are not computed (`GroupWeights.active`), so their weights and their α get no
gradient. Options: `r` (default 3e-5, the paper's and code's value for both
groups, p_d ≈ 0.074 with 4 ops), `r_param`, `r_free` (per-group rates; the
paper's ablation grid), `free_ops`.

α-adjust (paper eqs. 2–3, code `adjust_alphas`): `before_arch_step` snapshots
α; `after_arch_step` puts the dropped α back to their snapshot and shifts the
kept α of each edge with a dropped op by ln(Σ_kept exp α_old / Σ_kept exp α_new),
so the kept/dropped probability mass of the edge is what it was before the step.

Partial weight decay (decay only the w and α of kept ops):
* α: restoring the dropped α after the step undoes the decay (and any Adam
  momentum) the optimiser applied to them; the kept α get the optimiser's
  usual coupled L2 decay (`arch_weight_decay`).
* w: the loop clears gradients with `set_to_none`, and the parameters of a
  dropped op take no part in the forward pass, so their `.grad` stays None
  and torch's SGD skips them entirely: no decay, no momentum step.
Deviations from the DropNAS code: it applies the decay as a separate loss and
a second optimiser step per iteration (so SGD momentum and Adam moments are
stepped twice, and the loss wd·‖w‖² has gradient 2·wd·w, twice this decay),
and lets Adam's momentum still move dropped α slightly; here one step decays
only kept ops and dropped α do not move at all (the paper's "receive no
gradient"). The search is first-order: each forward pass of an unrolled step
would drop its own groups.

Warm-up: the epochs before `arch_start` drop nothing (plain softmax over every op, all computed), as
DropNAS' `warmup_epochs` sets the drop rate to 0 while α is not trained.

Evaluation (phase "eval"): plain softmax over all ops, every op computed.
Selection is the space's selector on softmax(α) (the paper's rule; the
DropNAS code ranks edges by raw α).

Preset `dropnas`: one level on the whole training set, 76 epochs, batch 96,
SGD lr 0.0375 cosine to 0.0015, grad clip 3 (wd 3e-4, α Adam 3e-4
(0.5, 0.999) wd 1e-3 are the DARTS defaults the space sets). The paper
searches 14 cells: `--set layers=14` on the DARTS space.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from nasc.errors import BuildError, did_you_mean
from nasc.runtime.relaxations.base import RELAXATIONS, GroupWeights, Relaxation, first_order_only, masked_softmax

PARAM, FREE, PAD = 0, 1, -1
REDRAWS = 64  # rejection rounds before an empty group is drawn from its conditional law (r = 3e-5: never reached)


class _Plan:
    """Per α group: which group each candidate is in, and its drop probability."""

    __slots__ = ("kind", "p_drop")

    def __init__(self, kind: torch.Tensor, p_drop: torch.Tensor):
        self.kind = kind  # (rows, cols) int8: PARAM, FREE or PAD
        self.p_drop = p_drop  # (rows, cols) float64, 0 on padding


def _rate(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise BuildError(f"dropout-group option {what} must be a number, got {value!r}") from None
    if not 0.0 <= v < 1.0:
        raise BuildError(f"dropout-group option {what} must lie in [0, 1), got {v}",
                         hint="the probability that a whole group of ops is dropped (DropNAS: 3e-5)")
    return v


@RELAXATIONS.register("dropout-group")
class DropoutGroup(Relaxation):
    """DropNAS: per-edge grouped op dropout (parameterised / parameter-free), softmax over the kept ops."""

    name = "dropout-group"
    defaults: dict[str, Any] = {"r": 3e-5, "r_param": None, "r_free": None, "free_ops": None}
    presets = {"dropnas": ({}, {"levels": 1, "epochs": 76, "batch": 96, "lr": 0.0375, "lr_min": 0.0015,
                                "clip": 3.0})}

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        self.r = _rate(self.options["r"], "r")
        self.r_param = self.r if self.options["r_param"] is None else _rate(self.options["r_param"], "r_param")
        self.r_free = self.r if self.options["r_free"] is None else _rate(self.options["r_free"], "r_free")
        free = self.options["free_ops"]
        if isinstance(free, str):
            free = [s.strip() for s in free.split(",") if s.strip()]
        self.free_ops = None if free is None else frozenset(free)
        if self.free_ops is not None:
            self.options["free_ops"] = sorted(self.free_ops)
        self._plans: dict[str, _Plan] = {}
        self._group_of: dict[int, str] = {}  # id(α parameter) -> group name
        self._kept: dict[str, torch.Tensor] = {}  # the last training mask per group (bool, on α's device)
        self._before: dict[str, torch.Tensor] = {}  # α snapshot taken in before_arch_step
        self.warmup = 0  # epochs before arch_start: nothing is dropped (DropNAS' warmup_epochs)

    # ---- construction ----
    def check_config(self, config: Any) -> None:
        first_order_only("dropout-group", config, "dropout mask")
        self.warmup = int(config.arch_start)

    def setup(self, ir: Any, net: nn.Module) -> None:
        if self.free_ops is not None:  # a misspelt name would silently leave its op in the parameterised group
            known = {op for ops in net.group_ops.values() for row in ops for op in row}
            unknown = sorted(self.free_ops - known)
            if unknown:
                raise BuildError(f"dropout-group option free_ops names {unknown[0]!r}, which is no candidate of "
                                 f"space {getattr(ir, 'name', '?')!r}",
                                 hint=did_you_mean(unknown[0], known) or f"candidates: {', '.join(sorted(known))}")
        costs = (getattr(ir, "meta", None) or {}).get("costs", {}).get("layers", {})
        for g, alpha in net.alphas.items():
            layers = ir.alpha_groups[g]["layers"]
            kinds = []
            for r, (edge, ops) in enumerate(zip(net.group_rows[g], net.group_ops[g])):
                kinds.append([self._kind(costs, net, layers, edge, op, i) for i, op in enumerate(ops)])
            self.set_groups(g, alpha, kinds)

    def _kind(self, costs: Mapping, net: nn.Module, layers: list[str], edge: str, op: str, index: int) -> int:
        if self.free_ops is not None:
            return FREE if op in self.free_ops else PARAM
        params = 0
        for lid in layers:
            try:
                params += int(costs[lid]["edges"][edge][op]["params"])
            except (KeyError, TypeError):  # no cost entry: count the built candidate's parameters
                params += _module_params(net, lid, edge, index)
        return FREE if params == 0 else PARAM

    def set_groups(self, group: str, alpha: torch.Tensor, kinds: list[list[int]]) -> None:
        """Declare the op groups of α group `group` (one list per row: PARAM or FREE per candidate)."""
        rows, cols = alpha.shape
        kind = torch.full((rows, cols), PAD, dtype=torch.int8)
        p = torch.zeros(rows, cols, dtype=torch.float64)
        for r, row in enumerate(kinds):
            for gid, rate in ((PARAM, self.r_param), (FREE, self.r_free)):
                members = [i for i, k in enumerate(row) if k == gid]
                for i in members:
                    kind[r, i] = gid
                    p[r, i] = rate ** (1.0 / len(members))
        self._plans[group] = _Plan(kind, p)
        self._group_of[id(alpha)] = group

    def _plan(self, alpha: torch.Tensor, mask: torch.Tensor) -> tuple[str, _Plan]:
        group = self._group_of.get(id(alpha))
        if group is not None and self._plans[group].kind.shape == alpha.shape:
            return group, self._plans[group]
        # not set up (a hand-built network): one group per row holding every candidate
        group = f"#{id(alpha)}"
        counts = mask.sum(-1, keepdim=True).clamp(min=1).double().cpu()
        p = torch.where(mask.cpu(), torch.tensor(self.r, dtype=torch.float64) ** (1.0 / counts), 0.0)
        kind = torch.where(mask.cpu(), PARAM, PAD).to(torch.int8)
        self._plans[group] = plan = _Plan(kind, p)
        self._group_of[id(alpha)] = group
        return group, plan

    # ---- every forward pass ----
    def sample_mask(self, plan: _Plan) -> torch.Tensor:
        """A keep mask (CPU bool, rows × cols): each op kept w.p. 1 − p_d, empty groups drawn again.

        The official rejection sampling, for at most REDRAWS rounds: a group drops whole with probability r,
        so r near 1 (0.999999) needs ~1/(1 − r) rounds per forward pass, a hang. A group still empty after
        them is drawn from the law rejection converges to (`_nonempty`), so the distribution is the same
        for every r, and the random stream (hence a seeded run) the same while no group needs it."""
        valid = plan.kind != PAD
        keep = (torch.rand(plan.p_drop.shape, dtype=torch.float64) >= plan.p_drop) & valid
        for gid in (PARAM, FREE):
            member = plan.kind == gid
            present = member.any(-1)
            for _ in range(REDRAWS):
                empty = present & ~(keep & member).any(-1)  # rows whose group gid lost every op
                if not bool(empty.any()):
                    break
                redo = member & empty.unsqueeze(-1)
                fresh = torch.rand(plan.p_drop.shape, dtype=torch.float64) >= plan.p_drop
                keep = torch.where(redo, fresh, keep)
            else:
                for row in (present & ~(keep & member).any(-1)).nonzero().flatten().tolist():
                    cols = member[row].nonzero().flatten()
                    keep[row, cols] = _nonempty(plan.p_drop[row, cols])
        return keep

    def group_weights(self, alpha: torch.Tensor, mask: torch.Tensor, extras: Mapping[str, torch.Tensor],
                      node_of_row: list[int]) -> GroupWeights:
        if self.phase == "eval" or self.epoch < self.warmup:  # warm-up: DropNAS' drop rate is 0 there
            return GroupWeights(masked_softmax(alpha, mask))
        group, plan = self._plan(alpha, mask)
        keep_cpu = self.sample_mask(plan)
        keep = keep_cpu.to(alpha.device) & mask
        self._kept[group] = keep
        active = [[i for i, k in enumerate(row) if k] for row in keep_cpu.tolist()]
        return GroupWeights(masked_softmax(alpha, keep), active=active)

    # ---- α step hooks ----
    def before_arch_step(self, net: nn.Module) -> None:
        self._before = {}
        for alpha in net.alphas.values():
            group = self._group_of.get(id(alpha))
            if group is not None and group in self._kept:
                self._before[group] = alpha.detach().clone()

    @torch.no_grad()
    def after_arch_step(self, net: nn.Module) -> None:
        for g, alpha in net.alphas.items():
            group = self._group_of.get(id(alpha))
            if group is None or group not in self._before:
                continue
            self.adjust(alpha, self._before[group], self._kept[group], net.mask(g).to(alpha.device))
        self._before = {}

    @staticmethod
    @torch.no_grad()
    def adjust(alpha: torch.Tensor, before: torch.Tensor, keep: torch.Tensor, mask: torch.Tensor) -> None:
        """In place: dropped α back to `before`; kept α shifted so each edge's kept/dropped mass is unchanged."""
        dropped = mask & ~keep
        alpha.copy_(torch.where(dropped, before, alpha))
        rows = dropped.any(-1)
        if not bool(rows.any()):
            return
        ninf = float("-inf")
        old = torch.logsumexp(before.masked_fill(~keep, ninf), dim=-1)
        new = torch.logsumexp(alpha.masked_fill(~keep, ninf), dim=-1)
        shift = torch.where(rows, old - new, torch.zeros_like(old))
        alpha.add_(torch.where(keep, shift.unsqueeze(-1), torch.zeros_like(alpha)))

    def describe(self) -> str:
        rates = (f"r = {self.r:g}" if self.r_param == self.r_free == self.r
                 else f"r_param = {self.r_param:g}, r_free = {self.r_free:g}")
        free = f", free_ops = [{', '.join(sorted(self.free_ops))}]" if self.free_ops is not None else ""
        return f"dropout-group({rates}{free})"


def _nonempty(p_drop: torch.Tensor) -> torch.Tensor:
    """Independent keeps (op i w.p. 1 − p_i) conditioned on keeping at least one, drawn exactly, without
    rejection: op i is kept w.p. (1 − p_i) / (1 − Π_{k≥i} p_k) while none before it is, the rest freely."""
    u = torch.rand(p_drop.shape, dtype=torch.float64)
    log_p = p_drop.log()
    keep = torch.zeros(p_drop.shape, dtype=torch.bool)
    for i in range(len(p_drop)):
        if bool(keep[:i].any()):
            keep[i] = bool(u[i] >= p_drop[i])
            continue
        rest = -torch.expm1(log_p[i:].sum())  # P(some op from i on is kept)
        # p_d rounded to 1: the limit of equal rates, the first kept op uniform among those left
        chance = -torch.expm1(log_p[i]) / rest if rest > 0 else torch.tensor(1.0 / (len(p_drop) - i))
        keep[i] = bool(u[i] < chance)
    return keep


def _module_params(net: nn.Module, layer: str, edge: str, index: int) -> int:
    module = net.layers[layer]
    mixed = module.edges[edge] if hasattr(module, "edges") else module.edge
    return sum(p.numel() for p in mixed.candidates[index].parameters())
