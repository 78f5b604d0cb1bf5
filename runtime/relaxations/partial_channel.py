"""PC-DARTS (Xu et al., ICLR 2020): partial channel connections and edge normalisation.

On every searchable edge only the *first* C/K channels of the input go through
the softmax(α)-weighted mixture of candidates (which the supernet builds with
C/K channels, see `edge_channels`); the other C(K−1)/K channels bypass the ops
(MaxPool2d(2, 2) on stride-2 edges). The two parts are concatenated,
[mixed, bypass], and channel-shuffled with K groups: reshape to
(B, K, C/K, H, W), swap dims 1 and 2, flatten — as yuhuixu1993/PC-DARTS
`model_search.py` does (the fixed first C/K channels; its "random" variant's
permutation is a no-op there, so it is not offered).

Edge normalisation: one β per searchable edge, 1e-3·N(0, 1) at start; a node
weights each incoming edge by softmax(β) over that node's incoming edges only.
β trains with α in the same optimiser. Selection scores an op on an edge by
softmax(α)_o · softmax(β)_edge, as the official `genotype()` does.

Deviations from the official code:
* The stride-2 bypass pools with `ceil_mode=True`, so odd feature sizes match
  the strided candidates' ceil(H/2) output (the official code fails there); for
  even sizes it is the same operation.
* The bypass is chosen from the edge's declared stride, not by comparing
  spatial sizes at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from nasc.errors import BuildError
from nasc.runtime.relaxations.base import RELAXATIONS, GroupWeights, MixedEdge, Relaxation, masked_softmax


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, C, H, W) → (B, C, H, W) with channel g·(C/groups) + i moved to position i·groups + g."""
    b, c, h, w = x.shape
    x = x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous()  # (B, C/g, g, H, W)
    return x.view(b, c, h, w)


class PartialChannelEdge(MixedEdge):
    """Σ_o w_o·o(x[:, :C/K]) next to the untouched (or max-pooled) x[:, C/K:], then a channel shuffle."""

    def __init__(self, candidates: list[nn.Module], names: list[str], *, channels: int, k: int, stride: int):
        if stride not in (1, 2):
            raise BuildError(f"partial-channel edges support stride 1 or 2, got stride {stride}")
        super().__init__(candidates, names)
        self.k = k
        self.channels = channels
        self.part = channels // k
        self.stride = stride
        # MaxPool2d(2, 2) is the official bypass for reduction edges; with k = 1 nothing bypasses the ops
        self.bypass = nn.MaxPool2d(2, 2, ceil_mode=True) if stride == 2 and k > 1 else None

    def forward(self, x: torch.Tensor, w: torch.Tensor, active: list[int] | None = None) -> torch.Tensor:
        if self.k == 1:  # every channel through the mixture: edge normalisation alone (PC-DARTS' ablation)
            return super().forward(x, w, active)  # (pooling an empty bypass failed on stride-2 edges)
        xa, xb = x[:, : self.part], x[:, self.part:]  # (B, C/K, H, W), (B, C−C/K, H, W)
        mixed = super().forward(xa, w, active)  # (B, C/K, H', W')
        if self.bypass is not None:
            xb = self.bypass(xb)
        return channel_shuffle(torch.cat([mixed, xb], dim=1), self.k)  # (B, C, H', W')

    def extra_repr(self) -> str:
        return f"channels={self.channels}, k={self.k}, stride={self.stride}"


def node_membership(node_of_row: list[int], device: torch.device | None = None) -> torch.Tensor:
    """(nodes, rows) bool: which rows (edges) feed each destination node."""
    nodes = sorted(set(node_of_row))
    return torch.tensor([[n == m for n in node_of_row] for m in nodes], dtype=torch.bool, device=device)


