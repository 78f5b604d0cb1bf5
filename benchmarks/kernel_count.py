"""Operators per search step, by lowering: what bounds a GPU step once CUDA graphs remove the launch cost.

Usage:  python benchmarks/kernel_count.py [--C 16] [--layers 8] [--size 32] [--batch 8] [--out FILE]

On a GPU the DARTS supernet is bound by how many small kernels one step runs, not by arithmetic
(docs/performance.md): with the step replayed from a CUDA graph, each kernel still costs a few
microseconds of GPU time. This script counts the ATen operators that do work in one search step
(a first-order α step, then the weight step with clipping and the optimisers; view and metadata
operators excluded), on the CPU, so lowerings can be compared on any machine. The count does not
depend on the batch size; it is close to, not equal to, the number of GPU kernels (an optimiser's
foreach operator is one count but a few kernels). Lowerings run as on a GPU: with fused edge groups
where a search would fuse them there (`default`, `optimised`), although this runs on the CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_step  # noqa: E402
from search_step import LOWERINGS  # noqa: E402

#: operators that allocate or describe memory but run no kernel
FREE = {"empty", "empty_strided", "empty_like", "detach", "lift_fresh", "_to_copy_meta", "set_", "alias",
        "resize_", "_reshape_alias", "is_same_size"}


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not func.is_view and name not in FREE:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def count(lowering: str, args) -> dict:
    step = make_step("softmax", C=args.C, layers=args.layers, size=args.size, batch=args.batch,
                     device=torch.device("cpu"), settings={"fuse_edges": True, **LOWERINGS[lowering]})
    x, y = torch.randn(args.batch, 3, args.size, args.size), torch.randint(0, 10, (args.batch,))
    xv, yv = torch.randn_like(x), torch.randint(0, 10, (args.batch,))
    if step.cfg.channels_last:
        x, xv = (t.contiguous(memory_format=torch.channels_last) for t in (x, xv))
    step(x, y, xv, yv, lr=0.025, arch_step=True)  # optimiser state exists from here on
    with CountOps() as counter:
        step(x, y, xv, yv, lr=0.025, arch_step=True)
    top = dict(counter.ops.most_common(12))
    return {"lowering": lowering, "operators": sum(counter.ops.values()), "top": top}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--C", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lowerings", nargs="*", default=["plain", "shared", "fused", "recompute", "optimised"],
                        # compiled code runs no ATen ops to count
                        choices=[k for k, v in LOWERINGS.items() if not v.get("torch_compile")])
    parser.add_argument("--out", default="benchmarks/results/kernel_count.json")
    args = parser.parse_args()
    rows = [count(lowering, args) for lowering in args.lowerings]
    result = {"benchmark": "kernel_count", "space": "spaces/darts.nas", "relaxation": "softmax", "C": args.C,
              "layers": args.layers, "input": [3, args.size, args.size], "rows": rows,
              "machine": {"torch": torch.__version__, "python": platform.python_version(),
                          "date": time.strftime("%Y-%m-%d")}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    base = rows[0]["operators"]
    print(f"| lowering | operators per step | vs {rows[0]['lowering']} |")
    print("|---|---:|---:|")
    for r in rows:
        print(f"| {r['lowering']} | {r['operators']:,} | {r['operators'] / base:.2f}x |")


if __name__ == "__main__":
    main()
