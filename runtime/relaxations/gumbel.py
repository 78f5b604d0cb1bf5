"""Gumbel-softmax relaxations: GDAS (hard, one sampled op per edge) and SNAS (soft, every op).

Per forward pass and α group (so once for all cells of a type, as AutoDL's
GDAS and SNAS' `nsample 1` do), Gumbel noise g = −log E, E ~ Exp(1), is
drawn from the global torch RNG (a seeded run replays exactly), and

* `hard = true` (GDAS, Dong & Yang, CVPR 2019; AutoDL-Projects
  `search_model_gdas*.py`): h = softmax((log_softmax(α) + g)/τ), idx = argmax h,
  hardwts = one_hot(idx) − h.detach() + h. The forward value is one-hot, the
  backward pass is the softmax's (straight-through). Only the sampled op of an
  edge is computed (`GroupWeights.active`), out = op_idx(x)·hardwts[idx], so
  memory is one path per edge. A draw whose noise or h holds inf/NaN is drawn
  again, as AutoDL does. α is initialised 1e-3·N(0, 1), as AutoDL.
  `scalar_others = true` adds Σ_{o≠idx} hardwts[o] (exactly 0 forward) to each
  edge's output, AutoDL's NAS-Bench-201 `forward_gdas`, which hands every α
  entry a direct gradient; the default is the NASNet-space `MixedOp.forward_gdas`.
* `hard = false` (SNAS, Xie et al., ICLR 2019; SNAS-Series `SNAS/model_search.py`):
  Z = softmax((α + g)/τ) weights every candidate (memory like DARTS); α is
  SNAS' `log_alpha`, used directly as logits and initialised N(1, 0.01).

`tau` is a number or a ramp `start -> end` (`nasc.compiler.expr.Ramp`, or
{"from": start, "to": end}), annealed linearly per epoch as AutoDL's GDAS:
τ = start − (start − end)·epoch/(epochs − 1) (τ = start when epochs = 1).
`init` ("darts" or "snas") overrides the α initialisation.

Evaluation (phase "eval") draws no noise: `hard` uses the deterministic
argmax of α (one-hot, only that op runs); soft uses plain softmax(α) over all
ops. (AutoDL and SNAS keep sampling while validating; a deterministic
evaluation makes the per-epoch validation numbers comparable across seeds.)

Presets:

* `gdas`: hard, τ 10 → 0.1, and the method-specific settings of AutoDL's
  `configs/search-opts/GDAS-NASNet-CIFAR.config`: 250 epochs, batch 256,
  Nesterov SGD wd 5e-4, cosine to 0.001 (lr 0.025, α Adam 3e-4 (0.5, 0.999)
  wd 1e-3 and bi-level 1st order are the DARTS defaults the space already
  sets). AutoDL's search net has 6 cells ([2, R, 1, R, 1]); the DARTS space's
  `layers` puts reductions at L//3 and 2L//3, so `--set layers=5` gives the
  closest [1, R, 1, R, 1] and the default 8 is the paper's 3N + 2. The paper
  (§4.2) differs from the config: 240 epochs, τ 10 → 1, wd 3e-4, plain SGD.
  Use it on NAS-Bench-201 with `--opt batch=64` (AutoDL's NB201 GDAS config)
  and `--relax-opt scalar_others=true`.
* `snas`: soft, τ 1 → 0.03, single-level (α and w from the same batch and
  loss, the whole training set), 150 epochs, batch 64, wd 3e-4, α grad-norm
  clip 10, and the **single-GPU** code's architecture optimiser: plain SGD,
  lr 3e-4, no momentum, no weight decay. The distributed branch of the same
  code (and the 20-cell README run) uses Adam 3e-4 (0.5, 0.999) wd 1e-3
  instead: `--opt arch_optimizer=adam --opt arch_weight_decay=1e-3`.
  Not reproduced: SNAS' τ schedule divides by a hard-coded 150 epochs and is
  stepped once before the first epoch (so epoch e trains at the value for
  e + 1); the search-time drop-path 0.3, which the preset leaves out
  (`--opt drop_path=0.3` adds it, rising from 0 as in RobustDARTS, where SNAS
  keeps 0.3 from the first epoch); and the
  optional resource constraint (a λ·Σ Z·cost penalty on FLOPs, MAC and
  parameter size; the README's 8-cell run uses λ = 1e-2 on its log).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from nasc.compiler.expr import Ramp
from nasc.errors import BuildError, SearchError
from nasc.runtime.relaxations.base import (RELAXATIONS, GroupWeights, MixedEdge, Relaxation, diverged, first_order_only,
                                          masked_softmax)


def parse_schedule(value: Any, what: str) -> tuple[float, float]:
    """(start, end) of a number (constant) or a ramp (`Ramp`, {"from", "to"} or a pair)."""
    if isinstance(value, Ramp):
        start, end = value.start, value.end
    elif isinstance(value, Mapping) and set(value) == {"from", "to"}:
        start, end = value["from"], value["to"]
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        start, end = value
    elif isinstance(value, str) and "->" in value:  # `--relax-opt tau=10->0.1`
        start, end = (part.strip() for part in value.split("->", 1))
    else:
        start = end = value
    try:
        if isinstance(start, bool) or isinstance(end, bool):  # float(True) is 1: a typo, not a temperature
            raise TypeError
        start, end = float(start), float(end)
    except (TypeError, ValueError):
        raise BuildError(f"{what} must be a number or a ramp such as 10 -> 0.1, got {value!r}") from None
    return start, end


def flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value in (0, 1):
        return bool(value)
    raise BuildError(f"{what} must be true or false, got {value!r}")


def linear_ramp(start: float, end: float, epoch: int, epochs: int) -> float:
    """AutoDL's per-epoch linear annealing: start at epoch 0, end at epoch `epochs − 1`."""
    if epochs <= 1:
        return start
    return start - (start - end) * min(max(epoch, 0), epochs - 1) / (epochs - 1)