def node_softmax(beta: torch.Tensor, node_of_row: list[int], member: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(β) over the rows of each destination node separately; (rows,) → (rows,).

    `member` is `node_membership(node_of_row)` on β's device, when the caller keeps one.
    """
    if member is None:
        member = node_membership(node_of_row, beta.device)  # (nodes, rows)
    per_node = torch.softmax(beta.unsqueeze(0).masked_fill(~member, float("-inf")), dim=1)  # (nodes, rows)
    return per_node.sum(0)  # each row belongs to exactly one node


@RELAXATIONS.register("partial-channel")
class PartialChannel(Relaxation):
    """PC-DARTS: the mixture runs on 1/k of each edge's channels; β normalises a node's incoming edges."""

    name = "partial-channel"
    graph_safe = True  # nothing is drawn per step: runtime/step.py may capture the step as a CUDA graph
    defaults: dict[str, Any] = {"k": 4, "edge_norm": True}
    presets = {
        "pcdarts": ({"k": 4, "edge_norm": True},
                    {"batch": 256, "lr": 0.1, "lr_min": 0.0, "arch_lr": 6e-4, "arch_start": 15}),
    }

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        k = self.options["k"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise BuildError(f"partial-channel option k must be a positive integer, got {k!r}")
        if not isinstance(self.options["edge_norm"], bool):
            raise BuildError(f"partial-channel option edge_norm must be true or false, "
                             f"got {self.options['edge_norm']!r}")
        self.k = k
        self.edge_norm = self.options["edge_norm"]
        self._generator: torch.Generator | None = None
        # node membership per (rows, device), built once: a host-to-device copy in every forward pass
        # would stop runtime/step.py from capturing the step as a CUDA graph (graph_safe)
        self._members: dict[tuple, torch.Tensor] = {}

    # ---- construction ----
    def setup(self, ir: Any, net: nn.Module) -> None:
        chains = [g for g, info in ir.alpha_groups.items() if info["kind"] != "cell"]
        if chains:
            raise BuildError(f"partial-channel applies to cell edges only; group {chains[0]!r} is a chain choice",
                             hint="use softmax or binary-gate for chain spaces")

    def edge_channels(self, channels: int) -> int:
        if channels % self.k:
            raise BuildError(f"partial-channel with k = {self.k} needs edge channels divisible by {self.k}, "
                             f"got {channels}", hint="change C or k")
        return channels // self.k

    def make_edge(self, candidates: list[nn.Module], names: list[str], *, channels: int, stride: int) -> nn.Module:
        self.edge_channels(channels)
        return PartialChannelEdge(candidates, names, channels=channels, k=self.k, stride=stride)

    def init_alpha(self, rows: int, cols: int, generator: torch.Generator | None = None) -> torch.Tensor:
        self._generator = generator  # β of the same group is drawn from the same stream, right after α
        return super().init_alpha(rows, cols, generator)

    def extra_parameters(self, group: str, rows: int, node_of_row: list[int]) -> dict[str, torch.Tensor]:
        if not self.edge_norm:
            return {}
        return {"beta": 1e-3 * torch.randn(rows, generator=self._generator)}

    # ---- every forward pass ----
    def group_weights(self, alpha: torch.Tensor, mask: torch.Tensor, extras: Mapping[str, torch.Tensor],
                      node_of_row: list[int]) -> GroupWeights:
        ops = masked_softmax(alpha, mask)
        edges = self._node_softmax(extras["beta"], node_of_row) if self.edge_norm else None
        return GroupWeights(ops, edges)

    def _node_softmax(self, beta: torch.Tensor, node_of_row: list[int]) -> torch.Tensor:
        key = (tuple(node_of_row), beta.device)
        member = self._members.get(key)
        if member is None:
            member = self._members[key] = node_membership(node_of_row, beta.device)
        return node_softmax(beta, node_of_row, member)

    # ---- selection ----
    def edge_strengths(self, alpha: torch.Tensor, mask: torch.Tensor, extras: Mapping[str, torch.Tensor],
                       node_of_row: list[int]) -> torch.Tensor | None:
        if not self.edge_norm:
            return None
        return self._node_softmax(extras["beta"].detach(), node_of_row)
