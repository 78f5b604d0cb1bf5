"""Mixed edges that read one state, computed together: exact shared work across a cell's edges.

Every state of a DARTS cell feeds several mixed edges (each cell input feeds
four), and each of those edges runs the same candidates on the same tensor:
four ReLUs of it, four max-pools, four average-pools with affine-free BNs that
see identical inputs, and, per convolution candidate, four same-shape small
convolutions. On a GPU each of those is a kernel whose cost is mostly its
launch. An `EdgeGroup` computes the k edges of one source state at once:

- parameter-free work on the shared input (ReLU, pooling, an affine-free BN in
  training mode) runs once for all k edges;
- the k convolutions of one candidate become one grouped convolution over k·C
  channels (the edges' weights are concatenated per call, so each edge's own
  parameter gets its own gradient), and their BNs one batch-norm over k·C
  channels whose running statistics are views into each edge's own buffers;
- the mixtures Σ_o w_eo · o_e(x) of all k edges take one multiply-add per candidate.

Parameters and buffers stay in the edges' own modules: state dicts,
checkpoints, selectors and genotypes see the same network. The maths is the
edge-by-edge lowering's (tests/runtime/test_memory_modes.py checks loss,
gradients and running statistics). Candidates that cannot be batched
(FactorizedReduce, ResBlocks, plugins' modules) still run edge by edge inside
the group. Only plain `MixedEdge`s without random candidates are grouped:
relaxations that subclass the edge compute it their own way, and grouping
would change the order in which random candidates draw from the RNG.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from nasc.runtime.ops import Noise
from nasc.runtime.relaxations.base import MixedEdge, SharedReLU

Entry = tuple[str, int, int]  # (edge key, source state, α row; -1 when not searchable)


def _steps(candidate: nn.Module) -> list[nn.Module]:
    return list(candidate) if isinstance(candidate, nn.Sequential) else [candidate]


def _batchable(m: nn.Module) -> bool:
    """Modules whose k copies (same hyperparameters, own parameters) can run as one call."""
    kind = type(m)
    if kind in (nn.ReLU, SharedReLU):
        return not m.inplace
    if kind is nn.Conv2d:
        return m.padding_mode == "zeros"
    if kind is nn.BatchNorm2d:
        return m.track_running_stats and m.momentum is not None
    if kind is nn.MaxPool2d:
        return not m.return_indices
    return kind in (nn.AvgPool2d, nn.Identity)


def edge_signature(edge: nn.Module) -> tuple | None:
    """What must be equal for two edges to be grouped; None when this edge is never grouped."""
    if type(edge) is not MixedEdge or not edge.share:
        return None
    if any(isinstance(m, (Noise, nn.Dropout)) for m in edge.modules()):
        return None
    return tuple(edge.names), tuple(repr(c) for c in edge.candidates)  # repr: types and hyperparameters


class EdgeGroup:
    """k mixed edges reading one state, with the same candidates; `__call__` gives all k outputs."""

    def __init__(self, edges: list[MixedEdge], rows: list[int]):
        self.edges, self.rows, self.k = list(edges), list(rows), len(edges)
        first = edges[0]
        self.programs: list[tuple[str, list[tuple[nn.Module, ...]]]] = []
        for o in range(len(first.candidates)):
            # positions: the k edges' modules at each step of candidate o
            positions = list(zip(*(_steps(e.candidates[o]) for e in edges)))
            if first.zero[o]:
                kind = "zero"  # never computed; its weight still normalises the others
            elif all(_batchable(m) for m in _steps(first.candidates[o])):
                kind = "batched"
            else:
                kind = "each"
            self.programs.append((kind, positions))
        if all(kind == "zero" for kind, _ in self.programs):  # as MixedEdge: compute the first zero
            self.programs[0] = ("each", self.programs[0][1])
        self._rows: dict[torch.device, torch.Tensor] = {}
        self._flats: dict[tuple[int, str], torch.Tensor] = {}

    def modules(self) -> Iterable[nn.Module]:
        for e in self.edges:
            yield from e.modules()

    def __call__(self, x: torch.Tensor, w_ops: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), w_ops (rows, O) -> (B, k, C', H', W'), edge e's mixture at [:, e]."""
        w = w_ops.index_select(0, self._row_index(w_ops.device)).t()  # (O, k)
        shared: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        acc = None
        try:
            for o, (kind, positions) in enumerate(self.programs):
                if kind == "zero":
                    continue
                if kind == "batched":
                    out = self._run(positions, x, shared)
                else:
                    out = torch.stack([e.candidates[o](x) for e in self.edges], dim=1)  # (B, k, C', H', W')
                wo = w[o].to(out.dtype).view(1, self.k, 1, 1, 1)
                acc = out * wo if acc is None else torch.addcmul(acc, out, wo)
        finally:
            for e in self.edges:  # candidates run edge by edge may have filled their edge's ReLU cache
                e._relu.key = e._relu.value = None
        return acc

    # ---- one batched candidate ----
    def _run(self, positions: list[tuple[nn.Module, ...]], x: torch.Tensor,
             shared: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Returns (B, k, C', H', W'), or (B, 1, C', H', W') when every step was shared by the k edges."""
        k = self.k
        t, batched = x, k == 1  # batched: t is (B, k·C, H, W), edge-major
        for mods in positions:
            m = mods[0]
            if isinstance(m, nn.ReLU):
                t = torch.relu(t) if batched else self._once("relu", t, shared, torch.relu)
            elif isinstance(m, nn.Conv2d):
                if not batched and m.groups > 1:  # grouped convs need each edge's own copy of the input
                    t = self._once("repeat", t, shared, lambda u: _copies(u, k))
                    batched = True
                groups = m.groups * k if batched else 1
                t = F.conv2d(t, _cat(mm.weight for mm in mods), _cat_or_none(mm.bias for mm in mods),
                             m.stride, m.padding, m.dilation, groups)
                batched = True
            elif isinstance(m, nn.BatchNorm2d):
                if not batched and m.training and not m.affine:
                    t = self._shared_bn(mods, t)
                    continue
                if not batched:
                    t = self._once("repeat", t, shared, lambda u: _copies(u, k))
                    batched = True
                t = self._batched_bn(mods, t)
            elif not isinstance(m, nn.Identity):  # pooling: per channel, parameter-free
                t = m(t)
        return t.unflatten(1, (k, -1)) if batched else t.unsqueeze(1)

    @staticmethod
    def _once(name: str, t: torch.Tensor, shared: dict, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """fn(t), computed once per group call for the same tensor (one ReLU of the state for every conv)."""
        hit = shared.get(name)
        if hit is None or hit[0] is not t:
            hit = shared[name] = (t, fn(t))
        return hit[1]

    def _batched_bn(self, mods: tuple[nn.Module, ...], t: torch.Tensor) -> torch.Tensor:
        m = mods[0]
        mean, var = self._linked(mods, "running_mean"), self._linked(mods, "running_var")
        if m.training and m.num_batches_tracked is not None:  # None while recomputed (runtime/supernet.py)
            self._linked(mods, "num_batches_tracked").add_(1)
        weight = _cat(mm.weight for mm in mods) if m.affine else None
        bias = _cat(mm.bias for mm in mods) if m.affine else None
        return F.batch_norm(t, mean, var, weight, bias, m.training, m.momentum, m.eps)

    def _shared_bn(self, mods: tuple[nn.Module, ...], t: torch.Tensor) -> torch.Tensor:
        """k affine-free BNs in training mode on one tensor: one output, k running-statistics updates."""
        m = mods[0]
        out = F.batch_norm(t, None, None, None, None, True, 0.0, m.eps)
        if m.num_batches_tracked is None:  # recomputed (runtime/supernet.py): the statistics stay put
            return out
        with torch.no_grad():
            var, mean = torch.var_mean(t.detach(), dim=(0, 2, 3), correction=1)  # BN keeps the unbiased variance
            for name, stat in (("running_mean", mean), ("running_var", var)):
                flat = self._linked(mods, name)
                flat.view(self.k, -1).lerp_(stat.to(flat.dtype), m.momentum)
            self._linked(mods, "num_batches_tracked").add_(1)
        return out

    def _linked(self, mods: tuple[nn.Module, ...], name: str) -> torch.Tensor:
        """One tensor whose slices *are* the k modules' buffers `name`, so one in-place update reaches all.

        Moving the network (`.to`) replaces each buffer by a copy, which breaks the
        link; it is then made again from the buffers' current values.
        """
        bufs = [mm._buffers[name] for mm in mods]
        if len(bufs) == 1:
            return bufs[0]
        key = (id(mods[0]), name)
        flat = self._flats.get(key)
        if flat is None or any(b._base is not flat for b in bufs):
            flat = torch.cat([b.reshape(-1) for b in bufs])
            n = bufs[0].numel()
            for i, mm in enumerate(mods):
                mm._buffers[name] = flat[i * n:(i + 1) * n].view(bufs[i].shape)
            self._flats[key] = flat
        return flat

    def _row_index(self, device: torch.device) -> torch.Tensor:
        index = self._rows.get(device)
        if index is None:
            index = self._rows[device] = torch.tensor(self.rows, dtype=torch.long, device=device)
        return index


def _copies(t: torch.Tensor, k: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, k·C, H, W), k copies edge-major. `cat`, not `repeat`: repeat returns NCHW,
    and a channels-last network then paid a layout copy per call (6% of a CPU step, profiler)."""
    return torch.cat([t] * k, dim=1)


def _cat(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    tensors = list(tensors)
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def _cat_or_none(tensors: Iterable[torch.Tensor | None]) -> torch.Tensor | None:
    tensors = list(tensors)
    return None if tensors[0] is None else _cat(tensors)


def plan_groups(plan: list, edges: nn.ModuleDict) -> tuple[list[EdgeGroup], dict[str, tuple[int, int]]]:
    """Group a cell's searchable edges by source state and signature; lone edges stay edge by edge.

    Returns the groups and, per grouped edge key, (group index, position in the group).
    """
    members: dict[tuple, list[tuple[str, int]]] = {}
    for _, entries, _, _ in plan:
        for key, src, row in entries:
            sig = edge_signature(edges[key]) if row >= 0 else None
            if sig is not None:
                members.setdefault((src, sig), []).append((key, row))
    groups: list[EdgeGroup] = []
    where: dict[str, tuple[int, int]] = {}
    for group in members.values():
        if len(group) < 2:
            continue
        for pos, (key, _) in enumerate(group):
            where[key] = (len(groups), pos)
        groups.append(EdgeGroup([edges[key] for key, _ in group], [row for _, row in group]))
    return groups, where
