"""Step time, activation memory and parameters of one search step, per relaxation.

Usage:  python benchmarks/relaxations.py [--batch 32] [--C 16] [--layers 8] [--repeats 3] [--out results.json]

For the DARTS space at a fixed batch, each relaxation runs full search steps
(an α step on a validation batch, then a weight step) and we record:
- step time (median of --repeats timed steps after one warm-up step),
- activation memory: on CUDA the peak allocated bytes of the step; on CPU the
  bytes of every tensor autograd saves for backward during the step
  (torch.autograd.graph.saved_tensors_hooks; tensors shared between saves are
  counted once), which is what a step keeps alive for its backward pass,
- the supernet's weight and architecture parameter counts.
The JSON goes to --out (default benchmarks/results/relaxations-<device>.json)
and a Markdown table is printed for docs/relaxations.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from nasc.compiler.pipeline import compile_space
from nasc.runtime.config import make_config
from nasc.runtime.relaxations.base import load_relaxation
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


def measure(name: str, options: dict, args, device: torch.device) -> dict:
    space = "spaces/pcdarts.nas" if name == "partial-channel" else "spaces/darts.nas"
    ir = compile_space(space, params={"C": args.C, "layers": args.layers}, input_shape=(3, 32, 32))
    ir.relax = type(ir.relax)(name=name, options=tuple(options.items()))
    torch.manual_seed(0)
    relax = load_relaxation(name, options)
    net = build_supernet(ir, relax).to(device)
    relax.setup(ir, net)
    arch_opt = torch.optim.Adam(net.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    step = SearchStep(net, relax, make_config({}, {"batch": args.batch, "cuda_graphs": False}), w_opt, arch_opt,
                      device=device)
    times, memory = time_step(step, args.batch, 32, args.repeats, device)
    memory_kind = ("cuda max allocated during one step, above the resident model" if device.type == "cuda"
                   else "bytes saved for backward by one weight-step forward")
    return {
        "relaxation": name,
        "options": options,
        "label": f"{name}({', '.join(f'{k}={v}' for k, v in options.items())})" if options else name,
        "step_seconds_median": statistics.median(times),
        "step_seconds": times,
        "activation_bytes": memory,
        "activation_kind": memory_kind,
        "weights": sum(p.numel() for p in net.weight_parameters()),
        "arch_parameters": sum(p.numel() for p in net.arch_parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--C", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", nargs="*", help="relaxation names to run")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    rows = []
    for name, options in RELAXATIONS:
        if args.only and name not in args.only:
            continue
        try:
            rows.append(measure(name, options, args, device))
        except Exception as e:  # noqa: BLE001 - a missing relaxation must not stop the others
            rows.append({"relaxation": name, "options": options, "error": f"{type(e).__name__}: {e}"})
        print(json.dumps(rows[-1]), file=sys.stderr)
    machine = {"device": str(device), "cpu": platform.processor() or platform.machine(),
               "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
               "date": time.strftime("%Y-%m-%d")}
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name()
    result = {"benchmark": "relaxations", "space": "darts", "C": args.C, "layers": args.layers, "batch": args.batch,
              "input": [3, 32, 32], "machine": machine, "rows": rows}
    out = Path(args.out or f"benchmarks/results/relaxations-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    base = next((r for r in rows if r.get("relaxation") == "softmax" and "error" not in r), None)
    print(f"| relaxation | step time (s) | activation memory | vs softmax | weights | α params |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if "error" in r:
            print(f"| {r['relaxation']} | error: {r['error']} | | | | |")
            continue
        ratio = f"{r['activation_bytes'] / base['activation_bytes']:.2f}x" if base else "–"
        print(f"| {r['label']} | {r['step_seconds_median']:.3f} | {r['activation_bytes'] / 2**20:.1f} MiB | {ratio} "
              f"| {r['weights']:,} | {r['arch_parameters']:,} |")


if __name__ == "__main__":
    main()
