"""ProxylessNAS (Cai, Zhu & Han, ICLR 2019): binary gates with path sampling, "two" mode.

Per searchable edge (or chain block) with p = softmax(α):

* weight steps (phase "weights"): one op is sampled from p and only that op
  runs, with weight exactly 1, so the supernet keeps one candidate's
  activations per edge;
* α steps (phase "arch"): two distinct ops are sampled from p (without
  replacement); q = softmax of their two α's; the active op is drawn from q.
  The gates are g = onehot(active) + (q − q.detach()): numerically the one-hot
  binary gate, with ∂g_j/∂α_i = q_j(δ_ij − q_i). The edge returns
  g_a·o_a(x) + g_b·o_b(x).detach() (the inactive op runs without autograd), so
  its value is the active op's output and
  ∂L/∂α_i = Σ_j ∂L/∂g_j · q_j(δ_ij − q_i) over the two sampled ops, with
  ∂L/∂g_j = ⟨∂L/∂out, o_j(x)⟩ — the BinaryConnect-style gradient of the
  official `MixedEdge.set_arch_param_grad` in "two" mode, obtained by autograd;
* after the α step the two involved α's are shifted by
  log(Σ exp α_new / Σ exp α_old), so every unsampled op keeps its probability;
* when the active op is the zero op (`zero`, DARTS `none`), that edge's α gets
  no update this step (the official code drops its gradient);
* evaluation (phase "eval"): the argmax op alone.

Expected-cost regulariser (the paper's additive latency term, with the
compiler's parameter or multiply-add counts standing in for a latency table):
λ · E[cost] / ref, E[cost] = fixed cost + Σ_edges Σ_ops p_op · cost_op, where in
an α step p is the two-path q of the sampled ops (the official
`current_prob_over_ops` in "two" mode) and otherwise softmax(α). For a group
shared by several cells the per-op costs are summed over its cells. ref
defaults to E[cost] at initialisation.

Not reproduced:
* the code's default gradient mode `full_v2` (all candidates recomputed in
  backward) — this is the paper's 2-path mode;
* the code's default `mul#log` loss, α·CE·(log E / log ref)^β: it multiplies the
  cross-entropy, which an additive `regularizer(net)` cannot express
  (`form = "mul_log"` is rejected with an explanation);
* the 40-epoch weight-only warm-up on random paths: set `arch_start` (α ≈ 0
  then, so sampling from softmax(α) is near-uniform, and α does not move),
  though the warm-up's own learning-rate schedule is not reproduced;
  `arch_start` counts the code's α-free first epoch after it too (below): W warm-up
  epochs are `arch_start = W + 1`;
* the label smoothing and the latency lookup tables;
* unsampled ops are held at their pre-step α exactly (the paper's masking);
  the code gets the same only because its Adam has β1 = 0 and no weight decay.
Timing as the code (`nas_manager.py`): the α step follows the weight step, after
every 5th (`(i + 1) % 5 == 0`, the preset's `arch_every = 5`; `arch_after_weights`),
and the first epoch after the warm-up makes none (the preset's `arch_start = 1`).

Binary gates need bi-level, first-order search, and `check_config` refuses
anything else: weight-phase gates carry no gradient (with `levels = 1` α would
never move), and the unrolled step's four forward passes would each sample
other paths than the ones the α step freezes and rescales.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from nasc.errors import BuildError, SearchError
from nasc.runtime.ops import Zero
from nasc.runtime.relaxations.base import RELAXATIONS, GroupWeights, MixedEdge, Relaxation, diverged, masked_softmax


class BinaryGateEdge(MixedEdge):
    """Runs only `active`: the first index with autograd, the others' outputs detached (ProxylessNAS)."""

    def __init__(self, candidates: list[nn.Module], names: list[str]):
        super().__init__(candidates, names)
        self.zero_cols = [i for i, c in enumerate(candidates) if isinstance(c, Zero)]

    def forward(self, x: torch.Tensor, w: torch.Tensor, active: list[int] | None = None) -> torch.Tensor:
        if active is None:  # no sample: the plain DARTS mixture
            return super().forward(x, w)
        out = w[active[0]] * self.candidates[active[0]](x)
        for j in active[1:]:
            with torch.no_grad():  # o_j(x).detach(): its gate still gets ⟨∂L/∂out, o_j(x)⟩
                o = self.candidates[j](x)
            out = out + w[j] * o
        return out


