"""What the step benchmarks share: the relaxations they cover, how a step is built, timed and measured.

One builder for every script, so that "one search step" means the same thing in
relaxations.py, search_step.py and kernel_count.py: the search loop's own
`SearchStep` (a first-order α step on a validation batch, then the weight step
with gradient clipping) with DARTS' optimiser settings.
"""

from __future__ import annotations

import platform
import time
from typing import Any

import torch

from nasc.compiler.pipeline import compile_space
from nasc.runtime.config import make_config
from nasc.runtime.relaxations.base import load_relaxation
from nasc.runtime.search import choose_fusion, choose_memory
from nasc.runtime.step import SearchStep
from nasc.runtime.supernet import build_supernet

RELAXATIONS = [
    ("softmax", {}),
    ("gumbel", {"hard": True}),
    ("gumbel", {"hard": False}),
    ("binary-gate", {}),
    ("partial-channel", {"k": 4}),
    ("merged-kernel", {}),
    ("dropout-group", {}),
]


def make_step(relaxation: str = "softmax", options: dict | None = None, *, C: int, layers: int, size: int,
              batch: int, device: torch.device, settings: dict[str, Any] | None = None) -> SearchStep:
    """A seeded supernet of the DARTS space (PC-DARTS' for partial-channel) and its search step.

    `settings` are search settings (SearchConfig fields) on top of the batch, with CUDA graphs off unless
    given (`cuda_graphs: None` leaves the search's default, graphs where the step allows); memory mode and
    fused groups are resolved as a search resolves them. With channels_last the
    network is converted, and inputs must be too (`time_step` does it).
    """
    options = options or {}
    space = "spaces/pcdarts.nas" if relaxation == "partial-channel" else "spaces/darts.nas"
    ir = compile_space(space, params={"C": C, "layers": layers}, input_shape=(3, size, size))
    ir.relax = type(ir.relax)(name=relaxation, options=tuple(options.items()))
    cfg = make_config({}, {"batch": batch, "cuda_graphs": False, **(settings or {})})
    torch.manual_seed(0)
    relax = load_relaxation(relaxation, options)
    net = build_supernet(ir, relax).to(device)
    relax.setup(ir, net)
    mode, _ = choose_memory(cfg.memory, ir, batch, device)
    fuse, _ = choose_fusion(cfg, device)
    net.set_memory(mode, share=cfg.share_work, fuse=fuse)
    if cfg.channels_last:
        net.to(memory_format=torch.channels_last)
    arch_opt = torch.optim.Adam(net.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3,
                                capturable=device.type == "cuda")
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    return SearchStep(net, relax, cfg, w_opt, arch_opt, device=device)


def label(relaxation: str, options: dict) -> str:
    return f"{relaxation}({', '.join(f'{k}={v}' for k, v in options.items())})" if options else relaxation


def machine(device: torch.device) -> dict:
    info = {"device": str(device), "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d")}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


class SavedBytes:
    """Counts the bytes autograd saves for backward (each storage once)."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def pack(self, t: torch.Tensor):
        try:
            key = t.untyped_storage().data_ptr()
            self.storages[key] = max(self.storages.get(key, 0), t.untyped_storage().nbytes())
        except (RuntimeError, NotImplementedError):
            pass
        return t

    @staticmethod
    def unpack(t):
        return t

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def time_step(step: SearchStep, batch: int, size: int, repeats: int, device: torch.device) -> tuple[list[float], int]:
    """Step times (after warm-up and, with graphs, the capture), then the step's memory.

    CUDA: peak allocated bytes during one step above what is resident before it (the model, optimiser
    state and, with graphs, the graph's pool). CPU: bytes saved for backward by the weight step's forward.
    """
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    xv, yv = torch.randn_like(x), torch.randint(0, 10, (batch,), device=device)
    if step.cfg.channels_last:
        x, xv = (t.contiguous(memory_format=torch.channels_last) for t in (x, xv))
    for _ in range(4 if step.uses_graphs else 1):  # warm-up (and capture)
        float(step(x, y, xv, yv, lr=0.025, arch_step=True).loss)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = step(x, y, xv, yv, lr=0.025, arch_step=True)
        float(out.loss)  # the search loop reads the loss every step
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        float(step(x, y, xv, yv, lr=0.025, arch_step=True).loss)
        peak = torch.cuda.max_memory_allocated() - base
        if step.uses_graphs:  # a graph's activations live in its pool, allocated at capture: count the pool
            peak = max(peak, torch.cuda.memory_reserved() - base)
        return times, peak
    counter = SavedBytes()
    step.relax.set_phase("weights")
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
        loss = step.loss(x, y)
    del loss
    return times, counter.total
