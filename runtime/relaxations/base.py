"""The relaxation interface: what a differentiable-NAS variant has to provide.

A relaxation owns the mixed edge (how the candidates of one edge are
combined), the architecture parameters of every α group, what happens at
each step (temperatures, samples, masks), and how α's gradient is formed. The
supernet builder and the search loop only talk to this interface, so adding a
variant is adding one module that subclasses `Relaxation` and registers it:

    @RELAXATIONS.register("my-variant")
    class MyVariant(Relaxation): ...
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from nasc.catalog import BUILTIN_RELAXATIONS, PRESETS, relaxation_names
from nasc.errors import BuildError, SearchError, did_you_mean
from nasc.runtime.registry import Registry, hook_problem

RELAXATIONS: Registry[type["Relaxation"]] = Registry(
    "relaxation", catalogue=relaxation_names,
    accepts=(lambda v: isinstance(v, type) and issubclass(v, Relaxation),
             "a subclass of nasc.runtime.relaxations.base.Relaxation"),
    calls=lambda v: hook_problem(v, Relaxation) or preset_problem(v))


def preset_problem(cls: type["Relaxation"]) -> str | None:
    """Why `--relax PRESET` could not use one of a relaxation's `presets`, or None.

    Checked when the class is registered, so that a plugin's malformed or misspelt preset fails its load
    naming the preset, not a later search with an internal error or an "unknown search option" the user
    never typed.
    """
    from nasc.runtime.config import FIELDS  # local: config is not needed to define relaxations

    shape = "presets maps a name to a pair (options, search settings) of dicts"
    presets = cls.presets
    if not isinstance(presets, Mapping):
        return f"its presets are {presets!r}; {shape}"
    for name, value in presets.items():
        if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, Mapping) for v in value)):
            return f"its preset {name!r} is {value!r}; {shape}"
        options, settings = value
        unknown = sorted(set(options) - set(cls.defaults))
        if unknown:
            return f"its preset {name!r} sets option {unknown[0]!r}, which is not in its defaults"
        unknown = sorted(set(settings) - set(FIELDS))
        if unknown:
            near = did_you_mean(unknown[0], FIELDS)
            return f"its preset {name!r} sets {unknown[0]!r}, which is no search setting" + (f" ({near})" if near else "")
    return None


class GroupWeights:
    """What a relaxation hands a cell for one α group in one forward pass.

    `ops[row]` weights the candidates of searchable edge `row`; `edges[row]`,
    when not None, scales that edge's whole output (PC-DARTS' edge
    normalisation, for instance); `active[row]`, when not None, lists the
    candidate indices the edge must compute this pass (GDAS' one sampled op,
    DropNAS' kept ops) — a Python list, so no device synchronisation is needed;
    an empty list skips the edge altogether (ROME's unsampled edges).
    """

    __slots__ = ("ops", "edges", "active")

    def __init__(self, ops: torch.Tensor, edges: torch.Tensor | None = None,
                 active: list[list[int]] | None = None):
        self.ops = ops  # (rows, max candidates)
        self.edges = edges  # (rows,) or None
        self.active = active


class _ReluCache:
    """One edge input's ReLU, computed once per forward and read by every candidate that starts with ReLU."""

    __slots__ = ("key", "value", "enabled")

    def __init__(self) -> None:
        self.key = self.value = None
        self.enabled = True


class SharedReLU(nn.ReLU):
    """A candidate's leading ReLU that reuses the value its edge already computed for the same input."""

    def __init__(self, cache: _ReluCache):
        super().__init__()
        object.__setattr__(self, "_cache", cache)  # not a submodule: the cache is plain state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cache = self._cache
        if not cache.enabled:
            return torch.relu(x)
        if cache.key is not x:
            cache.key, cache.value = x, torch.relu(x)
        return cache.value


class MixedEdge(nn.Module):
    """Σ_o w_o · o(x): the DARTS mixture; relaxations subclass it to run fewer candidates.

    Two savings are exact by construction and on unless `share` is turned off
    (the plain lowering, for comparisons): a zero candidate (`none`) is never
    computed — its weight still takes part in the normalisation, so α's
    gradient is unchanged — and candidates that begin with a ReLU of the edge
    input (DARTS' sep/dil convs) share one ReLU (`SharedReLU`), so its output
    is computed and kept for backward once instead of once per candidate.
    """

    def __init__(self, candidates: list[nn.Module], names: list[str]):
        super().__init__()
        from nasc.runtime.ops import Zero  # local: ops imports nothing from relaxations

        self.candidates = nn.ModuleList(candidates)
        self.names = list(names)
        self.zero = [isinstance(c, Zero) for c in candidates]
        self._relu = _ReluCache()
        for c in candidates:
            if isinstance(c, nn.Sequential) and len(c) > 1 and type(c[0]) is nn.ReLU:
                c[0] = SharedReLU(self._relu)

    @property
    def share(self) -> bool:
        return self._relu.enabled

    @share.setter
    def share(self, value: bool) -> None:
        self._relu.enabled = bool(value)

    def forward(self, x: torch.Tensor, w: torch.Tensor, active: list[int] | None = None) -> torch.Tensor:
        idx = list(range(len(self.candidates))) if active is None else list(active)
        if self.share:
            idx = [i for i in idx if not self.zero[i]] or idx[:1]
        out = None
        try:
            for i in idx:
                term = w[i] * self.candidates[i](x)
                out = term if out is None else out + term
        finally:
            self._relu.key = self._relu.value = None  # never keep a tensor alive past the forward
        return out


class Relaxation:
    """Base class; the defaults implement plain DARTS (softmax over every candidate)."""

    name = "softmax"
    #: True when a forward pass launches the same kernels every step (no samples, masks or host reads),
    #: so the search step may be captured once as a CUDA graph and replayed (runtime/step.py)
    graph_safe = False
    #: True: a bi-level α step follows the weight step, on the steps where (step + 1) % arch_every == 0
    #: (ProxylessNAS' order); False: it precedes it where step % arch_every == 0 (DARTS' order)
    arch_after_weights = False
    #: True when evaluation runs one path per edge, the most probable op (GDAS, ProxylessNAS, ROME, PARSEC), not
    #: a mixture: a DARTS-PT removal of any other op then leaves the scored network as it was
    evaluates_one_path = False
    #: option name -> default; options not listed here are rejected with a clear error
    defaults: dict[str, Any] = {}
    #: method presets: name -> (options, search settings), e.g. {"gdas": ({"hard": True}, {"epochs": 250})};
    #: settings use SearchConfig field names and sit between the space file and the command line
    presets: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}

    def __init__(self, options: Mapping[str, Any] | None = None):
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            known = ", ".join(f"{k} (default {v!r})" for k, v in self.defaults.items()) or "none"
            raise BuildError(f"relaxation {self.name!r} has no option {unknown[0]!r}", hint=f"options: {known}")
        self.options = {**self.defaults, **options}
        self.epoch = 0
        self.epochs = 1
        self.step = 0
        self.phase = "weights"

    # ---- construction ----
    def setup(self, ir: Any, net: nn.Module) -> None:
        """Called once the supernet is built (e.g. to read the compiler's per-candidate costs)."""

    def check_config(self, config: Any) -> None:
        """Refuse search settings (a `SearchConfig`) this relaxation cannot search with, before anything runs."""

    def edge_channels(self, channels: int) -> int:
        """Channels the candidates of an edge operate on (PC-DARTS uses C/K)."""
        return channels

    def make_edge(self, candidates: list[nn.Module], names: list[str], *, channels: int, stride: int) -> nn.Module:
        return MixedEdge(candidates, names)

    def init_alpha(self, rows: int, cols: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Initial α: 1e-3·N(0, 1), as the DARTS code does (the paper says zeros)."""
        return 1e-3 * torch.randn(rows, cols, generator=generator)

    def extra_parameters(self, group: str, rows: int, node_of_row: list[int]) -> dict[str, torch.Tensor]:
        """Further architecture tensors of a group (e.g. PC-DARTS' β), by name."""
        return {}

    # ---- every forward pass ----
    def group_weights(self, alpha: torch.Tensor, mask: torch.Tensor, extras: Mapping[str, torch.Tensor],
                      node_of_row: list[int]) -> GroupWeights:
        """The weights one α group contributes to this forward pass."""
        return GroupWeights(masked_softmax(alpha, mask))

    # ---- schedule and step hooks (the search loop calls these, in this order, every step) ----
    def set_progress(self, epoch: int, epochs: int, step: int = 0) -> None:
        self.epoch, self.epochs, self.step = epoch, epochs, step

    def set_phase(self, phase: str) -> None:
        """"arch" before an α step's forward passes, "weights" before a weight step's, "eval" for evaluation."""
        self.phase = phase

    def arch_loss(self, net: nn.Module, loss_fn: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | None:
        """The loss whose gradient w.r.t. the architecture parameters drives the α step.

        None (the default) means `loss_fn(x, y)` plus `regularizer`. A relaxation
        overrides it to average several sampled architectures (ROME) or to build a
        Monte-Carlo estimator's surrogate (PARSEC). `loss_fn(x, y)` runs one forward.
        """
        return None

    def weight_loss(self, net: nn.Module, x: torch.Tensor,
                    y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(loss to differentiate, logits of one pass for the metrics) for the weight step.

        None (the default) means one forward pass and its cross-entropy; ROME
        overrides it to sum the losses of several sampled sub-networks.
        """
        return None

    def regularizer(self, net: nn.Module) -> torch.Tensor | None:
        """An extra term for the architecture loss (e.g. expected latency); None when there is none."""
        return None

    def before_arch_step(self, net: nn.Module) -> None:
        """Right before the α optimiser steps (gradients are in place)."""

    def after_arch_step(self, net: nn.Module) -> None:
        """Right after the α optimiser stepped (ProxylessNAS rescales α here, DropNAS adjusts it)."""

    def after_weight_step(self, net: nn.Module) -> None:
        """Right after the weight optimiser stepped."""

    def state_dict(self) -> dict[str, Any]:
        """Relaxation state that a checkpoint must carry (counters, running estimates)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    # ---- selection ----
    def probabilities(self, alpha: torch.Tensor, mask: torch.Tensor, extras: Mapping[str, torch.Tensor],
                      node_of_row: list[int]) -> torch.Tensor:
        """Per-edge op strengths a magnitude selector reads (softmax of α by default)."""
        return masked_softmax(alpha.detach(), mask)

    def edge_strengths(self, alpha: torch.Tensor, mask: torch.Tensor, extras: Mapping[str, torch.Tensor],
                       node_of_row: list[int]) -> torch.Tensor | None:
        """Per-edge multipliers for selection (PC-DARTS' normalised β); None when there are none."""
        return None

    def describe(self) -> str:
        opts = ", ".join(f"{k} = {v}" for k, v in self.options.items())
        return f"{self.name}({opts})" if opts else self.name


def first_order_only(name: str, config: Any, sample: str) -> None:
    """Refuse the unrolled (second-order) step for a relaxation that draws `sample` on every forward pass.

    The unrolled step runs four forward passes, each with its own draw: its finite-difference Hessian term
    (g(w⁺) − g(w⁻))/2ε then differences two architectures' gradients. That is noise, several times the
    same-sample term and far above the first-order gradient in a small NB201 check (GDAS); GDAS, SNAS,
    ROME and DropNAS are first-order methods.
    """
    if config.order != 1:
        raise SearchError(f"{name} has no second-order step: each forward pass of the unrolled gradient "
                          f"draws its own {sample}, so its finite-difference term compares the gradients of "
                          "different architectures", hint="search first-order (--first-order)")


def refuse_fix_alpha(relax: Relaxation, config: Any) -> None:
    """Refuse `fix_alpha` for a relaxation that evaluates the most probable architecture (`evaluates_one_path`).

    fix_alpha (DARTS-PT's fixed-α variant) holds α at zero, where every edge ties and its argmax is the
    first candidate (`none` in DARTS and NAS-Bench-201): each validation pass, and every DARTS-PT
    perturbation score, was then of the all-`none` network, so the perturbation selector picked `none`
    on every edge. softmax and soft Gumbel samples evaluate the uniform mixture instead.
    """
    if relax.evaluates_one_path and getattr(config, "fix_alpha", False):
        raise SearchError(f"{relax.name} evaluates the most probable architecture (argmax of α), and fix_alpha holds "
                          "α at zero, where every edge ties and its argmax is the first candidate: validation "
                          "and perturbation scores would all be of that one network",
                          hint="drop fix_alpha, or use DARTS-PT's fixed-α variant with softmax (--relax darts)")


def diverged(what: str) -> SearchError:
    """The error for NaN/inf architecture parameters, which no sample can be drawn from.

    A search diverges weights first (NaN weights, then a NaN validation loss and α gradient); a
    softmax search then stops on its NaN loss, but a sampling relaxation must stop before it samples.
    """
    return SearchError(f"{what}: the architecture parameters became NaN or infinite, so no sample of them "
                       "can be drawn", hint="lower the learning rate (lr, arch_lr) or check the data")


def masked_softmax(alpha: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax over the valid candidates; padded entries get exactly 0."""
    return torch.softmax(alpha.masked_fill(~mask, float("-inf")), dim=-1)  # (rows, cols)


def relaxation_class(name: str) -> type[Relaxation]:
    """The class registered under `name` (a relaxation or a preset), importing built-ins on first use."""
    name = PRESETS.get(name, name)
    if name not in RELAXATIONS and name in BUILTIN_RELAXATIONS:
        try:
            importlib.import_module(BUILTIN_RELAXATIONS[name])
        except ModuleNotFoundError as e:
            raise BuildError(f"relaxation {name!r} is not available in this build ({e})") from None
    return RELAXATIONS.get(name)


def preset(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(options, search settings) a method name implies; empty for a plain relaxation name."""
    if name not in PRESETS:
        return {}, {}
    options, settings = relaxation_class(name).presets.get(name, ({}, {}))
    return dict(options), dict(settings)


def load_relaxation(name: str, options: Mapping[str, Any] | None = None) -> Relaxation:
    """Instantiate a relaxation by name or preset (`darts` → softmax, `gdas` → gumbel(hard))."""
    cls = relaxation_class(name)
    return cls({**preset(name)[0], **dict(options or {})})