class AnnealedTemperature:
    """The `tau` option of a Gumbel-sampling relaxation: a number or a ramp, annealed per epoch.

    Mixed in before `Relaxation` (GDAS/SNAS, ROME); `self.tau` is the current
    temperature, saved with checkpoints so that a resumed run samples as the
    uninterrupted one would.
    """

    tau_start: float
    tau_end: float
    tau: float

    def _init_temperature(self, what: str) -> None:
        self.tau_start, self.tau_end = parse_schedule(self.options["tau"], f"{what} option tau")
        # `not > 0` and isfinite: a NaN τ passed `<= 0` and made every sample NaN, redrawn forever
        if not (self.tau_start > 0 and self.tau_end > 0 and math.isfinite(self.tau_start + self.tau_end)):
            raise BuildError(f"{what} option tau must be positive and finite, got {self.options['tau']!r}")
        # options stay JSON-able (config.json records them); a ramp is kept as {"from", "to"}
        self.options["tau"] = (self.tau_start if self.tau_start == self.tau_end
                               else {"from": self.tau_start, "to": self.tau_end})
        self.tau = self.tau_start

    def temperature(self, epoch: int, epochs: int) -> float:
        return linear_ramp(self.tau_start, self.tau_end, epoch, epochs)

    def set_progress(self, epoch: int, epochs: int, step: int = 0) -> None:
        super().set_progress(epoch, epochs, step)
        self.tau = self.temperature(epoch, epochs)

    def state_dict(self) -> dict[str, Any]:
        return {"tau": self.tau}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "tau" in state and math.isfinite(float(state["tau"])):
            self.tau = float(state["tau"])

    def _tau_text(self) -> str:
        return f"{self.tau_start:g}" if self.tau_start == self.tau_end else f"{self.tau_start:g} -> {self.tau_end:g}"


def gumbel_noise(like: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) noise −log E, E ~ Exp(1), from the global RNG of `like`'s device."""
    return -torch.empty_like(like).exponential_().log()


MAX_DRAWS = 100  # a finite α gives a finite sample with probability ~1 per draw; 100 misses mean it never will


def check_redraw(params: torch.Tensor, draws: int, tau: float, what: str) -> None:
    """After a non-finite sample (AutoDL redraws it): stop where redrawing cannot help, instead of looping forever.

    A NaN/inf α or β (a diverged search: the weights went NaN, then the validation loss and α's gradient)
    makes every sample NaN; so does a τ small enough that (log p + g)/τ overflows.
    """
    if not bool(torch.isfinite(params).all()):
        raise diverged(what)
    if draws >= MAX_DRAWS:
        raise SearchError(f"{what}: {MAX_DRAWS} Gumbel samples in a row were not finite at tau = {tau:g}",
                          hint="raise tau (--relax-opt tau=...)")


class GumbelEdge(MixedEdge):
    """A mixed edge that may add the unsampled weights as scalars (AutoDL's NB201 `forward_gdas`)."""

    def __init__(self, candidates: list[nn.Module], names: list[str], scalar_others: bool):
        super().__init__(candidates, names)
        self.scalar_others = scalar_others

    def forward(self, x: torch.Tensor, w: torch.Tensor, active: list[int] | None = None) -> torch.Tensor:
        out = super().forward(x, w, active)
        if self.scalar_others and active is not None and len(active) < len(self.candidates):
            others = [i for i in range(len(self.candidates)) if i not in active]
            out = out + w[others].sum()  # each entry is 0 − h.detach() + h: 0 forward, ∂h backward
        return out


