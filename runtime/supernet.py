"""Lowering: compiled IR → a plain PyTorch network (a supernet, or a derived network).

The IR is read once here; `forward` only walks precomputed integer plans and
`nn.ModuleDict`s (networkx never runs per step). Candidate modules are built
from the same `place` the compiler's cost model uses, so parameter counts
agree with `nasc compile` by construction.

A supernet has several candidates on searchable edges, combined by the
relaxation's mixed edge and weighted per α group; a derived network (one
candidate per edge, `searching=False`) is built by the same code with no
relaxation at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from nasc.compiler.infer_shapes import cell_affine
from nasc.compiler.instantiate import place
from nasc.compiler.ir import SpaceIR, Step
from nasc.errors import BuildError
from nasc.runtime.fuse import EdgeGroup, plan_groups
from nasc.runtime.ops import build_step
from nasc.runtime.relaxations.base import GroupWeights, Relaxation


def build_steps(steps: tuple[Step, ...], *, c_in: int, c: int, h: int | None, searching: bool,
                affine: bool) -> nn.Module:
    """One op (a pipeline of primitives) as a module; a single primitive is returned bare."""
    placed = place(steps, c_in=c_in, c=c, h=h, searching=searching, affine=affine)
    mods = [build_step(p.prim, p.c_in, p.c_out, p.args, affine=p.affine, counted=p.params) for p in placed]
    if not mods:
        return nn.Identity()
    return mods[0] if len(mods) == 1 else nn.Sequential(*mods)


class _Recomputed:
    """Calls `fn` so torch.utils.checkpoint can re-run it in backward with BN statistics left alone.

    Recomputation would otherwise update every BN's running statistics and batch
    counter a second time. During the re-run each BN has momentum 0 (its
    statistics stay put; the re-run must save the same tensors for backward as
    the first run, so they are still passed) and no batch counter (not counted);
    both are plain attributes, put back afterwards with no tensor work. That keeps
    `recompute` numerically identical to the plain lowering, running statistics included.
    """

    def __init__(self, modules: Callable[[], Any], fn: Callable[..., torch.Tensor]):
        self.modules, self.fn, self.calls = modules, fn, 0

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == 1:
            return self.fn(*args)
        bns = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [(m.momentum, m._buffers.get("num_batches_tracked")) for m in bns]
        for m in bns:
            m.momentum = 0.0
            if "num_batches_tracked" in m._buffers:
                m._buffers["num_batches_tracked"] = None
        try:
            return self.fn(*args)
        finally:
            for m, (momentum, counter) in zip(bns, saved):
                m.momentum = momentum
                if counter is not None:
                    m._buffers["num_batches_tracked"] = counter


def _plain_call(edge: nn.Module, x: torch.Tensor, w: torch.Tensor, active: list[int] | None) -> torch.Tensor:
    cache = getattr(edge, "_relu", None)  # a MixedEdge's shared-ReLU cache lives for one call only
    if cache is not None:
        cache.key = cache.value = None
    try:
        return edge(x, w) if active is None else edge(x, w, active)
    finally:
        if cache is not None:
            cache.key = cache.value = None


def _checkpointed(modules: Callable[[], Any], fn: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
    # a CUDA graph capture cannot read the RNG state; runtime/step.py captures no random edges
    keep_rng = not (args[0].is_cuda and torch.cuda.is_current_stream_capturing())
    return checkpoint(_Recomputed(modules, fn), *args, use_reentrant=False, preserve_rng_state=keep_rng)


def call_edge(edge: nn.Module, x: torch.Tensor, w: torch.Tensor, active: list[int] | None,
              recompute: bool) -> torch.Tensor:
    """A searchable edge; with `recompute` only its input and weights are kept for backward."""
    if recompute and torch.is_grad_enabled() and edge.training:
        return _checkpointed(edge.modules, lambda x, w: _plain_call(edge, x, w, active), x, w)
    return _plain_call(edge, x, w, active)


def call_group(group: EdgeGroup, x: torch.Tensor, w: torch.Tensor, recompute: bool) -> torch.Tensor:
    """The edges of one source state at once (runtime/fuse.py); `recompute` as for one edge."""
    if recompute and torch.is_grad_enabled() and group.edges[0].training:
        return _checkpointed(group.modules, group, x, w)
    return group(x, w)


def drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """Zero whole samples with probability p and rescale the rest (DARTS' ScheduledDropPath)."""
    keep = 1.0 - p
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)  # (B, 1, 1, 1)
    return x / keep * mask


