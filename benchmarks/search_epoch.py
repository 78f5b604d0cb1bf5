"""Wall time of a real search on CIFAR-10, epoch by epoch, and what a full search therefore takes.

Usage:  python benchmarks/search_epoch.py [--data-dir DIR | --synthetic | --dataset digits] [--run-epochs 2] [--epochs 50]
                                          [--batch 64] [--progress N] [--opt NAME=VALUE ...] [--set NAME=VALUE ...] [--out FILE]

It runs the search loop exactly as `nasc search spaces/darts.nas --data cifar10` does (same
settings, data pipeline, evaluation and checkpoint per epoch) for `--run-epochs` epochs of an
`--epochs`-epoch schedule, then stops and projects the whole search as
    setup + first epoch + (epochs − 1) × median(later epochs)
(the first epoch carries cuDNN autotuning and, with `cuda_graphs`, the capture). Step time does
not depend on pixel values, so `--synthetic` (random images written in CIFAR-10's own file format,
read by the same loader) times the same work when the real set cannot be downloaded.

Stopped early (Ctrl-C, or `timeout -s INT`, as benchmarks/gpu_session.sh does) it still writes what it
measured: the epochs that ended and the pace of training steps, so a device call that runs out of time
before the first epoch ends still says how fast a step was.
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import signal
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


def _progress(every: int, t0: float, steps: list[tuple[int, int, float, int]]):
    """An on_event hook that notes when each training step ended (into `steps`) and prints the pace
    every `every` steps, so a stalled run shows where it stalled."""
    def show(event: dict) -> None:
        now = time.perf_counter() - t0
        if event["type"] == "step":
            steps.append((event["epoch"], event["step"], now, event["steps"]))
            if every and (event["step"] + 1) % every == 0:
                print(f"  epoch {event['epoch'] + 1} step {event['step'] + 1}/{event['steps']} at {now:.1f} s",
                      flush=True)
        elif event["type"] == "epoch":
            print(f"  epoch {event['epoch'] + 1} done at {now:.1f} s", flush=True)
    return show


def step_pace(steps: list[tuple[int, int, float, int]]) -> dict | None:
    """Median seconds per training step within epochs, leaving out each epoch's first two steps
    (warm-up, cuDNN autotuning and the CUDA-graph capture land there)."""
    gaps = [b[2] - a[2] for a, b in zip(steps, steps[1:]) if a[0] == b[0] and a[1] >= 2]
    if not gaps:
        return None
    return {"median_seconds": round(statistics.median(gaps), 4), "steps_timed": len(gaps),
            "steps_seen": len(steps), "steps_per_epoch": steps[-1][3]}


def main() -> None:
    # SIGINT (gpu_session.sh's `timeout -s INT`) must stop the run with its partial figures written, even
    # where a non-interactive shell started us in the background with SIGINT ignored, which Python inherits
    signal.signal(signal.SIGINT, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="spaces/darts.nas")
    parser.add_argument("--data-dir")
    parser.add_argument("--synthetic", action="store_true")
    parser.add_argument("--dataset", default="cifar10", help="cifar10 (the benchmark) or digits (a smoke test)")
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
    overrides = {"dataset": args.dataset, "data_dir": str(data_dir) if data_dir else None, "epochs": args.epochs}
    if args.batch:
        overrides["batch"] = args.batch
    overrides.update({k: parse_value(v) for k, v in (o.split("=", 1) for o in args.opt)})
    params = {k: parse_value(v) for k, v in (o.split("=", 1) for o in args.set)}
    t0 = time.perf_counter()
    job = prepare(Request(space=args.space, params=params, overrides=overrides))
    setup = time.perf_counter() - t0
    run_dir = tmp / "run"
    t1 = time.perf_counter()
    steps: list[tuple[int, int, float, int]] = []
    try:
        run_search(job, run_dir, stop_after=args.run_epochs, on_event=_progress(args.progress, t1, steps))
    except KeyboardInterrupt:  # stop_after ends this way too: the schedule is the full one, we time its start
        pass
    wall = time.perf_counter() - t1
    timing = _lines(run_dir / "timing.jsonl")
    metrics = _lines(run_dir / "metrics.jsonl")
    epochs = [t["seconds"] for t in timing]
    interrupted = len(epochs) < args.run_epochs
    pace = step_pace(steps)
    if epochs:
        later = statistics.median(epochs[1:]) if len(epochs) > 1 else epochs[0]
        projected = setup + epochs[0] + (args.epochs - 1) * later
        basis = f"{len(epochs)} measured epoch(s)"
    elif pace:  # no epoch ended: training steps alone, no evaluation or checkpoint time
        projected = setup + args.epochs * pace["steps_per_epoch"] * pace["median_seconds"]
        basis = f"step pace only ({pace['steps_per_epoch']} steps an epoch; evaluation and checkpoints left out)"
    else:
        projected, basis = None, "nothing measured"
    device = job.device
    result = {
        "benchmark": "search_epoch", "label": args.label, "space": args.space, "params": params,
        "data": "synthetic CIFAR-10 (random pixels, same files and loader)" if args.synthetic
        else str(data_dir or args.dataset),
        "config": job.config.to_json(), "memory": job.ir.meta.get("memory"),
        "setup_seconds": round(setup, 2), "epoch_seconds": epochs, "wall_seconds": round(wall, 2),
        "images_per_second": [t["images_per_second"] for t in timing],
        "step_pace": pace, "interrupted": interrupted, "projection_basis": basis,
        "projected_seconds": round(projected, 1) if projected is not None else None,
        "projected_epochs": args.epochs,
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
    where = f"-> {args.epochs} epochs ≈ {projected / 60:.1f} min from {basis}" if projected is not None else basis
    print(f"{args.label or 'search'}: setup {setup:.1f} s, epochs {', '.join(f'{e:.1f}' for e in epochs) or 'none'} s, "
          f"step {pace['median_seconds'] if pace else '?'} s {where}")


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


if __name__ == "__main__":
    main()
