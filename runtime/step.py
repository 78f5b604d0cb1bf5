"""One search step (an α step, then a weight step), run eagerly or replayed from a CUDA graph.

On a GPU the DARTS supernet is bound by kernel launches, not by arithmetic: one
softmax step at batch 64 launches about 40,000 small kernels and keeps an H100
busy for about a fifth of the step's wall time (docs/performance.md). Where the
step's structure is static (the relaxation draws nothing per step, the α
gradient is first order, one process, nothing edits the mixture between steps),
the whole step, both optimisers included, is captured once as a CUDA graph and
replayed: the CPU then launches one graph instead of 40,000 kernels. The
captured code is `SearchStep.compute` itself, the function the eager path runs,
so the maths cannot drift apart.

A capture bakes the learning rate in, so a new rate (a new epoch) captures
again; batches of another shape (the last, partial one of an epoch) run
eagerly. The first steps of each kind run eagerly on a side stream, as CUDA
graphs require, and create the optimisers' state before anything is captured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from nasc.runtime.architect import first_order, second_order
from nasc.runtime.relaxations.base import Relaxation

#: eager steps of a kind (with / without an α step) before that kind is captured
WARMUP_STEPS = 2


@attrs.frozen
class StepResult:
    """Detached device tensors; reading them on the host is the caller's choice (and its only sync)."""

    loss: torch.Tensor  # weight-step cross-entropy, 0-d fp32
    logits: torch.Tensor  # (B, classes) of the weight step's forward
    arch_loss: torch.Tensor | None  # α-step loss, None when no α step ran


def graph_blocker(net: nn.Module, relax: Relaxation, cfg: Any, device: torch.device, world_size: int) -> str | None:
    """Why this search cannot replay its step from a CUDA graph; None when it can."""
    if getattr(cfg, "cuda_graphs", None) is False:
        return "turned off (cuda_graphs = false)"
    if device.type != "cuda":
        return "CUDA graphs need a CUDA device"
    if not vars(type(relax)).get("graph_safe", False):  # declared by the class itself, never inherited
        return f"the {relax.name} relaxation changes the network from step to step (samples, masks)"
    if type(relax).arch_loss is not Relaxation.arch_loss or type(relax).weight_loss is not Relaxation.weight_loss:
        return f"the {relax.name} relaxation runs several forward passes per step"
    if cfg.order == 2:
        return "second-order α steps read values on the host"
    if world_size > 1:
        return "several processes (gradients are all-reduced between steps)"
    if cfg.stages:
        return "progressive search changes the network between stages"
    if cfg.drop_path:
        return "drop-path probability changes between epochs"
    from nasc.runtime.ops import Noise

    if any(isinstance(m, (Noise, nn.Dropout)) for m in net.modules()):
        return "the space has random candidates (noise, dropout)"
    return None