class Cell(nn.Module):
    """A cell instance: preprocessing per input, one module per edge, an integer plan."""

    def __init__(self, pre: list[nn.Module], edges: dict[str, nn.Module],
                 plan: list[tuple[int, list[tuple[str, int, int]], str, tuple[int, int]]],
                 output: tuple[str, list[int]]):
        super().__init__()
        self.pre = nn.ModuleList(pre)
        self.edges = nn.ModuleDict(edges)
        # per node: (state index, [(edge key, source state index, α row or -1)], combine, zero shape)
        self.plan = plan
        self.output = output
        self.recompute = False  # set by Network.set_memory
        # edges of one source computed together (runtime/fuse.py); set by Network.set_memory
        self.groups: list[EdgeGroup] = []
        self.group_of: dict[str, tuple[int, int]] = {}
        # torch.compile'd forward and the input shapes it was checked on (runtime/compiled.py)
        self.compiled: Callable[..., torch.Tensor] | None = None
        self.compiled_shapes: list[tuple[int, ...]] | None = None

    def fuse(self, on: bool) -> None:
        self.groups, self.group_of = plan_groups(self.plan, self.edges) if on else ([], {})

    def run(self, inputs: list[torch.Tensor], w: GroupWeights | None, drop_prob: float = 0.0) -> torch.Tensor:
        """The compiled forward where it was checked against eager (these shapes, training, gradients on)."""
        fn = self.compiled
        if (fn is not None and self.training and torch.is_grad_enabled() and drop_prob == 0.0
                and (w is None or w.active is None) and [tuple(t.shape) for t in inputs] == self.compiled_shapes):
            return fn(inputs, w, drop_prob)
        return self(inputs, w, drop_prob)

    def forward(self, inputs: list[torch.Tensor], w: GroupWeights | None, drop_prob: float = 0.0) -> torch.Tensor:
        states = [pre(x) for pre, x in zip(self.pre, inputs)]
        grouped = self.group_of if w is not None and w.active is None else {}
        group_out: dict[int, torch.Tensor] = {}  # group index -> (B, k, C, H, W)
        for _, edges, combine, zero_shape in self.plan:
            parts = []
            for key, src, row in edges:
                edge = self.edges[key]
                if row < 0:
                    out = edge(states[src])
                    if drop_prob > 0 and not isinstance(edge, nn.Identity):
                        out = drop_path(out, drop_prob)
                elif key in grouped:
                    gi, pos = grouped[key]
                    if gi not in group_out:
                        group_out[gi] = call_group(self.groups[gi], states[src], w.ops, self.recompute)
                    out = group_out[gi][:, pos]
                    if w.edges is not None:
                        out = out * w.edges[row]
                else:
                    active = None if w.active is None else w.active[row]
                    if active is not None and not active:
                        continue  # the relaxation dropped this edge for this pass (ROME's topology sample)
                    out = call_edge(edge, states[src], w.ops[row], active, self.recompute)
                    if w.edges is not None:
                        out = out * w.edges[row]
                if row >= 0 and drop_prob > 0:  # search-time drop path on the whole mixture (RobustDARTS)
                    out = drop_path(out, drop_prob)
                parts.append(out)
            if not parts:  # every input edge was removed: a constant zero state
                ref = states[0]
                states.append(ref.new_zeros(ref.shape[0], zero_shape[0], zero_shape[1], zero_shape[1]))
                continue
            s = sum(parts)
            states.append(s / len(parts) if combine == "mean" else s)
        kind, idx = self.output
        if kind == "concat":
            return torch.cat([states[i] for i in idx], dim=1)  # (B, n·C, H, W)
        return states[idx[0]]


class Choice(nn.Module):
    """A chain block choosing one op (ProxylessNAS): mixed edge plus an optional identity shortcut."""

    def __init__(self, edge: nn.Module, residual: bool, searchable: bool):
        super().__init__()
        self.edge = edge
        self.residual = residual
        self.searchable = searchable
        self.recompute = False

    def forward(self, x: torch.Tensor, w: GroupWeights | None) -> torch.Tensor:
        if not self.searchable:
            out = self.edge(x)
        else:
            out = call_edge(self.edge, x, w.ops[0], None if w.active is None else w.active[0], self.recompute)
        return out + x if self.residual else out