@RELAXATIONS.register("gumbel")
class Gumbel(AnnealedTemperature, Relaxation):
    """Gumbel-softmax sampling per forward pass: hard one-hot with straight-through (GDAS) or soft (SNAS)."""

    name = "gumbel"
    defaults: dict[str, Any] = {"tau": {"from": 10.0, "to": 0.1}, "hard": True, "init": None,
                                "scalar_others": False}
    presets = {
        "gdas": ({"hard": True, "tau": Ramp(10.0, 0.1)},
                 {"epochs": 250, "batch": 256, "weight_decay": 5e-4, "nesterov": True, "lr_min": 0.001}),
        "snas": ({"hard": False, "tau": Ramp(1.0, 0.03)},
                 {"levels": 1, "epochs": 150, "batch": 64, "lr": 0.025, "lr_min": 0.001, "weight_decay": 3e-4,
                  "clip": 5.0, "arch_optimizer": "sgd", "arch_lr": 3e-4, "arch_momentum": 0.0,
                  "arch_weight_decay": 0.0, "arch_clip": 10.0}),
    }

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        self._init_temperature("gumbel")
        self.hard = flag(self.options["hard"], "gumbel option hard")
        self.evaluates_one_path = self.hard  # soft samples (SNAS) evaluate softmax(α)
        init = self.options["init"]
        if init is None:
            init = "darts" if self.hard else "snas"
        if init not in ("darts", "snas"):
            raise BuildError(f"gumbel option init must be 'darts' or 'snas', got {init!r}")
        self.init = init
        self.scalar_others = flag(self.options["scalar_others"], "gumbel option scalar_others")
        if self.scalar_others and not self.hard:  # soft samples weight every candidate: there are no "others"
            raise BuildError("gumbel option scalar_others applies to hard sampling (GDAS) only: with hard = false "
                             "(SNAS) every candidate is computed and weighted already, so it would change nothing",
                             hint="drop scalar_others, or set hard = true (--relax gdas)")
        self.options["hard"], self.options["scalar_others"] = self.hard, self.scalar_others

    # ---- construction ----
    def check_config(self, config: Any) -> None:
        first_order_only("gumbel", config, "Gumbel sample")

    def make_edge(self, candidates: list[nn.Module], names: list[str], *, channels: int, stride: int) -> nn.Module:
        if self.scalar_others:
            return GumbelEdge(candidates, names, scalar_others=True)
        return MixedEdge(candidates, names)

    def init_alpha(self, rows: int, cols: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.init == "snas":  # SNAS: log_alpha ~ N(loc_mean = 1, loc_std = 0.01)
            return 1.0 + 0.01 * torch.randn(rows, cols, generator=generator)
        return 1e-3 * torch.randn(rows, cols, generator=generator)

    # ---- every forward pass ----
    def sample(self, alpha: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h, g): the relaxed sample softmax((log_softmax(α) + g)/τ) and its noise, redrawn until finite."""
        logp = torch.log_softmax(alpha.masked_fill(~mask, float("-inf")), dim=-1)
        draws = 0
        while True:
            g = gumbel_noise(alpha)
            h = torch.softmax((logp + g) / self.tau, dim=-1)
            if bool(torch.isfinite(g[mask]).all()) and bool(torch.isfinite(h).all()):
                return h, g
            draws += 1
            check_redraw(alpha, draws, self.tau, "gumbel")

    def group_weights(self, alpha: torch.Tensor, mask: torch.Tensor, extras: Mapping[str, torch.Tensor],
                      node_of_row: list[int]) -> GroupWeights:
        if self.phase == "eval":
            if not self.hard:
                return GroupWeights(masked_softmax(alpha, mask))
            index = alpha.detach().masked_fill(~mask, float("-inf")).argmax(-1, keepdim=True)
            one_hot = torch.zeros_like(alpha).scatter_(-1, index, 1.0)
            return GroupWeights(one_hot, active=[[i] for i in index.squeeze(-1).tolist()])
        h, _ = self.sample(alpha, mask)
        if not self.hard:
            # SNAS: softmax((α + G)/τ); log_softmax only shifts each row, so h is exactly that
            return GroupWeights(h)
        index = h.detach().argmax(-1, keepdim=True)
        one_hot = torch.zeros_like(h).scatter_(-1, index, 1.0)
        hardwts = one_hot - h.detach() + h
        return GroupWeights(hardwts, active=[[i] for i in index.squeeze(-1).tolist()])

    def describe(self) -> str:
        mode = "hard" if self.hard else "soft"
        extra = ", scalar_others" if self.scalar_others else ""
        return f"gumbel({mode}, tau = {self._tau_text()}, init = {self.init}{extra})"