class _Sample:
    """What one group sampled in its last forward pass."""

    __slots__ = ("phase", "involved", "frozen", "prob")

    def __init__(self, phase: str, involved: torch.Tensor, frozen: list[int], prob: torch.Tensor | None):
        self.phase = phase
        self.involved = involved  # (rows, cols) bool, CPU: the (two) ops sampled per row in an α step
        self.frozen = frozen  # rows whose α must not move this step (zero op active, single candidate)
        self.prob = prob  # (rows, cols) probabilities the cost term uses (two-path q), with grad to α


@RELAXATIONS.register("binary-gate")
class BinaryGate(Relaxation):
    """ProxylessNAS binary gates: one sampled path for weights, two sampled paths for α."""

    name = "binary-gate"
    evaluates_one_path = True
    arch_after_weights = True  # the code's gradient_step runs after the weight step of batch i, (i + 1) % 5 == 0
    defaults: dict[str, Any] = {"cost": "madds", "lambda": 0.0, "form": "add", "ref": None}
    presets = {
        "proxylessnas": ({}, {"arch_lr": 1e-3, "arch_betas": (0.0, 0.999), "arch_weight_decay": 0.0,
                              "weight_decay": 4e-5, "nesterov": True, "lr_min": 0.0, "arch_every": 5,
                              "arch_start": 1}),  # the code skips α in its first epoch (`if epoch > 0`)
    }

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        o = self.options
        if o["cost"] not in ("madds", "params"):
            raise BuildError(f"binary-gate option cost must be \"madds\" or \"params\", got {o['cost']!r}")
        if o["form"] == "mul_log":
            raise BuildError("binary-gate form \"mul_log\" (α·CE·(log E/log ref)^β) multiplies the "
                             "cross-entropy, which a relaxation's additive regularizer cannot express",
                             hint="use form = \"add\" (the paper's λ·E[cost]/ref)")
        if o["form"] != "add":
            raise BuildError(f"binary-gate option form must be \"add\", got {o['form']!r}")
        lam = o["lambda"]
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0 <= lam < math.inf:  # NaN too
            raise BuildError(f"binary-gate option lambda must be a number ≥ 0, got {lam!r}")
        ref = o["ref"]
        if ref is not None and (isinstance(ref, bool) or not isinstance(ref, (int, float)) or not 0 < ref < math.inf):
            raise BuildError(f"binary-gate option ref must be a positive number, got {ref!r}")
        unused = [k for k in ("cost", "ref") if o[k] != self.defaults[k]]
        if lam == 0 and unused:  # they shape the expected-cost regulariser alone, which lambda = 0 turns off
            raise BuildError(f"binary-gate option {unused[0]} = {o[unused[0]]!r} has no effect with lambda = 0",
                             hint="set lambda > 0 for the regulariser lambda·E[cost]/ref, or drop "
                                  f"{' and '.join(unused)}")
        self._samples: dict[int, _Sample] = {}  # id(α parameter) -> last sample
        self._snapshot: dict[int, torch.Tensor] = {}
        self._zero_cols: dict[int, list[list[int]]] = {}  # id(α) -> per row, the zero op's columns
        self._costs: dict[str, torch.Tensor] = {}  # group -> (rows, cols) summed over the group's layers
        self._fixed = 0.0
        self.ref: float | None = None

    # ---- construction ----
    def check_config(self, config: Any) -> None:
        if config.levels != 2:
            raise SearchError("binary-gate needs bi-level search (levels = 2): its weight-step gates carry no "
                              "gradient, so α would never move", hint="search bi-level (--opt levels=2)")
        if config.order != 1:
            raise SearchError("binary-gate has no second-order step: each forward pass of the unrolled "
                              "gradient samples other paths than the α step rescales",
                              hint="search first-order (--first-order)")

    def make_edge(self, candidates: list[nn.Module], names: list[str], *, channels: int, stride: int) -> nn.Module:
        return BinaryGateEdge(candidates, names)

    def setup(self, ir: Any, net: nn.Module) -> None:
        """Find the zero ops of every row and read the compiler's per-candidate costs."""
        kind = self.options["cost"]
        layers = ir.meta["costs"]["layers"]
        group_of = {lid: g for g, info in ir.alpha_groups.items() for lid in info["layers"]}
        for lid, _, _, group in net.schedule:
            if group is None or id(net.alphas[group]) in self._zero_cols:
                continue
            module = net.layers[lid]  # one layer of the group is enough: its cells have the same edges
            edges = [module.edge] if hasattr(module, "edge") else [module.edges[k] for k in net.group_rows[group]]
            self._zero_cols[id(net.alphas[group])] = [list(getattr(e, "zero_cols", [])) for e in edges]
        fixed = 0.0
        for g, alpha in net.alphas.items():
            self._costs[g] = torch.zeros(alpha.shape, dtype=torch.float64)
        for layer in ir.layers():
            if layer.kind == "aux":
                continue
            entry = layers[layer.id]
            fixed += entry["fixed"][kind]
            group = group_of.get(layer.id)
            rows = {key: r for r, key in enumerate(net.group_rows.get(group, []))}
            for key, ops in entry.get("edges", {}).items():
                if key in rows:
                    r = rows[key]
                    for i, op in enumerate(net.group_ops[group][r]):
                        self._costs[group][r, i] += ops[op][kind]
                else:  # a fixed edge or block
                    fixed += sum(c[kind] for c in ops.values())
        self._fixed = fixed
        with torch.no_grad():
            at_init = float(self.expected_cost(net, current=False))
        given = self.options["ref"]
        self.ref = float(given) if given is not None else (at_init if at_init > 0 else 1.0)

    # ---- every forward pass ----
    def group_weights(self, alpha: torch.Tensor, mask: torch.Tensor, extras: Mapping[str, torch.Tensor],
                      node_of_row: list[int]) -> GroupWeights:
        rows, cols = alpha.shape
        probs = masked_softmax(alpha.detach(), mask).cpu()  # sampled on the CPU RNG: same on every device
        if not bool(torch.isfinite(probs).all()):  # torch.multinomial would fail with an internal error
            raise diverged("binary-gate")
        if self.phase == "eval":
            best = probs.argmax(1).tolist()
            return GroupWeights(self._onehot(best, alpha), active=[[i] for i in best])
        if self.phase != "arch":
            picked = torch.multinomial(probs, 1).squeeze(1).tolist()
            self._samples[id(alpha)] = _Sample(self.phase, torch.zeros(rows, cols, dtype=torch.bool), [], None)
            return GroupWeights(self._onehot(picked, alpha), active=[[i] for i in picked])
        return self._two_path(alpha, probs)

    def _two_path(self, alpha: torch.Tensor, probs: torch.Tensor) -> GroupWeights:
        rows, cols = alpha.shape
        zero_cols = self._zero_cols.get(id(alpha)) or [[] for _ in range(rows)]
        choices = (probs > 0).sum(1).tolist()  # ops that can be sampled per row
        pairs = torch.zeros(rows, 2, dtype=torch.long)
        for r in range(rows):
            if choices[r] >= 2:
                pairs[r] = torch.multinomial(probs[r], 2, replacement=False)  # two distinct ops ~ p
            else:
                pairs[r] = int(probs[r].argmax())
        idx = pairs.to(alpha.device)
        q_pair = torch.softmax(alpha.gather(1, idx), dim=1)  # (rows, 2): q over the sampled pair, with grad
        q_cpu = q_pair.detach().cpu()
        involved = torch.zeros(rows, cols, dtype=torch.bool)
        active: list[list[int]] = []
        frozen: list[int] = []
        for r in range(rows):
            if choices[r] < 2:  # one candidate: it runs alone, nothing to learn
                active.append([int(pairs[r, 0])])
                frozen.append(r)
                continue
            c = int(torch.multinomial(q_cpu[r], 1))  # the active op ~ q
            a, b = int(pairs[r, c]), int(pairs[r, 1 - c])
            active.append([a, b])
            involved[r, a] = involved[r, b] = True
            if a in zero_cols[r]:
                frozen.append(r)  # the zero op is active: no α update on this edge (official code)
        single = torch.tensor([n < 2 for n in choices], device=alpha.device).unsqueeze(1)  # (rows, 1)
        q = torch.zeros_like(alpha).scatter(1, idx, q_pair)  # (rows, cols), zeros off the pair
        q = torch.where(single, torch.zeros_like(q), q)
        gates = self._onehot([row[0] for row in active], alpha) + (q - q.detach())  # value: exactly one-hot
        self._samples[id(alpha)] = _Sample("arch", involved, frozen, q)
        return GroupWeights(gates, active=active)

    @staticmethod
    def _onehot(index: list[int], alpha: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(alpha.shape, dtype=alpha.dtype)
        out[torch.arange(len(index)), torch.tensor(index, dtype=torch.long)] = 1.0
        return out.to(alpha.device)

    # ---- cost term ----
    def expected_cost(self, net: nn.Module, *, current: bool = True) -> torch.Tensor:
        """fixed + Σ p·cost; p is the last α step's two-path q when `current` and in phase "arch"."""
        total = None
        for g, alpha in net.alphas.items():
            cost = self._costs.get(g)
            if cost is None:
                continue
            sample = self._samples.get(id(alpha))
            if current and self.phase == "arch" and sample is not None and sample.prob is not None:
                p = sample.prob
            else:
                p = masked_softmax(alpha, net.mask(g))
            term = (p * cost.to(device=alpha.device, dtype=alpha.dtype)).sum()
            total = term if total is None else total + term
        fixed = torch.tensor(self._fixed, dtype=torch.float32)
        if total is None:
            return fixed
        return total + fixed.to(total.device, total.dtype)

    def regularizer(self, net: nn.Module) -> torch.Tensor | None:
        lam = float(self.options["lambda"])
        if lam == 0.0 or not self._costs:
            return None
        return lam * self.expected_cost(net) / self.ref

    # ---- α step ----
    def before_arch_step(self, net: nn.Module) -> None:
        self._snapshot = {id(a): a.detach().clone() for a in net.alphas.values()}
        for alpha in net.alphas.values():
            sample = self._samples.get(id(alpha))
            if sample is not None and sample.phase == "arch" and sample.frozen and alpha.grad is not None:
                if len(sample.frozen) == alpha.shape[0]:
                    # every row frozen (a chain block's one row): no gradient at all, as the code's
                    # `AP_path_alpha.grad = None`, so the optimiser skips it and its Adam state (step count,
                    # second moment) does not advance; a zero gradient moved the bias correction and decayed v
                    alpha.grad = None
                else:
                    alpha.grad[sample.frozen] = 0.0

    @torch.no_grad()
    def after_arch_step(self, net: nn.Module) -> None:
        for alpha in net.alphas.values():
            sample = self._samples.get(id(alpha))
            old = self._snapshot.get(id(alpha))
            if sample is None or old is None or sample.phase != "arch":
                continue
            involved = sample.involved.clone()
            involved[sample.frozen] = False
            involved = involved.to(alpha.device)
            neg = float("-inf")
            lse_new = torch.logsumexp(alpha.masked_fill(~involved, neg), dim=1)  # (rows,)
            lse_old = torch.logsumexp(old.masked_fill(~involved, neg), dim=1)
            offset = torch.where(involved.any(1), lse_new - lse_old, torch.zeros_like(lse_new))
            alpha.copy_(torch.where(involved, alpha - offset.unsqueeze(1), old))
        self._snapshot = {}

    # ---- checkpoints ----
    def state_dict(self) -> dict[str, Any]:
        return {"ref": self.ref}  # samples live for one step only; ref is fixed at setup

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("ref") is not None:
            self.ref = float(state["ref"])
