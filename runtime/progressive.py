"""Progressive search (P-DARTS: Chen, Xie, Wu & Tian, "Progressive Differentiable Architecture Search:
Bridging the Depth Gap between Search and Evaluation", ICCV 2019), run from a declared stage schedule.

A space opts in with a `stages` search setting (see spaces/pdarts.nas):

    search:
        stages = [stage(layers = 5, keep = 8, skip_dropout = 0.1),
                  stage(layers = 11, keep = 5, skip_dropout = 0.4),
                  stage(layers = 17, keep = 3, skip_dropout = 0.7)]
        epochs = 25          # per stage
        arch_start = 10      # per stage
        skip_limit = 2

What a stage does, following the official code (chenxin061/pdarts train_search.py, model_search.py):

- It compiles the space again with the stage's parameters (any space parameter, e.g. `layers`, `C`)
  and with every searchable edge cut to the `keep` strongest ops of the previous stage (softmax of
  α; ties go to the op declared first). The candidate sets are cumulative and kept in declared
  order (`compiler/restrict.py`). The first stage searches the full sets (its `keep` may not cut).
- The supernet is fresh: new weights, new optimisers, and α re-initialised (1e-3·N(0,1)), as the
  official code does (`Network(...)` per stage, `_initialize_alphas`). `carry_alpha = true` starts
  each stage from the previous stage's α instead (the kept columns): the paper's text is read by some
  as carrying α over, the code does not.
- `Dropout(p)` follows every skip_connect candidate that is an identity (stride 1), with
  p = r·(E − e − 1)/E during the weight-only epochs e < arch_start and p = r·exp(−0.2·(e − arch_start))
  after (r: the stage's `skip_dropout`, E: epochs per stage). Like nn.Dropout it is off in eval mode.
- Epochs, the learning-rate schedule and `arch_start` restart in every stage.

The final genotype (after the last stage) is the DARTS rule on the last stage's α: per node the two
strongest edges, on each its strongest op other than `none` (the official `get_min_k_no_zero`
drops `none` first; the space's `select top 2 per node excluding none` is that rule). Then
"restrict skip-connect" (normal cells only, i.e. cells whose inputs arrive at stride 1): while the
cell has more than `skip_limit` skip_connect, the chosen skip with the lowest probability is set to
probability 0 and op and top-2 edges are chosen again (`delete_min_sk_prob`, `keep_1_on`,
`keep_2_branches`). The official code prints the genotypes for every limit 8..0; here the one for
`skip_limit` is the result (P-DARTS uses M = 2) and the removals are recorded.

Run directory: one metrics.jsonl for all stages; every step/epoch record carries `"stage"`; each stage
starts with a `{"type": "stage", ...}` record listing its parameters and the candidate ops of every
searchable edge; a final `{"type": "derive", ...}` record gives the genotype before and after the
skip-connect rule. config.json and space.ir.json describe the first stage; genotype.json is written
at the end (its fingerprint is the run's, that of config.json).

Resume: a checkpoint is written after every epoch (stage index, the stage's candidate sets and the
trainer state) and at every stage boundary, so `nasc search --resume` continues mid-stage or at a
boundary and ends exactly where an uninterrupted run does. Each stage re-seeds from `seed + 1000·stage`
(the official code lets one RNG stream run on). `nasc select` (re-selection from a checkpoint) is
not supported for progressive runs: the checkpoint holds the last stage's supernet, not the first's.

Differences from the official code: α per stage as above (option); a different seed per stage; the
learning rate follows nasc's cosine (as the 2019 code's on PyTorch ≤ 1.0; its `scheduler.step()` before
the epoch shifts the rate by one epoch on PyTorch ≥ 1.1); the search data are the same 50/50 split; validation runs every epoch (the official code
only in the last 5); only the `skip_limit` genotype is produced.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import torch
from torch import nn

from nasc.compiler import genotype as G
from nasc.compiler.count import selection_rule
from nasc.compiler.ir import SpaceIR, to_json_dict
from nasc.errors import BuildError, SearchError
from nasc.runtime.config import SearchConfig
from nasc.runtime.ops import Dropout
from nasc.runtime.rundir import RunDir
from nasc.runtime.selectors import Selector, derive, strengths
from nasc.runtime.stages import parse_stages
from nasc.runtime.supernet import Cell, Network

SKIP_OP = "skip_connect"
SKIP_DECAY = 0.2  # `scale_factor` in train_search.py
SEED_STRIDE = 1000  # stage s searches with seed + 1000·s

Event = dict[str, Any]
Restriction = dict[str, dict[str, list[str]]]  # group -> edge key -> kept ops


# ---------------------------------------------------------------------------------------------- schedule


def stage_params(decl: Any, config: SearchConfig, stage: int, params: Mapping[str, Any]) -> dict[str, Any]:
    """The space parameters of `stage`: the request's (`--set`) plus the stage's own."""
    stages = parse_stages(config, decl.params)
    if not 0 <= stage < len(stages):
        raise SearchError(f"stage {stage} does not exist (the space declares {len(stages)})")
    own = stages[stage].params
    clash = sorted(set(own) & set(params))
    if clash:
        raise SearchError(f"--set {clash[0]} conflicts with the stages, which set {clash[0]!r} per stage",
                          hint="change the stages in the space file instead")
    return {**params, **own}


def stage_plan(job: Any) -> list[dict[str, Any]]:
    """Every stage of `job`'s schedule as the dry run shows it: parameters, ops kept per edge, epochs and size.

    Stage 0 searches the full candidate sets, so its size is exact. A later stage's candidates are the
    `keep` strongest of the stage before, known only once it has run: its size is given as the range
    from the lightest to the heaviest `keep` ops of every edge (shared α keeps the same ops in every
    cell of a group, so the costs of an op are summed over the group's cells first). From the compiler's
    costs, which equal the supernet's weights; activations at the search batch, as `activation_bytes_estimate`.
    """
    from nasc.compiler.pipeline import compile_decl
    from nasc.compiler.resolve import resolve_path

    cfg = job.config
    decl = resolve_path(job.space_path)
    stages = parse_stages(cfg, decl.params)
    plan, keep = [], None
    for stage in stages:
        params = stage_params(decl, cfg, stage.index, job.request.params)
        if "classes" in decl.params and "classes" not in params:
            params["classes"] = job.ir.params["classes"]
        ir = compile_decl(decl, params=params, input_shape=job.ir.input_shape,
                          search={k: job.ir.search[k] for k in ("affine",) if k in job.ir.search})
        if stage.index > 0 and stage.keep is not None:
            keep = stage.keep if keep is None else min(keep, stage.keep)  # the candidate sets are cumulative
        costs = ir.meta["costs"]
        sizes = {}
        for key in ("params", "act"):
            lo = hi = costs["total_without_aux"][key]
            for info in ir.alpha_groups.values():
                for row in info["rows"]:
                    summed = sorted(sum(costs["layers"][lid]["edges"].get(row["edge"], {}).get(op, {}).get(key, 0)
                                        for lid in info["layers"]) for op in row["ops"])
                    k = len(summed) if keep is None else min(keep, len(summed))
                    lo += sum(summed[:k]) - sum(summed)
                    hi += sum(summed[-k:]) - sum(summed)
            sizes[key] = (lo, hi)
        widest = max((len(r["ops"]) for info in ir.alpha_groups.values() for r in info["rows"]), default=0)
        plan.append({"stage": stage.index, "params": {k: ir.params[k] for k in decl.params if k in ir.params},
                     "ops_per_edge": widest if keep is None else min(keep, widest), "epochs": cfg.epochs,
                     "arch_start": cfg.arch_start, "skip_dropout": stage.skip_dropout,
                     "supernet_weights": list(sizes["params"]),
                     "activation_bytes_estimate": [v * cfg.batch for v in sizes["act"]]})
    return plan


def skip_dropout_rate(rate: float, epoch: int, epochs: int, arch_start: int) -> float:
    """P-DARTS' in-stage decay of the skip_connect dropout (train_search.py)."""
    if epoch < arch_start:
        return rate * (epochs - epoch - 1) / epochs
    return rate * math.exp(-(epoch - arch_start) * SKIP_DECAY)


class SkipDropout(Dropout):
    """An identity candidate followed by Dropout(p); `p` is set per epoch (model_search.py `update_p`).

    A subclass of nn.Dropout so that everything that keeps random candidates out of its way (fused
    edge groups, CUDA graphs) sees it as the dropout it is; the mask is drawn in NCHW order, so a
    seeded search drops the same elements with `channels_last` on or off (runtime/ops.py `Dropout`).
    """

    def __init__(self, p: float = 0.0):
        super().__init__(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) if self.p > 0 else x

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _candidate_slots(module: nn.Module) -> list[tuple[nn.Module, int | str, int]]:
    """(container, key, candidate index) of each stand-alone candidate of a mixed edge; [] for other modules.

    Most edges hold their candidates in a ModuleList `candidates`; a MergeNAS edge
    (relaxations/merged_kernel.py) keeps those outside its merged convolutions, skip_connect among
    them, in a ModuleDict `others` keyed by candidate index.
    """
    names = getattr(module, "names", None)
    if not isinstance(names, list):
        return []
    candidates, others = getattr(module, "candidates", None), getattr(module, "others", None)
    if isinstance(candidates, nn.ModuleList):
        return [(candidates, i, i) for i in range(len(candidates))]
    if isinstance(others, nn.ModuleDict):
        return [(others, key, int(key)) for key in others.keys()]
    return []


def install_skip_dropout(net: Network, op: str = SKIP_OP) -> list[SkipDropout]:
    """Replace every identity candidate named `op` in the net's mixed edges by a SkipDropout; returns them."""
    installed = []
    for module in net.modules():
        names = getattr(module, "names", None)
        for container, key, i in _candidate_slots(module):
            if names[i] == op and type(container[key]) is nn.Identity:
                container[key] = SkipDropout()
                installed.append(container[key])
    for module in net.modules():  # fused edge groups were planned on the identities: plan them again
        if isinstance(module, Cell) and module.groups:
            module.fuse(True)
    return installed


def set_skip_dropout(modules: Iterable[SkipDropout], p: float) -> None:
    for m in modules:
        m.p = p


# ---------------------------------------------------------------------------------------------- pruning


def candidate_sets(ir: SpaceIR) -> Restriction:
    """The candidates of every searchable edge (choice layer), per α group."""
    return {group: {row["edge"]: list(row["ops"]) for row in info["rows"]} for group, info in ir.alpha_groups.items()}


def prune(net: Network, keep: int | None) -> Restriction:
    """Per α group and searchable edge: the `keep` strongest ops (softmax α), in the edge's op order."""
    out: Restriction = {}
    for group in net.alphas:
        probs = strengths(net, group)
        rows = {}
        for r, (key, ops) in enumerate(zip(net.group_rows[group], net.group_ops[group])):
            if keep is None or keep >= len(ops):
                rows[key] = list(ops)
                continue
            best = sorted(range(len(ops)), key=lambda j: (-float(probs[r, j]), j))[:keep]
            rows[key] = [ops[j] for j in sorted(best)]
        out[group] = rows
    return out


def merge(old: Restriction, new: Restriction) -> Restriction:
    """Cumulative candidate sets: the new stage's cuts over the earlier ones."""
    out = {g: dict(edges) for g, edges in old.items()}
    for g, edges in new.items():
        out.setdefault(g, {}).update({k: list(v) for k, v in edges.items()})
    return out


def alpha_by_op(net: Network) -> dict[str, dict[str, dict[str, float]]]:
    """α per group, edge and op name (what `carry_alpha` hands to the next stage)."""
    return {g: {key: {op: float(a.detach()[r, j]) for j, op in enumerate(ops)}
                for r, (key, ops) in enumerate(zip(net.group_rows[g], net.group_ops[g]))}
            for g, a in net.alphas.items()}


@torch.no_grad()
def load_alpha_by_op(net: Network, table: Mapping[str, Mapping[str, Mapping[str, float]]]) -> None:
    for g, a in net.alphas.items():
        for r, (key, ops) in enumerate(zip(net.group_rows[g], net.group_ops[g])):
            row = table.get(g, {}).get(key, {})
            for j, op in enumerate(ops):
                if op in row:
                    a[r, j] = row[op]


# ---------------------------------------------------------------------------------------------- final rule


def _rule(ir: SpaceIR, selector: Selector | None) -> tuple[str, int, frozenset[str]]:
    per, k, exclude = selection_rule(ir)
    opts = selector.options if selector is not None and selector.name == "magnitude" else {}
    if opts.get("per") is not None:
        per = opts["per"]
    if opts.get("k") is not None:
        k = int(opts["k"])
    if opts.get("exclude") is not None:
        ex = opts["exclude"]
        exclude = frozenset((ex,) if isinstance(ex, str) else ex)
    if per not in ("node", "edge", "layer"):
        raise BuildError(f"magnitude selection per {per!r} is not defined", hint="per node, edge or layer")
    return per, k, exclude


def normal_groups(ir: SpaceIR) -> list[str]:
    """α groups of cells whose inputs arrive at stride 1 (DARTS' normal cells)."""
    return [g for g, info in ir.alpha_groups.items()
            if info["kind"] == "cell" and ir.cells[info["cell"]].graph.get("input_stride", 1) == 1]


def pdarts_genotype(ir: SpaceIR, net: Network, *, skip_limit: int | None, selector: Selector | None = None,
                    probs: Mapping[str, torch.Tensor] | None = None,
                    ) -> tuple[G.Genotype, G.Genotype, list[dict[str, Any]]]:
    """(final genotype, genotype before the skip rule, skips removed): the DARTS rule, then at most
    `skip_limit` skip_connect per normal cell (P-DARTS "restrict skip-connect")."""
    per, k, exclude = _rule(ir, selector)
    table = {g: (probs[g] if probs is not None else strengths(net, g)).detach().clone().float() for g in net.alphas}
    genotype = derive(ir, net, per=per, k=k, exclude=exclude, probs=table)
    before = genotype
    removed: list[dict[str, Any]] = []
    if skip_limit is None:
        return genotype, before, removed
    for group in normal_groups(ir):
        cell = ir.cells[ir.alpha_groups[group]["cell"]]
        name_of = {cell.nodes[n]["index"]: n for n in cell.nodes}
        row_of = {key: r for r, key in enumerate(net.group_rows[group])}
        zeroed: set[int] = set()
        while True:
            chosen = [e for e in genotype.cells[group].edges if e.op == SKIP_OP]
            if len(chosen) <= skip_limit:
                break
            options = []
            for e in chosen:
                r = row_of.get(f"{name_of[e.node]}<-{name_of[e.input]}")
                if r is None or r in zeroed:  # a fixed edge, or a skip that is the edge's only op left
                    continue
                options.append((float(table[group][r, net.group_ops[group][r].index(SKIP_OP)]), r))
            if not options:
                break  # nothing more can be removed: the limit cannot be met in this space
            p, r = min(options)
            table[group][r, net.group_ops[group][r].index(SKIP_OP)] = 0.0
            zeroed.add(r)
            removed.append({"group": group, "edge": net.group_rows[group][r], "prob": round(p, 6)})
            genotype = derive(ir, net, per=per, k=k, exclude=exclude, probs=table)
    return genotype, before, removed


def count_skips(genotype: G.Genotype, group: str) -> int:
    return sum(e.op == SKIP_OP for e in genotype.cells[group].edges)


# ---------------------------------------------------------------------------------------------- the run


def _stage_request(job: Any, stage: int) -> Any:
    """The run's request with the stage's seed."""
    overrides = {**job.request.overrides, "seed": job.config.seed + SEED_STRIDE * stage}
    return attrs.evolve(job.request, overrides=overrides)


def _emitter(run: RunDir, on_event: Callable[[Event], None] | None, stage: int) -> Callable[[Event], None]:
    def emit(event: Event) -> None:
        if event["type"] in ("step", "epoch", "select"):
            event = {**event, "stage": stage}
        if event["type"] in ("step", "epoch", "select", "stage", "derive"):
            run.append(run.metrics, {k: v for k, v in event.items() if not k.startswith("_")})
        if on_event is not None:
            on_event(event)
    return emit


def run_progressive(job: Any, run_path: Any, *, on_event: Callable[[Event], None] | None = None,
                    resume_state: Mapping[str, Any] | None = None, stop_after: int | None = None) -> Any:
    """Run every stage of `job`'s schedule in one run directory (new, or continuing from `resume_state`)."""
    cfg = job.config
    stages = parse_stages(cfg, job.ir.params)
    if job.ir.alpha_mode == "per_instance" and len(stages) > 1:
        raise SearchError("progressive search needs α shared per cell (`alpha shared per cell`): "
                          "the cells of each stage differ")
    run = RunDir(run_path)
    with run.writing(new=resume_state is None):  # one writer per run dir: a second process fails here
        return _stages_in(run, job, stages, on_event=on_event, resume_state=resume_state, stop_after=stop_after)


def _stages_in(run: RunDir, job: Any, stages: list[Any], *, on_event: Callable[[Event], None] | None,
               resume_state: Mapping[str, Any] | None, stop_after: int | None) -> Any:
    """`run_progressive`'s stages, in the run it holds the lock of."""
    from nasc.runtime import search as S  # search calls into this module; import at run time

    cfg = job.config
    run_fp = job.ir.meta["fingerprint"]
    if resume_state is None:
        si, restriction, carried, state = 0, {}, None, None
    else:
        if "stage" not in resume_state:
            raise SearchError(f"{run.path} was not written by a progressive search; its checkpoint has no stage")
        si = int(resume_state["stage"])
        restriction = resume_state.get("restriction") or {}
        carried = resume_state.get("carried_alpha")
        state = None if resume_state.get("boundary") else resume_state
        run.truncate_metrics(int(resume_state["metrics_size"]))
        run.record_resume(int(resume_state.get("epoch", 0)), job.device, stage=si)
    done = 0
    while True:
        stage = stages[si]
        last = si == len(stages) - 1
        sjob = job if si == 0 and not restriction else S.prepare(_stage_request(job, si), stage=si,
                                                                 restrict=restriction)
        if si == 0 and stage.keep is not None:
            widest = max((len(r["ops"]) for info in sjob.ir.alpha_groups.values() for r in info["rows"]), default=0)
            if stage.keep < widest:
                raise SearchError(f"stages[0]: keep = {stage.keep} would cut the first stage's edges, which have no "
                                  f"α yet ({widest} candidates)", hint=f"use keep = {widest} or leave it out")
        if carried and cfg.carry_alpha and state is None:
            load_alpha_by_op(sjob.net, carried)
        skips = install_skip_dropout(sjob.net) if stage.skip_dropout > 0 else []
        trainer = S.Trainer(sjob)
        if resume_state is None and si == 0:  # after the Trainer, as run_search: it compiles the cells and records each
            run.write("config.json", {**S.describe(job), "space_sources": run.copy_sources(job.space_files)})
            run.write("space.ir.json", to_json_dict(job.ir))
        stage_fp = sjob.ir.meta["fingerprint"]
        if state is not None:
            if state.get("stage_fingerprint") != stage_fp:
                raise SearchError(f"the checkpoint of stage {si} does not fit the stage's supernet "
                                  f"(fingerprint {state.get('stage_fingerprint')}, rebuilt {stage_fp})",
                                  hint="the space file or the code changed since the run started")
            trainer.load_state(state)
            state = None
        emit = _emitter(run, on_event, si)
        if on_event is not None:
            on_event({"type": "start", "epochs": cfg.epochs, "first_epoch": trainer.epoch,
                      "steps": len(trainer.train), "batch": cfg.batch, "config": S.describe(sjob),
                      "run_dir": str(run.path), "stage": si, "stages": len(stages)})
        if trainer.epoch == 0:
            emit({"type": "stage", "stage": si, "stages": len(stages), "params": dict(stage.params),
                  "keep": stage.keep, "skip_dropout": stage.skip_dropout, "seed": sjob.config.seed,
                  "fingerprint": stage_fp, "alpha": "carried" if carried and cfg.carry_alpha else "initialised",
                  "supernet_weights": sum(p.numel() for p in sjob.net.weight_parameters()),
                  "candidates": candidate_sets(sjob.ir)})
        final: dict[str, Any] = {}
        while trainer.epoch < cfg.epochs:
            t0 = time.perf_counter()
            p = skip_dropout_rate(stage.skip_dropout, trainer.epoch, cfg.epochs, cfg.arch_start)
            set_skip_dropout(skips, p)
            record = trainer.run_epoch(emit)
            record["skip_dropout"] = round(p, 6) if skips else 0.0
            emit(record)
            seconds = time.perf_counter() - t0
            run.append(run.timing, {"stage": si, "epoch": record["epoch"], "seconds": round(seconds, 3),
                                    "images_per_second": round(len(trainer.train) * cfg.batch / max(seconds, 1e-9), 1)})
            run.save_checkpoint({**trainer.state(), "fingerprint": run_fp, "space": job.ir.name, "stage": si,
                                 "stage_fingerprint": stage_fp, "restriction": restriction, "carried_alpha": carried,
                                 "metrics_size": run.metrics_size()})
            final = {k: v for k, v in record.items() if not k.startswith("_") and k != "alpha"}
            done += 1
            if stop_after is not None and done >= stop_after and trainer.epoch < cfg.epochs:
                raise KeyboardInterrupt  # simulated interruption (tests)
        if last:
            break
        restriction = merge(restriction, prune(sjob.net, stages[si + 1].keep))
        carried = alpha_by_op(sjob.net) if cfg.carry_alpha else None
        si += 1
        run.save_checkpoint({"fingerprint": run_fp, "space": job.ir.name, "stage": si, "epoch": 0, "boundary": True,
                             "restriction": restriction, "carried_alpha": carried,
                             "metrics_size": run.metrics_size()})
        if stop_after is not None and done >= stop_after:
            raise KeyboardInterrupt  # simulated interruption at a stage boundary (tests)
    if sjob.selector.name == "magnitude":
        genotype, before, removed = pdarts_genotype(sjob.ir, sjob.net, skip_limit=cfg.skip_limit,
                                                    selector=sjob.selector)
    else:  # another selector (e.g. perturbation) decides on the last stage's supernet; no skip rule
        genotype = sjob.selector.select(sjob.net, sjob.ir, relax=sjob.relax, trainer=trainer, emit=emit)
        before, removed = genotype, []
    genotype = attrs.evolve(genotype, fingerprint=run_fp)
    applied = cfg.skip_limit if sjob.selector.name == "magnitude" else None  # the record says what was done
    emit({"type": "derive", "stage": si, "selector": sjob.selector.name, "skip_limit": applied,
          "before": G.canonical_str(before), "genotype": G.canonical_str(genotype), "removed_skips": removed})
    try:
        G.save(genotype, run.path / "genotype.json")
    except OSError as e:
        raise SearchError(f"cannot write {run.path / 'genotype.json'}: {e}") from None
    final = {**final, "stage": si}
    if on_event is not None:
        on_event({"type": "end", "genotype": genotype, "final": final, "run_dir": str(run.path)})
    return S.SearchResult(genotype=genotype, run_dir=run.path, final=final)
