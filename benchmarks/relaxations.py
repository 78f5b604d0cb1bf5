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
import torch.nn.functional as F

from nasc.compiler.pipeline import compile_space
from nasc.runtime.relaxations.base import load_relaxation
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


def one_step(net, relax, arch_opt, w_opt, x, y, xv, yv) -> None:
    relax.set_phase("arch")
    arch_opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(net(xv), yv)
    extra = relax.regularizer(net)
    (loss if extra is None else loss + extra).backward()
    relax.before_arch_step(net)
    arch_opt.step()
    relax.after_arch_step(net)
    relax.set_phase("weights")
    w_opt.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
    w_opt.step()
    relax.after_weight_step(net)


def time_and_measure(net, relax, arch_opt, w_opt, batch: int, size: int, repeats: int,
                     device: torch.device) -> tuple[list[float], int, str]:
    """Step times after a warm-up, then the activation memory of one step (CUDA peak, or saved bytes on CPU)."""
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    xv, yv = torch.randn_like(x), torch.randint(0, 10, (batch,), device=device)
    one_step(net, relax, arch_opt, w_opt, x, y, xv, yv)  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        one_step(net, relax, arch_opt, w_opt, x, y, xv, yv)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        one_step(net, relax, arch_opt, w_opt, x, y, xv, yv)
        return times, torch.cuda.max_memory_allocated() - base, "cuda max allocated during one step, above the resident model"
    counter = SavedBytes()
    relax.set_phase("weights")
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
        loss = F.cross_entropy(net(x), y)
    del loss
    return times, counter.total, "bytes saved for backward by one weight-step forward"


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
    times, memory, memory_kind = time_and_measure(net, relax, arch_opt, w_opt, args.batch, 32, args.repeats, device)
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
