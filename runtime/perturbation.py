"""Perturbation-based architecture selection (DARTS-PT; Wang et al., ICLR 2021).

α's magnitude need not say how much an op contributes to the supernet, so
DARTS-PT measures it: for each edge, in a seeded random order, the op whose
removal hurts validation accuracy most is kept and the edge is fixed to it
(one-hot); the supernet is fine-tuned between decisions. Then, for every node
with more than k inputs (random order), the edge whose removal *least* hurts
accuracy is dropped until k remain. The schedule follows ruocwang/darts-pt
(sota/cnn/projection.py): each step decides one edge (later one node with
more than k inputs) of every cell type, then tunes 5 epochs, except after the
last step, whose tuning could no longer change the genotype; tuning uses a
fresh SGD (no momentum from the search) at a constant lr/10 (the official
code makes a cosine scheduler there but never steps it), with α still
updated; selection is by accuracy on the whole validation split, with BN on
batch statistics (the official code scores projections in training mode).

The projection works on the relaxation's per-pass weights through
`Network.weight_transform`, so it applies to any relaxation whose edges are
weighted mixtures.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from nasc.compiler.genotype import Genotype
from nasc.compiler.ir import SpaceIR
from nasc.errors import BuildError
from nasc.runtime.relaxations.base import GroupWeights
from nasc.runtime.selectors import RULE_CHECKS, SELECTORS, Selector, derive, is_int, magnitude_rule
from nasc.runtime.supernet import Network


class Projection:
    """Edits group weights: decided rows become one-hot, removed rows zero, one op may be masked."""

    def __init__(self, net: Network):
        self.decided: dict[str, dict[int, int]] = {g: {} for g in net.alphas}
        self.removed: dict[str, set[int]] = {g: set() for g in net.alphas}
        self.masked_op: tuple[str, int, int] | None = None  # (group, row, op)
        self.masked_row: tuple[str, int] | None = None

    def __call__(self, weights: dict[str, GroupWeights]) -> dict[str, GroupWeights]:
        out = {}
        for g, w in weights.items():
            ops = w.ops
            edits = self.decided[g] or self.removed[g] or (self.masked_op and self.masked_op[0] == g) or (
                self.masked_row and self.masked_row[0] == g)
            if not edits:
                out[g] = GroupWeights(ops, w.edges, None)
                continue
            ops = ops.clone()
            for row, op in self.decided[g].items():
                ops[row] = 0
                ops[row, op] = 1
            if self.masked_op and self.masked_op[0] == g:
                ops[self.masked_op[1], self.masked_op[2]] = 0  # the others stay as they are (unnormalised)
            for row in self.removed[g] | ({self.masked_row[1]} if self.masked_row and self.masked_row[0] == g else set()):
                ops[row] = 0
            out[g] = GroupWeights(ops, w.edges, None)  # every kept op is computed
        return out


def _one_path_warning(relax: Any) -> str | None:
    """Why DARTS-PT's scores say little under a relaxation that evaluates one op per edge, else None.

    Its supernet scores run the argmax op of each edge: removing any other op changes nothing, so every
    edge's scores tie except the argmax's, and the picks are close to the magnitude rule's.
    """
    if not getattr(relax, "evaluates_one_path", False):
        return None
    return (f"{relax.name} evaluates one op per edge (the most probable), so removing any other op leaves the "
            "scored network as it was: most scores tie and the picks are close to --select magnitude's "
            "(DARTS-PT scores a weighted mixture, as softmax or SNAS evaluate)")


@SELECTORS.register("perturbation")
class Perturbation(Selector):
    """DARTS-PT: keep the op (edges) whose removal hurts val accuracy most; slow: tune_epochs=0 shortens it.

    It tunes the supernet tune_epochs after each decision (DARTS space: 16 x 5 epochs, about as many search
    epochs); eval_batches=N scores each projection on N validation batches instead of all of them.
    """

    name = "perturbation"
    defaults = {"tune_epochs": 5, "tune_lr_factor": 0.1, "crit": "acc", "eval_batches": 0, "seed": 0,
                "topology": True, "k": None, "exclude": None}
    checks = {
        "tune_epochs": ("an integer ≥ 0", lambda v: is_int(v) and v >= 0),
        "tune_lr_factor": ("a positive number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                           and v > 0),
        "crit": ("acc or loss", lambda v: v in ("acc", "loss")),
        "eval_batches": ("an integer ≥ 0 (0: the whole validation split)", lambda v: is_int(v) and v >= 0),
        "seed": ("an integer", is_int),
        "topology": ("true or false", lambda v: isinstance(v, bool)),
        "k": RULE_CHECKS["k"],
        "exclude": RULE_CHECKS["exclude"],
    }

    def check(self, ir: SpaceIR) -> None:
        magnitude_rule(self.options, ir)

    def select(self, net: Network, ir: SpaceIR, *, trainer: Any = None, emit: Callable | None = None,
               **context: Any) -> Genotype:
        if trainer is None:
            raise BuildError("the perturbation selector needs the supernet's data and optimiser",
                             hint="run it through `nasc search --select perturbation` or `nasc select RUN_DIR`")
        emit = emit or (lambda e: None)
        per, k, exclude = magnitude_rule(self.options, ir)
        rng = random.Random(int(self.options["seed"]))
        proj = Projection(net)
        net.weight_transform = proj
        try:
            self.tune_lr = trainer.job.config.lr * float(self.options["tune_lr_factor"])
            self._tuned = 0  # tuning epochs run so far: each draws its own batch orders
            # the official code tunes with a new SGD (momentum buffers empty) at a constant lr/10: its
            # cosine scheduler is made but never stepped
            trainer.w_opt.state.clear()
            steps = self._op_steps(net, rng, exclude)
            if self.options["topology"] and per == "node":
                steps += self._topology_steps(net, ir, rng, k)
            self._clock = Clock(sum(d.evaluations for step in steps for d in step),
                                max(len(steps) - 1, 0) * int(self.options["tune_epochs"]), emit)
            eval_batches = len(trainer.val_eval)
            if self.options["eval_batches"]:
                eval_batches = min(eval_batches, int(self.options["eval_batches"]))
            emit({"type": "select", "selector": self.name, "stage": "plan", "decisions": len(steps),
                  "evaluations": self._clock.total["eval"], "eval_batches": eval_batches,
                  "tune_epochs": self._clock.total["tune"], "tune_batches": len(trainer.train),
                  "warning": _one_path_warning(trainer.job.relax)})
            for i, step in enumerate(steps):
                for decide in step:
                    decide(proj, trainer, emit)
                if i < len(steps) - 1:  # after the last decision the genotype is fixed: tuning would be wasted
                    self._tune(trainer, emit)
            probs = self._final(net, proj)
            genotype = derive(ir, net, per=per if self.options["topology"] else "edge", k=k,
                              exclude=frozenset(), probs=probs)
        finally:
            net.weight_transform = None
        return genotype

    # ---- pieces ----
    def _score(self, trainer) -> float:
        """Validation accuracy (or negative loss with crit=loss) of the supernet as currently projected."""
        loss, acc = evaluate_limited(trainer, int(self.options["eval_batches"]))
        return acc if self.options["crit"] == "acc" else -loss

    def _measure(self, trainer) -> float:
        """`_score`, timed for the progress report."""
        t0 = time.perf_counter()
        score = self._score(trainer)
        self._clock.done("eval", time.perf_counter() - t0)
        return score

    def _tune(self, trainer, emit) -> None:
        for _ in range(int(self.options["tune_epochs"])):
            t0 = time.perf_counter()
            # each tuning epoch gets batch orders of its own, as the official loader reshuffles every epoch
            self._tuned += 1
            record = trainer.run_epoch(lambda e: None, lr=self.tune_lr,
                                       data_epoch=trainer.job.config.epochs + self._tuned)
            trainer.epoch -= 1  # tuning epochs do not advance the search schedule
            self._clock.done("tune", time.perf_counter() - t0)
            emit({"type": "select", "selector": self.name, "stage": "tune", "val_acc": record["val_acc"],
                  "val_loss": record["val_loss"]})

    # ---- decision steps: DARTS-PT decides for every group (normal and reduce) at each step, then tunes ----
    def _op_steps(self, net: Network, rng: random.Random, exclude) -> list[list[Callable]]:
        """One step per edge index: the k-th edge (seeded random order) of every group gets its op."""
        order = {g: list(range(len(net.group_rows[g]))) for g in net.alphas}
        for rows in order.values():
            rng.shuffle(rows)
        n = max((len(rows) for rows in order.values()), default=0)
        return [[self._decide_op(net, g, rows[i], exclude) for g, rows in order.items() if i < len(rows)]
                for i in range(n)]

    def _decide_op(self, net: Network, g: str, row: int, exclude) -> Callable:
        names = net.group_ops[g][row]
        # an excluded op can never be chosen, so its removal is not worth a pass over the validation data
        allowed = [i for i, n in enumerate(names) if n not in exclude] or list(range(len(names)))

        def decide(proj: Projection, trainer, emit) -> None:
            scores = {}
            for op in allowed:
                proj.masked_op = (g, row, op)
                scores[op] = self._measure(trainer)
            proj.masked_op = None
            chosen = min(allowed, key=lambda i: (scores[i], i))  # removal hurts most
            proj.decided[g][row] = chosen
            emit({"type": "select", "selector": self.name, "stage": "op", "group": g,
                  "edge": net.group_rows[g][row], "chosen": names[chosen],
                  "without": {names[i]: scores[i] for i in allowed}})
        decide.evaluations = len(allowed)
        return decide

    def _topology_steps(self, net: Network, ir: SpaceIR, rng: random.Random, k: int) -> list[list[Callable]]:
        """One step per node index: the k-th node (random order) with more than k inputs, of every cell group."""
        order: dict[str, list[tuple[Any, list[int]]]] = {}
        for g, info in ir.alpha_groups.items():
            if info["kind"] != "cell":
                continue
            cell = ir.cells[info["cell"]]
            row_of = {key: r for r, key in enumerate(net.group_rows[g])}
            nodes = list(cell.graph["nodes"])
            rng.shuffle(nodes)
            order[g] = []
            for node in nodes:
                inputs = sorted(cell.predecessors(node), key=lambda u: cell.nodes[u]["index"])  # as darts-pt's eids
                rows = [row_of[cell.edges[u, node]["edge"].key] for u in inputs
                        if cell.edges[u, node]["edge"].key in row_of]
                if len(rows) > k:  # a node already at k inputs needs no decision (nor tuning after it)
                    order[g].append((node, rows))
        n = max((len(nodes) for nodes in order.values()), default=0)
        return [[self._decide_edges(net, g, *nodes[i], k) for g, nodes in order.items() if i < len(nodes)]
                for i in range(n)]

    def _decide_edges(self, net: Network, g: str, node: Any, rows: list[int], k: int) -> Callable:
        def decide(proj: Projection, trainer, emit) -> None:
            left = list(rows)
            while len(left) > k:
                scores = {}
                for r in left:
                    proj.masked_row = (g, r)
                    scores[r] = self._measure(trainer)
                proj.masked_row = None
                # removal hurts least; on a tie the later input goes, as darts-pt's `not compare(crit, extrema)`
                drop = max(reversed(left), key=lambda r: scores[r])
                proj.removed[g].add(drop)
                left.remove(drop)
                emit({"type": "select", "selector": self.name, "stage": "topology", "group": g, "node": node,
                      "removed": net.group_rows[g][drop],
                      "without": {net.group_rows[g][r]: sc for r, sc in scores.items()}})
        decide.evaluations = sum(range(k + 1, len(rows) + 1))  # each removal scores every edge still in
        return decide

    @staticmethod
    def _final(net: Network, proj: Projection) -> dict[str, torch.Tensor]:
        """Strength tables the magnitude rule reads: decided one-hots, removed edges at −1."""
        out = {}
        for g in net.alphas:
            mask = net.mask(g)
            table = torch.zeros(mask.shape).masked_fill(~mask, -1.0)
            for row, op in proj.decided[g].items():
                table[row, op] = 1.0
            for row in proj.removed[g]:
                table[row] = -0.5
            out[g] = table
        return out


class Clock:
    """Counts a selection's supernet evaluations and tuning epochs against its plan and emits progress.

    The time left is the remaining work at the mean measured seconds of each kind; it stays None until
    both kinds still to come have been timed once (an evaluation and a tuning epoch differ ~10x).
    """

    def __init__(self, evaluations: int, tune_epochs: int, emit: Callable):
        self.total = {"eval": evaluations, "tune": tune_epochs}
        self.count = {"eval": 0, "tune": 0}
        self.seconds = {"eval": 0.0, "tune": 0.0}
        self.emit = emit

    def done(self, kind: str, seconds: float) -> None:
        self.count[kind] += 1
        self.seconds[kind] += seconds
        left = 0.0
        for k, total in self.total.items():
            if total > self.count[k]:
                if not self.count[k]:
                    left = None
                    break
                left += (total - self.count[k]) * self.seconds[k] / self.count[k]
        self.emit({"type": "progress", "selector": "perturbation", "done": sum(self.count.values()),
                   "total": sum(self.total.values()), "evaluations": self.count["eval"],
                   "tune_epochs": self.count["tune"], "seconds_left": left})


@contextmanager
def batch_statistics(net: torch.nn.Module) -> Iterator[None]:
    """BN normalises with each batch's own statistics; the running statistics are left as they were.

    DARTS-PT scores a projection with `infer(..., _eval=False)`, i.e. `model.train()` ("disable running
    stats for projection"): running statistics gathered with every op in place would misjudge a supernet
    with one op (or edge) removed. Unlike the official code, the scoring passes do not update them.
    """
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.training, {k: b.clone() for k, b in m.named_buffers(recurse=False)}) for m in bns]
    for m in bns:
        m.train()
    try:
        yield
    finally:
        for m, training, buffers in saved:
            for k, b in buffers.items():
                getattr(m, k).copy_(b)
            m.train(training)


@torch.no_grad()
def evaluate_limited(trainer, max_batches: int = 0) -> tuple[float, float]:
    """Supernet loss and accuracy on the validation split (all of it unless `max_batches`), with BN on
    batch statistics as DARTS-PT scores projections (see `batch_statistics`)."""
    import torch.nn.functional as F

    net = trainer.job.net
    net.eval()
    trainer.job.relax.set_phase("eval")
    loss = correct = n = 0.0
    with batch_statistics(net):
        for i, (xb, yb) in enumerate(trainer.val_eval.epoch(0)):
            if max_batches and i >= max_batches:
                break
            x, y = trainer._batch(xb, yb, trainer.plain)
            logits = net(x)
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += y.numel()
    net.train()
    return loss / max(n, 1), correct / max(n, 1)
