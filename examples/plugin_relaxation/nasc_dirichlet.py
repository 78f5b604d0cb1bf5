"""DrNAS' Dirichlet relaxation (Chen et al., "DrNAS: Dirichlet Neural Architecture Search", ICLR 2021).

Each edge's mixing weights are a *sample* w ~ Dirichlet(β) with concentration
β = elu(α) + 1 (DrNAS' choice; `activation = "softplus"` or `"exp"` are the
other usual positive maps), drawn anew at every forward pass. `rsample` makes
the draw a differentiable function of β (pathwise / implicit reparameterisation
gradients), so α trains by plain back-propagation of the validation loss, as in
DARTS. The optional regulariser adds `kl_weight · Σ_edges KL(Dir(β) ‖ Dir(prior))`
to the architecture loss (DrNAS' `reg_type = "kl"`, scale 1e-3, prior 1); off
by default, as in DrNAS' DARTS-space search, whose `l2` regulariser is the
architecture optimiser's weight decay.

Padded α entries (an edge with fewer candidates than its group's widest) get
weight exactly 0: the remaining entries are renormalised, and a renormalised
sub-vector of a Dirichlet sample is itself Dirichlet-distributed over those
entries, so this is the same distribution DrNAS samples for a pruned edge.

Evaluation (phase "eval") uses the mean β / Σβ instead of a sample, so the
per-epoch validation numbers do not depend on the draw (DrNAS samples there
too). Selection reads softmax(α), as DrNAS' `genotype()` does.

Preset `drnas`: the search settings of DrNAS' DARTS-space train_search.py
(SGD lr 0.1 cosine to 0, Adam α lr 6e-4, wd 1e-3, α updates from epoch 10).
Not reproduced: its progressive schedule (two 25-epoch stages, partial
channels 1/6 then 1/4, pruning to 4 candidates per edge).

This file is the whole plugin: `pyproject.toml` names it under the entry-point
group `nasc.relaxations`, and importing it registers `dirichlet` with nasc.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from nasc.errors import BuildError
from nasc.runtime.relaxations.base import RELAXATIONS, GroupWeights, Relaxation

ACTIVATIONS = ("elu", "softplus", "exp")


def dirichlet_kl(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(Dir(a) ‖ Dir(b)) per row over the entries where `mask` holds; a, b, mask: (rows, cols)."""
    a = a.masked_fill(~mask, 1.0)
    b = b.masked_fill(~mask, 1.0)
    m = mask.to(a.dtype)
    a0, b0 = (a * m).sum(-1), (b * m).sum(-1)  # (rows,)
    log_norm = torch.lgamma(a0) - torch.lgamma(b0) - ((torch.lgamma(a) - torch.lgamma(b)) * m).sum(-1)
    return log_norm + ((a - b) * (torch.digamma(a) - torch.digamma(a0).unsqueeze(-1)) * m).sum(-1)


@RELAXATIONS.register("dirichlet")
class Dirichlet(Relaxation):
    """DrNAS: mixing weights sampled from Dirichlet(elu(α) + 1) with pathwise gradients; optional KL to a prior."""

    name = "dirichlet"
    defaults: dict[str, Any] = {"activation": "elu", "kl_weight": 0.0, "prior": 1.0}
    presets = {
        "drnas": ({}, {"lr": 0.1, "lr_min": 0.0, "arch_lr": 6e-4, "arch_weight_decay": 1e-3, "arch_start": 10}),
    }

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        if self.options["activation"] not in ACTIVATIONS:
            raise BuildError(f"dirichlet option activation must be one of {', '.join(ACTIVATIONS)}, "
                             f"got {self.options['activation']!r}")
        for key in ("kl_weight", "prior"):
            value = self.options[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise BuildError(f"dirichlet option {key} must be a number ≥ 0, got {value!r}")
        if self.options["prior"] <= 0:
            raise BuildError("dirichlet option prior must be positive (it is a concentration)")

    def concentration(self, alpha: torch.Tensor) -> torch.Tensor:
        """β > 0 from α: elu(α) + 1 (DrNAS), softplus(α) or exp(α)."""
        act = self.options["activation"]
        beta = F.elu(alpha) + 1 if act == "elu" else F.softplus(alpha) if act == "softplus" else alpha.exp()
        return beta.clamp_min(1e-6)  # exp/softplus underflow for very negative α

    def group_weights(self, alpha: torch.Tensor, mask: torch.Tensor, extras: Mapping[str, torch.Tensor],
                      node_of_row: list[int]) -> GroupWeights:
        beta = self.concentration(alpha).masked_fill(~mask, 1.0)  # (rows, cols); padding: any positive value
        if self.phase == "eval":
            w = beta * mask
        else:
            w = torch.distributions.Dirichlet(beta).rsample() * mask  # (rows, cols), differentiable in β
            if bool(mask.all()):
                return GroupWeights(w)
        return GroupWeights(w / w.sum(-1, keepdim=True))

    def regularizer(self, net: torch.nn.Module) -> torch.Tensor | None:
        if not self.options["kl_weight"]:
            return None
        total = None
        for group, alpha in net.alphas.items():
            beta = self.concentration(alpha)
            prior = torch.full_like(beta, float(self.options["prior"]))
            kl = dirichlet_kl(beta, prior, net.mask(group)).sum()
            total = kl if total is None else total + kl
        return None if total is None else self.options["kl_weight"] * total

    def describe(self) -> str:
        opts = self.options
        extra = f", KL {opts['kl_weight']:g} to Dir({opts['prior']:g})" if opts["kl_weight"] else ""
        return f"dirichlet({opts['activation']}{extra})"
