"""One search step (α step + weight step) per relaxation × lowering × batch: time and memory.

Usage:  python benchmarks/search_step.py [--batches 64 256] [--C 16] [--layers 8] [--size 32]
                                         [--repeats 2] [--only softmax gumbel] [--out FILE]

Lowerings are search settings (the same maths: tests/runtime/test_memory_modes.py, test_fuse.py,
test_step.py). The first four are ablations in NCHW tensors with CUDA graphs off; the others are what a
search runs, settings left to their defaults unless named:
  plain         every candidate output kept for backward, no shared work, edge by edge, NCHW: the naive
                lowering every other row is compared with
  recompute     plain, but mixed edges keep only their input and recompute their candidates in backward
  shared        (--lowerings) plain + shared work within each edge (`none` never computed, one ReLU per
                edge for its convolutions)
  fused         plain + shared work + fused edge groups (the edges that read one state run together:
                one ReLU and pooling, one grouped conv per candidate; runtime/fuse.py)
  default       what `nasc search --memory plain` runs here: shared work, channels-last tensors, fused
                groups and CUDA graphs on a GPU (edge by edge on a CPU)
  optimised     what `--memory recompute` runs here: `default` with recomputation
  plain+graphs  (--lowerings) `default` with fused groups on any device
  compiled      (--lowerings) fused groups, every cell torch.compile'd (inductor) and checked against a
                float64 copy first (runtime/compiled.py), no CUDA graphs; the row records the compile
                time and how many cells passed the check
  compiled+graphs  (--lowerings) `plain+graphs` with compiled cells
The step is the search loop's own (`runtime/step.SearchStep`): first-order α step on a validation
batch, then the weight step with gradient clipping, DARTS' optimiser settings.
Memory: on CUDA the peak allocated bytes of the step above the resident model; on CPU the bytes autograd
saves for backward during the weight step's forward (saved-tensor hooks, each storage counted once).
Writes JSON (default benchmarks/results/search_step-<device>.json) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from nasc.runtime.step import SearchStep

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RELAXATIONS, label, machine, make_step, time_step  # noqa: E402

NCHW_ABLATION = {"channels_last": False, "cuda_graphs": False}
AS_A_SEARCH = {"cuda_graphs": None}  # None: CUDA graphs where the step allows, as a search decides
# name -> search settings (runtime/config.SearchConfig fields)
LOWERINGS: dict[str, dict] = {
    "plain": {"memory": "plain", "share_work": False, **NCHW_ABLATION},
    "recompute": {"memory": "recompute", "share_work": False, **NCHW_ABLATION},
    "shared": {"memory": "plain", "fuse_edges": False, **NCHW_ABLATION},
    "fused": {"memory": "plain", "fuse_edges": True, **NCHW_ABLATION},
    "default": {"memory": "plain", **AS_A_SEARCH},
    "optimised": {"memory": "recompute", **AS_A_SEARCH},
    "plain+graphs": {"memory": "plain", "fuse_edges": True, **AS_A_SEARCH},
    "compiled": {"memory": "plain", "fuse_edges": True, "cuda_graphs": False, "torch_compile": True},
    "compiled+graphs": {"memory": "plain", "fuse_edges": True, "torch_compile": True, **AS_A_SEARCH},
}
FAST = ("default", "optimised", "plain+graphs", "compiled+graphs")  # --precision applies to these


def run(name: str, options: dict, lowering: str, batch: int, args, device: torch.device) -> dict:
    fast = lowering in FAST
    settings = {**LOWERINGS[lowering], "precision": args.precision if fast else "fp32"}
    if not args.channels_last:
        settings["channels_last"] = False
    step = make_step(name, options, C=args.C, layers=args.layers, size=args.size, batch=batch, device=device,
                     settings=settings)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = fast
    compiled = {}
    if step.cfg.torch_compile:
        compiled = _compile(step, batch, args.size, device)
    times, memory = time_step(step, batch, args.size, args.repeats, device)
    return {"relaxation": label(name, options), "lowering": lowering, "batch": batch,
            "step_seconds_median": statistics.median(times), "step_seconds": times, "memory_bytes": memory,
            "cuda_graphs": step.uses_graphs and step.replays > 0, "graph_blocker": step.blocker,
            "precision": step.cfg.precision, "channels_last": bool(step.cfg.channels_last), **compiled}


def _compile(step: SearchStep, batch: int, size: int, device: torch.device) -> dict:
    """torch.compile every cell (each checked against eager) as a search does; how long and how many passed."""
    from nasc.runtime.compiled import compile_cells

    example = torch.randn(batch, 3, size, size, device=device)
    if step.cfg.channels_last:
        example = example.contiguous(memory_format=torch.channels_last)
    step.relax.set_phase("weights")
    t0 = time.perf_counter()
    report = compile_cells(step.net, example, autocast=step.autocast, precision=step.cfg.precision)
    done = sum(v == "compiled" for v in report.values())
    return {"compile_seconds": round(time.perf_counter() - t0, 1), "compiled_cells": f"{done}/{len(report)}",
            "eager_cells": {k: v for k, v in report.items() if v != "compiled"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--C", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--lowerings", nargs="*", default=["plain", "recompute", "fused", "default", "optimised"],
                        choices=list(LOWERINGS))
    parser.add_argument("--precision", default="fp32", help=f"fp32 or bf16 for {', '.join(FAST)}")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="--no-channels-last: NCHW tensors in every lowering")
    parser.add_argument("--out")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for name, options in RELAXATIONS:
        if args.only and name not in args.only:
            continue
        for batch in args.batches:
            for lowering in args.lowerings:
                try:
                    rows.append(run(name, options, lowering, batch, args, device))
                except torch.cuda.OutOfMemoryError:
                    rows.append({"relaxation": name, "lowering": lowering, "batch": batch, "error": "out of memory"})
                    torch.cuda.empty_cache()
                except Exception as e:  # noqa: BLE001 - report and go on
                    rows.append({"relaxation": name, "lowering": lowering, "batch": batch,
                                 "error": f"{type(e).__name__}: {str(e)[:300]}"})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {"benchmark": "search_step", "C": args.C, "layers": args.layers, "input": [3, args.size, args.size],
              "machine": machine(device), "rows": rows}
    out = Path(args.out or f"benchmarks/results/search_step-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print("| relaxation | batch | lowering | step time (s) | memory (MiB) | time vs plain | memory vs plain | graphs |")
    print("|---|---:|---|---:|---:|---:|---:|---|")
    plain = {(r["relaxation"], r["batch"]): r for r in rows if r.get("lowering") == "plain" and "error" not in r}
    for r in rows:
        if "error" in r:
            print(f"| {r['relaxation']} | {r['batch']} | {r['lowering']} | error: {r['error']} | | | | |")
            continue
        p = plain.get((r["relaxation"], r["batch"]))
        time_ratio = f"{r['step_seconds_median'] / p['step_seconds_median']:.2f}x" if p else "–"
        memory_ratio = f"{r['memory_bytes'] / p['memory_bytes']:.2f}x" if p else "–"
        print(f"| {r['relaxation']} | {r['batch']} | {r['lowering']} | {r['step_seconds_median']:.3f} "
              f"| {r['memory_bytes'] / 2**20:.1f} | {time_ratio} | {memory_ratio} "
              f"| {'yes' if r['cuda_graphs'] else 'no'} |")


if __name__ == "__main__":
    main()
