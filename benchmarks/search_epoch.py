"""Wall time of a real search on CIFAR-10, epoch by epoch, and what a full search therefore takes.

Usage:  python benchmarks/search_epoch.py [--data-dir DIR | --synthetic] [--run-epochs 2] [--epochs 50]
                                          [--batch 64] [--progress N] [--opt NAME=VALUE ...] [--set NAME=VALUE ...] [--out FILE]

It runs the search loop exactly as `nasc search spaces/darts.nas --data cifar10` does (same
settings, data pipeline, evaluation and checkpoint per epoch) for `--run-epochs` epochs of an
`--epochs`-epoch schedule, then stops and projects the whole search as
    setup + first epoch + (epochs − 1) × median(later epochs)
(the first epoch carries cuDNN autotuning and, with `cuda_graphs`, the capture). Step time does
not depend on pixel values, so `--synthetic` (random images written in CIFAR-10's own file format,
read by the same loader) times the same work when the real set cannot be downloaded.
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from nasc.cli import parse_value
from nasc.runtime.search import Request, prepare, run_search


def write_synthetic_cifar10(root: Path, seed: int = 0) -> Path:
    """Random uint8 images and labels in the layout of cifar-10-batches-py (5 × 10,000 train, 10,000 test)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(10_000, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=10_000).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)
    return root


def _progress(every: int, t0: float):
    """An on_event hook printing how far the search is, so a stalled run shows where it stalled."""
    def show(event: dict) -> None:
        if every and event["type"] == "step" and (event["step"] + 1) % every == 0:
            print(f"  epoch {event['epoch'] + 1} step {event['step'] + 1}/{event['steps']} "
                  f"at {time.perf_counter() - t0:.1f} s", flush=True)
        elif event["type"] == "epoch":
            print(f"  epoch {event['epoch'] + 1} done at {time.perf_counter() - t0:.1f} s", flush=True)
    return show


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="spaces/darts.nas")
    parser.add_argument("--data-dir")
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--run-epochs", type=int, default=2)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--opt", action="append", default=[], help="search setting NAME=VALUE")
    parser.add_argument("--set", action="append", default=[], help="space parameter NAME=VALUE")
    parser.add_argument("--label", default="")
    parser.add_argument("--out")
    parser.add_argument("--progress", type=int, default=0, metavar="N", help="print the pace every N steps")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="nasc-bench-"))
    data_dir = write_synthetic_cifar10(tmp / "data") if args.synthetic else args.data_dir
    overrides = {"dataset": "cifar10", "data_dir": str(data_dir) if data_dir else None, "epochs": args.epochs}
    if args.batch:
        overrides["batch"] = args.batch
    overrides.update({k: parse_value(v) for k, v in (o.split("=", 1) for o in args.opt)})
    params = {k: parse_value(v) for k, v in (o.split("=", 1) for o in args.set)}
    t0 = time.perf_counter()
    job = prepare(Request(space=args.space, params=params, overrides=overrides))
    setup = time.perf_counter() - t0
    run_dir = tmp / "run"
    t1 = time.perf_counter()
    try:
        run_search(job, run_dir, stop_after=args.run_epochs, on_event=_progress(args.progress, t1))
    except KeyboardInterrupt:  # stop_after: the schedule is the full one, we only time its first epochs
        pass
    wall = time.perf_counter() - t1
    timing = [json.loads(line) for line in (run_dir / "timing.jsonl").read_text().splitlines()]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [t["seconds"] for t in timing]
    later = statistics.median(epochs[1:]) if len(epochs) > 1 else epochs[0]
    projected = setup + epochs[0] + (args.epochs - 1) * later
    device = job.device
    result = {
        "benchmark": "search_epoch", "label": args.label, "space": args.space, "params": params,
        "data": "synthetic CIFAR-10 (random pixels, same files and loader)" if args.synthetic else str(data_dir),
        "config": job.config.to_json(), "memory": job.ir.meta.get("memory"),
        "setup_seconds": round(setup, 2), "epoch_seconds": epochs, "wall_seconds": round(wall, 2),
        "images_per_second": [t["images_per_second"] for t in timing],
        "projected_seconds": round(projected, 1), "projected_epochs": args.epochs,
        "last_epoch": next((m for m in reversed(metrics) if m.get("type") == "epoch"), None),
        "machine": {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                    "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
                    "date": time.strftime("%Y-%m-%d")},
    }
    if result["last_epoch"]:
        result["last_epoch"] = {k: v for k, v in result["last_epoch"].items() if k not in ("alpha", "genotype")}
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    print(f"{args.label or 'search'}: setup {setup:.1f} s, epochs {', '.join(f'{e:.1f}' for e in epochs)} s "
          f"-> {args.epochs} epochs ≈ {projected / 60:.1f} min")


if __name__ == "__main__":
    main()