class SearchStep:
    """The step the search loop runs; `__call__` picks eager or graph replay, `compute` is the maths."""

    def __init__(self, net: nn.Module, relax: Relaxation, cfg: Any, w_opt: torch.optim.Optimizer,
                 a_opt: torch.optim.Optimizer, *, device: torch.device, sync: Any = None, world_size: int = 1):
        self.net, self.relax, self.cfg = net, relax, cfg
        self.w_opt, self.a_opt = w_opt, a_opt
        self.weights = [p for g in w_opt.param_groups for p in g["params"]]
        self.arch = [p for g in a_opt.param_groups for p in g["params"]]
        self.device = device
        self.sync = sync
        self.blocker = graph_blocker(net, relax, cfg, device, world_size)  # None: graphs; else why not
        self._graphs: dict[tuple, tuple[list[torch.Tensor], torch.cuda.CUDAGraph, StepResult]] = {}
        self._warm = {True: 0, False: 0}
        self._pool = None
        self._stream = None
        self.replays = 0

    @property
    def uses_graphs(self) -> bool:
        return self.blocker is None

    # ---- the maths ----
    def autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                              enabled=self.cfg.precision == "bf16")

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return F.cross_entropy(self.net(x).float(), y)

    def arch_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        custom = self.relax.arch_loss(self.net, self.loss, x, y)
        if custom is not None:
            return custom
        loss = self.loss(x, y)
        extra = self.relax.regularizer(self.net)
        return loss if extra is None else loss + extra

    def _average(self, params: list[torch.Tensor]) -> None:
        if self.sync is not None:
            self.sync.average_grads(params)  # distributed hook: mean gradients over ranks

    def compute(self, x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor | None, yv: torch.Tensor | None, *,
                lr: float, arch_step: bool) -> StepResult:
        """α step (when `arch_step`), then the weight step (the other way round for a relaxation whose
        `arch_after_weights`, ProxylessNAS); never reads a device value on the host."""
        cfg, net, relax = self.cfg, self.net, self.relax
        arch_loss = None
        bilevel_arch = arch_step and cfg.levels == 2
        if bilevel_arch and not relax.arch_after_weights:
            arch_loss = self._arch_phase(x, y, xv, yv, lr)
        single_level = arch_step and cfg.levels == 1
        self.w_opt.zero_grad(set_to_none=True)
        if single_level:
            self.a_opt.zero_grad(set_to_none=True)
        relax.set_phase("weights")
        custom = relax.weight_loss(net, x, y) if cfg.levels == 2 else None
        if custom is not None:  # e.g. ROME: the sum over several sampled sub-networks
            total, logits = custom
            total.backward()
            loss = F.cross_entropy(logits.detach(), y)
        else:
            with self.autocast():
                logits = net(x).float()
            loss = F.cross_entropy(logits, y)
            extra = relax.regularizer(net) if single_level else None
            (loss if extra is None else loss + extra).backward()
        if not single_level:
            for p in self.arch:
                p.grad = None
        self._average(self.weights + self.arch)
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(self.weights, cfg.clip)
        self.w_opt.step()
        relax.after_weight_step(net)
        if single_level:
            self._arch_update()
        if bilevel_arch and relax.arch_after_weights:
            arch_loss = self._arch_phase(x, y, xv, yv, lr)
        return StepResult(loss=loss.detach(), logits=logits.detach(), arch_loss=arch_loss)

    def _arch_phase(self, x, y, xv, yv, lr: float) -> torch.Tensor:
        """One bi-level α step on the validation batch (first or second order); its loss."""
        cfg, net = self.cfg, self.net
        self.a_opt.zero_grad(set_to_none=True)
        self.relax.set_phase("arch")
        if cfg.order == 2:
            arch_loss = second_order(self.arch_loss, self.weights, self.arch, self.w_opt, lr, x, y, xv, yv,
                                     buffers=lambda: list(net.buffers()))
        else:
            arch_loss = first_order(self.arch_loss, self.arch, xv, yv)
        self._average(self.arch)
        self._arch_update()
        return arch_loss

    def _arch_update(self) -> None:
        if self.cfg.arch_clip:
            torch.nn.utils.clip_grad_norm_(self.arch, self.cfg.arch_clip)
        self.relax.before_arch_step(self.net)
        self.a_opt.step()
        self.relax.after_arch_step(self.net)

    # ---- eager or replayed ----
    def __call__(self, x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor | None, yv: torch.Tensor | None, *,
                 lr: float, arch_step: bool) -> StepResult:
        if not self.uses_graphs or getattr(self.net, "weight_transform", None) is not None:
            return self.compute(x, y, xv, yv, lr=lr, arch_step=arch_step)
        full = x.shape[0] == self.cfg.batch and (xv is None or xv.shape[0] == self.cfg.batch)
        key = (tuple(x.shape), None if xv is None else tuple(xv.shape), lr, arch_step)
        entry = self._graphs.get(key)
        if entry is None:
            if not full or self._warm[arch_step] < WARMUP_STEPS:
                self._warm[arch_step] += full
                return self._side_stream(lambda: self.compute(x, y, xv, yv, lr=lr, arch_step=arch_step))
            entry = self._capture(key, x, y, xv, yv)
            if entry is None:  # the capture failed: eager from now on (blocker says why)
                return self.compute(x, y, xv, yv, lr=lr, arch_step=arch_step)
        inputs, graph, out = entry
        for static, t in zip(inputs, (x, y, xv, yv)):
            if t is not None:
                static.copy_(t)
        graph.replay()
        self.replays += 1
        # copies: the graph's own outputs live in its memory pool, which must never outlive the graph
        return StepResult(loss=out.loss.clone(), logits=out.logits.clone(),
                          arch_loss=None if out.arch_loss is None else out.arch_loss.clone())

    def _side_stream(self, fn: Callable[[], StepResult]) -> StepResult:
        """Warm-up steps run on a side stream, as CUDA graph capture requires of the code it captures."""
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._stream):
            out = fn()
        torch.cuda.current_stream(self.device).wait_stream(self._stream)
        return out

    def _capture(self, key: tuple, x, y, xv, yv):
        _, _, lr, arch_step = key
        if any(k[2] != lr for k in self._graphs):
            # captures of an earlier learning rate are never replayed again. Their pool still holds the
            # gradients: drop those while the graphs live, then the graphs, then start a new pool
            for p in self.weights + self.arch:
                p.grad = None
            torch.cuda.synchronize(self.device)
            self._graphs.clear()
            self._pool = None
        inputs = [t.clone() if t is not None else None for t in (x, y, xv, yv)]
        if self._pool is None:  # one pool per learning rate, shared by its captures (with and without α step)
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self._pool):
                out = self.compute(*inputs, lr=lr, arch_step=arch_step)
        except RuntimeError as e:  # an op that cannot be captured: run eagerly, and record why
            self.blocker = f"capture failed: {str(e).splitlines()[0][:200]}"
            for p in self.weights + self.arch:
                p.grad = None
            self._graphs.clear()
            with contextlib.suppress(RuntimeError):
                torch.cuda.synchronize(self.device)
            return None
        entry = ([t for t in inputs], graph, out)
        self._graphs[key] = entry
        return entry


class EvalForward:
    """Forward passes in evaluation mode, replayed from CUDA graphs (one per batch shape) where allowed."""

    def __init__(self, net: nn.Module, autocast: Callable[[], Any], *, enabled: bool):
        self.net, self.autocast, self.enabled = net, autocast, enabled
        self._graphs: dict[tuple, tuple[torch.Tensor, torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool = None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled or getattr(self.net, "weight_transform", None) is not None:
            return self._forward(x)
        key = tuple(x.shape)
        entry = self._graphs.get(key)
        if entry is None:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            static = x.clone()
            self._forward(static)  # warm-up outside the capture (cuDNN plans, lazy handles)
            torch.cuda.synchronize(x.device)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, pool=self._pool):
                    out = self._forward(static)
            except RuntimeError:
                self.enabled = False
                return self._forward(x)
            entry = self._graphs[key] = (static, graph, out)
        static, graph, out = entry
        static.copy_(x)
        graph.replay()
        return out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.net(x).float()