class Network(nn.Module):
    """A lowered space: stem, cells / fixed layers / choice blocks, head (and aux head when derived)."""

    def __init__(self, ir: SpaceIR, relax: Relaxation | None, searching: bool,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.space = ir.name
        self.fingerprint = ir.meta.get("fingerprint")
        self.relax = relax
        self.searching = searching
        self.layers = nn.ModuleDict()
        self.alphas = nn.ParameterDict()
        self.arch_extras = nn.ParameterDict()  # "<group>__<name>" -> tensor
        self.group_rows: dict[str, list[str]] = {}
        self.group_ops: dict[str, list[list[str]]] = {}
        self.group_nodes: dict[str, list[int]] = {}
        self.masks: dict[str, torch.Tensor] = {}
        self.schedule: list[tuple[str, str, list[str], str | None]] = []
        self.aux_ids: list[str] = []
        self.aux_weight = 0.0
        self.drop_path_prob = 0.0  # set per epoch by `nasc train` and `nasc search`; applied only in training mode
        # selectors that edit the mixture (DARTS-PT projects decided edges) install a function here
        self.weight_transform = None
        shapes = ir.meta["shapes"]
        group_of: dict[str, str] = {}
        for gname, g in ir.alpha_groups.items():
            for lid in g["layers"]:
                group_of[lid] = gname
        if relax is None and ir.alpha_groups:
            raise BuildError(f"space {ir.name!r} still has choices to make; build it with a relaxation "
                             "(a supernet) or specialise it to a genotype first")
        for gname, g in ir.alpha_groups.items():
            rows = [r["edge"] for r in g["rows"]]
            ops = [list(r["ops"]) for r in g["rows"]]
            cols = max(len(o) for o in ops)
            mask = torch.zeros(len(rows), cols, dtype=torch.bool)
            for i, o in enumerate(ops):
                mask[i, : len(o)] = True
            nodes = self._row_nodes(ir, g, rows)
            self.group_rows[gname], self.group_ops[gname], self.group_nodes[gname] = rows, ops, nodes
            self.masks[gname] = mask
            self.register_buffer(f"mask_{gname}", mask, persistent=False)
            self.alphas[gname] = nn.Parameter(relax.init_alpha(len(rows), cols, generator))
            for ename, tensor in relax.extra_parameters(gname, len(rows), nodes).items():
                self.arch_extras[f"{gname}__{ename}"] = nn.Parameter(tensor)
        for layer in ir.layers():
            s = shapes[layer.id]
            sources = [u for u, _, _ in sorted(ir.macro.in_edges(layer.id, data=True), key=lambda e: e[2]["slot"])]
            if layer.kind == "aux" and searching:
                continue
            if layer.kind == "cell":
                module = self._cell(ir, layer, s, group_of.get(layer.id))
            elif layer.kind == "choice":
                module = self._choice(ir, layer, s, group_of.get(layer.id))
            else:
                module = build_steps(layer.steps, c_in=s["c_in"][0], c=s["c_in"][0], h=s["h_in"][0],
                                     searching=searching, affine=True)
            self.layers[layer.id] = module
            if layer.kind == "aux":
                self.aux_ids.append(layer.id)
                self.aux_weight = layer.weight or 0.0
            self.schedule.append((layer.id, layer.kind, sources, group_of.get(layer.id)))

    # ---- construction helpers ----
    @staticmethod
    def _row_nodes(ir: SpaceIR, group: dict, rows: list[str]) -> list[int]:
        if group["kind"] != "cell":
            return [0 for _ in rows]
        g = ir.cells[group["cell"]]
        by_key = {e.key: e for e in ir.cell_edges(group["cell"])}
        return [g.nodes[by_key[r].dst]["index"] for r in rows]

    def _candidates(self, ir: SpaceIR, names, stride: int, c_in: int, c: int, h: int, affine: bool):
        return [build_steps(ir.impl(op, stride), c_in=c_in, c=c, h=h, searching=self.searching, affine=affine)
                for op in names]

    def _cell(self, ir: SpaceIR, layer, s: dict, group: str | None) -> Cell:
        g = ir.cells[layer.cell]
        affine = cell_affine(ir, self.searching)
        width = s["width"]
        pre = []
        for slot, stride in enumerate(s["pre"]):
            if stride is None:
                pre.append(nn.Identity())
            else:
                pre.append(build_steps(ir.impls[f"preprocess@{stride}"], c_in=s["c_in"][slot], c=width,
                                       h=s["h_in"][slot], searching=self.searching, affine=affine))
        rows = {key: i for i, key in enumerate(self.group_rows.get(group, []))}
        index = {n: g.nodes[n]["index"] for n in g.nodes}
        edges: dict[str, nn.Module] = {}
        plan = []
        for node in g.graph["nodes"]:
            entries = []
            for src in sorted(g.predecessors(node), key=lambda n: index[n]):
                e = g.edges[src, node]["edge"]
                c, h = s["states"][src]
                if len(e.candidates) > 1:
                    ce = self.relax.edge_channels(c)
                    cands = self._candidates(ir, e.candidates, e.stride, ce, ce * width // c, h, affine)
                    edges[e.key] = self.relax.make_edge(cands, list(e.candidates), channels=c, stride=e.stride)
                    entries.append((e.key, index[src], rows[e.key]))
                else:
                    edges[e.key] = self._candidates(ir, e.candidates, e.stride, c, width, h, affine)[0]
                    entries.append((e.key, index[src], -1))
            c_node, h_node = s["states"][node]
            plan.append((index[node], entries, g.nodes[node].get("combine", "sum"), (c_node, h_node)))
        out = g.graph["output"]
        return Cell(pre, edges, plan, (out.kind, [index[n] for n in out.states]))

    def _choice(self, ir: SpaceIR, layer, s: dict, group: str | None) -> Choice:
        cands = self._candidates(ir, layer.candidates, layer.stride, s["c_in"][0], layer.width, s["h_in"][0], True)
        if len(cands) > 1:
            edge = self.relax.make_edge(cands, list(layer.candidates), channels=s["c_in"][0], stride=layer.stride)
            return Choice(edge, layer.residual, True)
        return Choice(cands[0], layer.residual, False)

    # ---- lowering choices ----
    def set_memory(self, mode: str, *, share: bool = True, fuse: bool = False) -> None:
        """`plain` keeps every candidate output for backward; `recompute` keeps only edge inputs.

        `share` turns the exact shared-work savings of mixed edges on or off; `fuse` (with `share`)
        computes the mixed edges that read one state together (runtime/fuse.py).
        """
        if mode not in ("plain", "recompute"):
            raise BuildError(f"unknown memory mode {mode!r}", hint="plain or recompute (auto is resolved earlier)")
        for m in self.modules():
            if isinstance(m, (Cell, Choice)):
                m.recompute = mode == "recompute"
            if hasattr(m, "share"):
                m.share = share
        for m in self.modules():  # after `share`: grouping needs the shared-work edges
            if isinstance(m, Cell):
                m.fuse(fuse and share)
                m.compiled = m.compiled_shapes = None  # compiled for the old lowering: compile again
        self.memory_mode = mode

    # ---- parameters ----
    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.values()) + list(self.arch_extras.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def extras(self, group: str) -> dict[str, torch.Tensor]:
        prefix = f"{group}__"
        return {k[len(prefix):]: v for k, v in self.arch_extras.items() if k.startswith(prefix)}

    def mask(self, group: str) -> torch.Tensor:
        return getattr(self, f"mask_{group}")

    def group_weights(self) -> dict[str, GroupWeights]:
        """Every group's weights for one forward pass (sampled once per pass, shared by its cells).

        Computed outside any autocast region: α and its softmax stay in fp32 under bf16 training.
        """
        device_type = next(iter(self.alphas.values())).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            weights = {g: self.relax.group_weights(a, self.mask(g), self.extras(g), self.group_nodes[g])
                       for g, a in self.alphas.items()}
        for g, w in weights.items():  # a plugin's slip would otherwise surface deep in a cell, as nasc's bug
            shape = tuple(self.alphas[g].shape)
            if not isinstance(w, GroupWeights) or not isinstance(w.ops, torch.Tensor) or tuple(w.ops.shape) != shape:
                got = (f"GroupWeights with ops of shape {tuple(w.ops.shape)}" if isinstance(w, GroupWeights)
                       and isinstance(w.ops, torch.Tensor) else type(w).__name__)
                raise BuildError(f"relaxation {self.relax.name!r}: group_weights returned {got} for α group {g!r}; "
                                 f"it must return GroupWeights(ops) with ops of α's shape {shape}",
                                 hint="wrap the weights: GroupWeights(w) (nasc.runtime.relaxations.base)")
        return weights

    # ---- forward ----
    def forward(self, x: torch.Tensor, *, weights: dict[str, GroupWeights] | None = None,
                with_aux: bool = False) -> Any:
        if weights is None and self.alphas:
            weights = self.group_weights()
            if self.weight_transform is not None:
                weights = self.weight_transform(weights)
        outputs: dict[str, torch.Tensor] = {}
        logits = aux = None
        for lid, kind, sources, group in self.schedule:
            ins = [outputs[s] for s in sources] if sources else [x]
            module = self.layers[lid]
            w = weights.get(group) if (weights and group) else None
            if kind == "cell":
                out = module.run(ins, w, self.drop_path_prob if self.training else 0.0)
            elif kind == "choice":
                out = module(ins[0], w)
            else:
                out = module(ins[0])
            if kind == "head":
                logits = out
            elif kind == "aux":
                aux = out
            else:
                outputs[lid] = out
        if with_aux:
            return logits, aux
        return logits


def build_supernet(ir: SpaceIR, relax: Relaxation, *, generator: torch.Generator | None = None) -> Network:
    """The supernet of a compiled space under a relaxation."""
    return Network(ir, relax, searching=True, generator=generator)


def build_network(ir: SpaceIR) -> Network:
    """A derived network (every edge one op, BN affine, no search-only steps)."""
    return Network(ir, None, searching=False)
