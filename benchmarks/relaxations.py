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
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RELAXATIONS, label, machine, make_step, time_step  # noqa: E402


def measure(name: str, options: dict, args, device: torch.device) -> dict:
    step = make_step(name, options, C=args.C, layers=args.layers, size=32, batch=args.batch, device=device)
    net = step.net
    times, memory = time_step(step, args.batch, 32, args.repeats, device)
    memory_kind = ("cuda max allocated during one step, above the resident model" if device.type == "cuda"
                   else "bytes saved for backward by one weight-step forward")
    return {
        "relaxation": name,
        "options": options,
        "label": label(name, options),
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
    result = {"benchmark": "relaxations", "space": "darts", "C": args.C, "layers": args.layers, "batch": args.batch,
              "input": [3, 32, 32], "machine": machine(device), "rows": rows}
    out = Path(args.out or f"benchmarks/results/relaxations-{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    base = next((r for r in rows if r.get("relaxation") == "softmax" and "error" not in r), None)
    print("| relaxation | step time (s) | activation memory | vs softmax | weights | α params |")
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
