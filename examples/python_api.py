"""The whole nasc pipeline from Python, without the CLI: compile, search, derive, train, draw, export.

    python examples/python_api.py [OUT_DIR]        # default: runs/python-api; about a minute on a CPU

Everything is a function of the `nasc` package (docs/api.md); settings are
keyword arguments named like the CLI options. The space is the bundled
NAS-Bench-201 one at a tiny size; a path to your own `.nas` file works the same
(examples/custom_space/space.nas).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nasc
from nasc.compiler.genotype import to_text

SPACE = "nb201"  # a bundled space name, or a path such as examples/custom_space/space.nas
TINY = {"C": 4, "N": 1}  # space parameters (`--set` on the command line)


def show(event: dict) -> None:
    """Progress: one line per finished epoch (events are what the CLI's progress display receives)."""
    if event["type"] == "epoch":
        print(f"  epoch {event['epoch'] + 1}: train acc {event['train_acc']:.3f}, val acc {event['val_acc']:.3f}")


def main(out: Path) -> None:
    # 1. compile: check the space and read what the compiler knows, without torch
    ir = nasc.compile_space(SPACE, params=TINY, data="digits")
    costs = ir.meta["costs"]["total_without_aux"]
    print(f"{ir.name}: {costs['params']:,} supernet weights, {costs['madds']:,} multiply-adds per 8x8 digit")

    # 2. search one epoch on the bundled digits (run directory as `nasc search --run-dir` writes it)
    run = nasc.search(SPACE, params=TINY, epochs=1, seed=0, run_dir=out / "search", on_event=show)
    print(f"genotype {to_text(run.genotype)} (in {run.run_dir / 'genotype.json'})")

    # 3. derive: the network the genotype describes (every choice made), ready for inference
    net = nasc.build_network(SPACE, run.genotype, params=TINY, data="digits")
    print(f"derived network: {sum(p.numel() for p in net.parameters()):,} weights")

    # 4. train it from scratch for one epoch (the space's `train:` protocol, made tiny here)
    trained = nasc.train(run, params={"C": 8, "N": 1}, epochs=1, run_dir=out / "train", on_event=show)
    print(f"trained: test accuracy {trained.test_acc:.3f} with {trained.params:,} weights")

    # 5. draw the cells (and how α moved during the search), export the trained network as plain PyTorch
    for path in nasc.viz(run, out / "genotype.png") + nasc.export(trained, out / "net.py"):
        print(f"wrote {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/python-api"))
