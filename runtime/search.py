"""The search loop: bi-level (or single-level) optimisation of a supernet, one epoch at a time.

Per step, as in the official DARTS code: an α step on a validation batch
(first- or second-order), then a weight step on a training batch (SGD,
gradient clipping). Both halves come from the training set (train_portion).
Every random choice flows from the run's seed, so the same seed on the same
machine gives the same metrics file and genotype, and a resumed run ends
exactly where an uninterrupted one does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F

from nasc.compiler import genotype as G
from nasc.compiler.expr import to_json
from nasc.compiler.ir import SpaceIR, to_json_dict
from nasc.compiler.pipeline import compile_decl
from nasc.compiler.resolve import resolve_path
from nasc.errors import NascError, SearchError
from nasc.plugins import explicit_plugins, resuming_with
from nasc.runtime.augment import Augment
from nasc.runtime.compiled import compile_blocker, compile_cells, summary
from nasc.runtime.config import (SearchConfig, arch_option_problem, check_search_block, make_config,
                                 refuse_unread_min_override)
from nasc.runtime.data import (Batches, Dataset, check_same_data, load_dataset, normalisable, recorded_data_dir,
                               split_indices)
from nasc.runtime import distributed as _dist  # torch.distributed hooks (runtime/distributed.py)
from nasc.runtime.relaxations.base import Relaxation, load_relaxation, preset, refuse_fix_alpha
from nasc.runtime.rundir import RunDir, default_run_path, environment
from nasc.runtime.schedules import learning_rate
from nasc.runtime.selectors import Selector, load_selector, strengths
from nasc.runtime.step import EvalForward, SearchStep, graph_blocker
from nasc.runtime.supernet import Network, build_supernet

Event = dict[str, Any]


@attrs.frozen(kw_only=True)
class Request:
    """What the user asked for; everything else is derived (and recorded in config.json)."""

    space: str = "darts"
    params: dict[str, Any] = attrs.field(factory=dict)
    relax: str | None = None
    relax_options: dict[str, Any] = attrs.field(factory=dict)
    select: str | None = None
    select_options: dict[str, Any] = attrs.field(factory=dict)
    overrides: dict[str, Any] = attrs.field(factory=dict)


@attrs.define(kw_only=True)
class Job:
    request: Request
    ir: SpaceIR
    config: SearchConfig
    dataset: Dataset
    relax: Relaxation
    selector: Selector
    net: Network
    device: torch.device
    space_path: str
    space_files: tuple[str, ...] = ()  # the .nas files read: the space's and those it extends or imports
    notes: tuple[str, ...] = ()  # warnings about this search's settings (also in ir.meta["warnings"])


@attrs.frozen(kw_only=True)
class SearchResult:
    genotype: G.Genotype
    run_dir: Path
    final: dict[str, Any]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SearchError(f"unknown device {name!r}", hint="auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SearchError("--device cuda was asked for but no CUDA device is available")
    return device


def available_memory(device: torch.device) -> int | None:
    """Free bytes on the device (CUDA: free device memory; CPU: MemAvailable), None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def choose_memory(mode: str, ir: SpaceIR, batch: int, device: torch.device) -> tuple[str, str]:
    """Resolve `auto`: the plain lowering if the compiler's activation estimate fits comfortably, else recompute."""
    need = ir.meta["costs"]["total_without_aux"]["act"] * batch
    if mode != "auto":
        return mode, f"asked for {mode}"
    free = available_memory(device)
    if free is None:
        return "plain", "free memory unknown; plain lowering"
    if need <= 0.5 * free:
        return "plain", f"plain: ~{need / 2**30:.2f} GiB of activations fits in {free / 2**30:.1f} GiB free"
    return "recompute", f"recompute: plain needs ~{need / 2**30:.2f} GiB, {free / 2**30:.1f} GiB free"


def choose_fusion(config: SearchConfig, device: torch.device) -> tuple[bool, str]:
    """Resolve `fuse_edges`: asked for, or on a GPU (launch-bound) and not on a CPU (compute-bound).

    On a GPU fused groups halve the kernels of a step (benchmarks/kernel_count.py). On a CPU, in the
    default channels-last tensors, the full DARTS supernet's step took 1.3× as long fused (oneDNN's
    grouped-convolution backward, layout copies), so auto leaves it off there; docs/performance.md.
    """
    if not config.share_work:
        return False, "shared work is off (share_work = false)"
    if config.fuse_edges is not None:
        return config.fuse_edges, f"asked for ({'true' if config.fuse_edges else 'false'})"
    if device.type == "cuda":
        return True, "auto: on a GPU, half the kernels per step"
    return False, "auto: off on a CPU, where grouped convolutions are not faster"


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed and set deterministic kernels both ways: these are process-wide, so a run in a process (a
    notebook, the Python API) must not inherit the last run's choice."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if deterministic:
        torch.backends.cudnn.benchmark = False


def check_classes(ir: SpaceIR, dataset: Dataset, declared: bool) -> None:
    """The head must score each of the dataset's classes: more scores train a wrong network silently, fewer
    fail inside the loss at the first batch whose label has no score."""
    head_out = ir.meta["shapes"][[l.id for l in ir.layers() if l.kind == "head"][0]]["c_out"]
    if head_out != dataset.classes:
        hint = (f"leave `classes` unset: it is taken from the dataset ({dataset.classes})" if declared
                else "declare a `classes` parameter in the space and use it in the head")
        raise SearchError(f"the network outputs {head_out} scores but {dataset.name} has {dataset.classes} classes",
                          hint=hint)


def prepare(request: Request, *, stage: int = 0, restrict: Mapping[str, Any] | None = None) -> Job:
    """Compile the space for the dataset, resolve every setting, build the supernet.

    `stage` and `restrict` are for progressive search (runtime/progressive.py): the stage whose
    parameters to compile with, and the candidate sets its edges keep.
    """
    decl = resolve_path(request.space)
    declared = decl.relax.name if decl.relax else "softmax"
    preset_settings = preset(request.relax or declared)[1]
    settings = evaluated_search(decl)
    check_search_block(settings, {k: s.span for k, s in decl.search.items()}, decl.params)
    if request.relax is None and decl.relax is not None:
        preset_settings = _beside_preset(decl, settings, preset_settings)
    try:
        base = make_config(settings, {**preset_settings, **request.overrides})
    except SearchError as e:  # a sampling method's own refusal of second order says more than the levels rule
        raise _no_second_order(request.relax or declared, settings, {**preset_settings, **request.overrides}) or e
    refuse_unread_min_override(base, request.overrides)
    problem = arch_option_problem(base, request.overrides)
    if problem is not None:
        raise SearchError(problem, hint="set arch_optimizer to the optimiser that reads it, or drop it")
    base = attrs.evolve(base, data_dir=recorded_data_dir(base.data_dir))
    dataset = _dist.main_first(load_dataset, base.dataset, base.data_dir)  # distributed: one download per machine
    params = dict(request.params)
    if base.stages:  # progressive search: this stage's space parameters (e.g. layers)
        from nasc.runtime.progressive import stage_params
        params = stage_params(decl, base, stage, params)
    if "classes" in decl.params and "classes" not in params:
        params["classes"] = dataset.classes
    ir = compile_decl(decl, params=params, input_shape=dataset.shape,
                      search=compiled_settings(settings, base.to_json()))
    if restrict:  # progressive search: the candidates kept from the previous stage
        from nasc.compiler.restrict import restrict_candidates
        ir = restrict_candidates(ir, restrict)
    check_classes(ir, dataset, "classes" in decl.params)
    relax_name = request.relax or ir.relax.name
    relax_opts = dict(ir.relax.options) if relax_name == ir.relax.name else {}
    relax_opts.update(request.relax_options)
    relax = load_relaxation(relax_name, relax_opts)
    relax.check_config(base)
    refuse_fix_alpha(relax, base)
    select_name = request.select or ir.select.name
    select_opts = dict(ir.select.options) if select_name == ir.select.name else {}
    select_opts.update(request.select_options)
    selector = load_selector(select_name, select_opts)
    selector.check(ir)  # before training: a bad option used to surface only after the whole search
    config = base
    notes: list[str] = []  # what the user should hear before the search starts
    if config.cutout > dataset.shape[1] // 2:
        notes.append(f"cutout {config.cutout} capped at {dataset.shape[1] // 2} for {dataset.shape[1]}px images")
        config = attrs.evolve(config, cutout=dataset.shape[1] // 2)
    if config.arch_start >= config.epochs and not config.fix_alpha:
        notes.append(f"α is never trained: arch_start = {config.arch_start} is not below epochs = {config.epochs}, "
                     "so the genotype comes from the random initial α (lower it, e.g. --opt arch_start=0)")
    if relax.arch_after_weights and config.levels == 2 and config.arch_every > 1 and not config.fix_alpha:
        # ProxylessNAS' schedule restarts every epoch and steps α after the arch_every-th weight step only
        steps = len(Batches(dataset.train, split_indices(len(dataset.train), config.train_portion)[0], config.batch,
                            shuffle=False, seed=0, drop_single=True))
        if steps < config.arch_every:
            notes.append(f"α is never trained: {relax.name} steps α after every arch_every = {config.arch_every}th "
                         f"weight step of an epoch, and an epoch has {steps} (lower --opt arch_every or --opt batch)")
    if not config.stages and (config.skip_limit is not None or config.carry_alpha):
        # these act only between or after the stages of runtime/progressive.py; a plain search would drop them
        used = "skip_limit" if config.skip_limit is not None else "carry_alpha"
        notes.append(f"{used} applies only to a progressive search (a `stages` setting); this one-stage search "
                     "ignores it")
    if config.levels == 1:  # one split and an α step with every weight step (runtime/step.py): these go unread
        defaults = attrs.fields_dict(SearchConfig)
        unused = [f"{k} = {getattr(config, k)}" for k in ("train_portion", "arch_every")
                  if getattr(config, k) != defaults[k].default]
        if unused:
            notes.append(f"{' and '.join(unused)} not used: a single-level search (levels = 1) trains weights and α "
                         "on the whole training split, with an α step at every weight step")
    if config.stages and config.skip_limit is not None and selector.name != "magnitude":
        notes.append(f"skip_limit = {config.skip_limit} is not applied: the {selector.name} selector picks the final "
                     "genotype, and the skip-connect rule (runtime/progressive.py) follows the magnitude rule only")
    ir.meta["warnings"] = ir.meta.get("warnings", []) + notes
    seed_everything(config.seed, config.deterministic)
    generator = torch.Generator().manual_seed(config.seed)
    net = build_supernet(ir, relax, generator=generator)
    if config.fix_alpha:  # DARTS-PT's "fixed α": uniform mixture during search, selection by perturbation
        with torch.no_grad():
            for a in net.alphas.values():
                a.zero_()
    relax.setup(ir, net)
    if not net.alphas:
        raise SearchError(f"space {ir.name!r} has nothing to search (no edge or layer has two candidates)")
    device = pick_device(config.device)
    mode, reason = choose_memory(config.memory, ir, config.batch, device)
    fuse, fuse_reason = choose_fusion(config, device)
    net.set_memory(mode, share=config.share_work, fuse=fuse)
    ir.meta["memory"] = {"mode": mode, "reason": reason}
    ir.meta["fuse_edges"] = {"used": fuse, "reason": fuse_reason}
    if config.fuse_edges is True and not fuse:  # asked for by name, as cuda_graphs below: say it is not used
        notes.append(f"fuse_edges = true is not used: {fuse_reason}")
        ir.meta["warnings"].append(notes[-1])
    blocker = graph_blocker(net, relax, config, device, _dist.world_size())
    ir.meta["cuda_graphs"] = {"used": blocker is None, "reason": blocker or "the step is static: captured once, replayed"}
    if config.cuda_graphs is True and blocker is not None:  # asked for by name: say it is not used, and why
        notes.append(f"cuda_graphs = true is not used: {blocker}")
        ir.meta["warnings"].append(notes[-1])
    held = compile_blocker(net, relax, config, stage)
    if config.torch_compile is True and held is not None:  # asked for by name, as cuda_graphs above
        notes.append(f"torch_compile = true is not used: {held}")
        ir.meta["warnings"].append(notes[-1])
    ir.meta["torch_compile"] = {"used": held is None, "reason": held or "each cell compiled, then checked against a "
                                                                        "float64 copy on the step's shapes"}
    job = Job(request=request, ir=ir, config=config, dataset=dataset, relax=relax, selector=selector,
              net=net.to(device), device=device, space_path=str(Path(decl.path).resolve()),
              # the space's own file first: its copy keeps the plain name (space/x.nas) when a file it extends
              # from another folder has the same name, and resume's hint names that copy
              space_files=tuple(dict.fromkeys([str(decl.path), *map(str, decl.files)])), notes=tuple(notes))
    # distributed: a --batch the ranks cannot split is a setting like any other, refused here (the command
    # line prints it once) rather than in run_search, after every rank printed it and a default run dir was made
    _dist.check_job(job)
    return job


def _no_second_order(relax: str, settings: Mapping[str, Any], overrides: Mapping[str, Any]) -> SearchError | None:
    """The relaxation's refusal of a second-order search (GDAS, SNAS, DropNAS...), if it refuses one, else None.

    SNAS and DropNAS search single-level: `--second-order` first met the rule that second order needs
    levels = 2, whose hint (`--opt levels=2`) then led to this refusal, the one that says what to do.
    """
    if overrides.get("order", settings.get("order")) != 2:
        return None
    try:
        config, relaxation = make_config(settings, {**overrides, "levels": 2}), load_relaxation(relax)
    except NascError:
        return None
    try:
        relaxation.check_config(config)
    except SearchError as e:
        return e
    return None


def compiled_settings(settings: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    """The search settings the compiler reads (`affine`) where the run's (`run`: a SearchConfig's `to_json()`,
    or config.json's "search") differ from the file's `settings`.

    `--opt affine=true` changed config.json alone: the supernet was compiled from the file's block and
    kept its affine-free BNs. Empty when they agree, so a space's IR and fingerprint stay as they were.
    Training a search run compiles with it too, to compare against the fingerprint the search recorded.
    """
    affine = run.get("affine", False)
    return {"affine": affine} if affine != bool(settings.get("affine", False)) else {}


def _beside_preset(decl, settings: Mapping[str, Any], preset_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The preset's settings less those the space writes in the file of its `relax` line or a file extending it.

    A preset named on the command line replaces the space's whole `search:` block; one the space
    names itself (`relax gdas`, `relax rome`) replaces only what it inherits from files before that
    line, so `epochs = 10` written beside it, or in a file extending it, is not silently undone.
    """
    from nasc.runtime.config import from_space

    order = {f: i for i, f in enumerate(decl.files)}
    at = order.get(decl.relax.span.file, 0)
    beside = {k: v for k, v in settings.items() if order.get(decl.search[k].span.file, at) >= at}
    written = set(from_space(beside))
    return {k: v for k, v in preset_settings.items() if k not in written}


def evaluated_search(decl) -> dict[str, Any]:
    """The file's `search:` block, evaluated with the space's default parameters."""
    from nasc.compiler.expr import evaluate
    from nasc.compiler.build_ir import eval_params

    params = eval_params(decl, {})
    return {k: evaluate(s.value, params) for k, s in decl.search.items()}


def describe(job: Job) -> dict[str, Any]:
    """The resolved configuration (what `--dry-run` shows and config.json records)."""
    from nasc.runtime.progressive import stage_plan  # progressive imports this module
    costs = job.ir.meta["costs"]["total_without_aux"]
    return {
        "space": job.ir.name,
        "space_file": job.space_path,
        "fingerprint": job.ir.meta["fingerprint"],
        "params": dict(job.request.params),
        "resolved_params": {k: v for k, v in job.ir.params.items()},
        "input": list(job.ir.input_shape),
        "data": {**job.dataset.record(), **search_split(job)},
        "relax": {"name": job.relax.name, "options": to_json(job.relax.options)},
        "select": {"name": job.selector.name, "options": to_json(job.selector.options)},
        "search": job.config.to_json(),
        "supernet_weights": sum(p.numel() for p in job.net.weight_parameters()),
        "arch_parameters": sum(p.numel() for p in job.net.arch_parameters()),
        # one forward's: the α pass and the weight pass keep theirs one after the other (what `auto` compares)
        "activation_bytes_estimate": costs["act"] * job.config.batch,
        "device": str(job.device),
        "memory": job.ir.meta.get("memory"),
        "cuda_graphs": job.ir.meta.get("cuda_graphs"),
        "fuse_edges": job.ir.meta.get("fuse_edges"),
        "torch_compile": job.ir.meta.get("torch_compile"),
        # what the run printed as `warning:` lines (α never trained, cutout capped): a reader of the run has
        # only this file, and the settings alone do not say that one of them was ignored or changed
        "warnings": list(job.ir.meta.get("warnings", [])),
        "stage_plan": stage_plan(job) if job.config.stages else None,  # progressive search: every stage
        "plugins": explicit_plugins(),  # loaded again by `resume`
        "request": to_json({"relax": job.request.relax, "relax_options": job.request.relax_options,
                            "select": job.request.select, "select_options": job.request.select_options,
                            "overrides": job.request.overrides, "params": job.request.params}),
        **environment(),
    }


def search_split(job: Job) -> dict[str, int]:
    """How many training images train the weights and how many train α (the Trainer's split)."""
    n = len(job.dataset.train)
    if job.config.levels == 1:
        return {"weight_images": n, "arch_images": n}
    weights, arch = split_indices(n, job.config.train_portion)
    return {"weight_images": len(weights), "arch_images": len(arch)}


def alpha_table(net: Network) -> dict[str, dict[str, dict[str, float]]]:
    """Per group, per edge, per op: the strength a magnitude selector reads (softmax of α)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for group in net.alphas:
        probs = strengths(net, group)
        out[group] = {row: {op: round(float(probs[r, i]), 6) for i, op in enumerate(net.group_ops[group][r])}
                      for r, row in enumerate(net.group_rows[group])}
    return out


class Trainer:
    """Owns the optimisers, data and RNG state of one search; `run_epoch` is resumable at epoch boundaries."""

    def __init__(self, job: Job):
        self.job = job
        cfg = job.config
        net = job.net
        self.weights = net.weight_parameters()
        self.arch = net.arch_parameters()
        self.w_opt = torch.optim.SGD(self.weights, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                     nesterov=cfg.nesterov and cfg.momentum > 0)
        graphs = graph_blocker(net, job.relax, cfg, job.device, _dist.world_size()) is None
        if cfg.arch_optimizer == "adam":  # capturable: its step count lives on the device, readable by a graph
            self.a_opt = torch.optim.Adam(self.arch, lr=cfg.arch_lr, betas=tuple(cfg.arch_betas),
                                          weight_decay=cfg.arch_weight_decay, capturable=graphs)
        else:
            self.a_opt = torch.optim.SGD(self.arch, lr=cfg.arch_lr, momentum=cfg.arch_momentum,
                                         weight_decay=cfg.arch_weight_decay)
        data = job.dataset.train
        if job.device.type == "cuda":  # CIFAR-sized sets live on the GPU: batches and augmentation never leave it
            data = type(data)(images=data.images.to(job.device), labels=data.labels.to(job.device))
        self.channels_last = cfg.channels_last
        if self.channels_last:
            job.net.to(memory_format=torch.channels_last)
        if cfg.levels == 2:
            train_idx, val_idx = split_indices(len(data), cfg.train_portion)
        else:
            train_idx = val_idx = torch.arange(len(data))
        self.train = Batches(data, train_idx, cfg.batch, shuffle=True, seed=cfg.seed, drop_single=True)
        self.val = Batches(data, val_idx, cfg.batch, shuffle=True, seed=cfg.seed + 1, drop_single=True)
        self.val_eval = Batches(data, val_idx, max(cfg.batch, 256), shuffle=False, seed=0)
        self.augment = Augment(job.dataset, cutout=cfg.cutout, train=True)
        self.plain = Augment(job.dataset, train=False)
        self.aug_gen = torch.Generator().manual_seed(cfg.seed + 2)
        self.epoch = 0
        # the per-epoch genotype is always the cheap magnitude view; a costly final selector runs once at the end
        self.magnitude = job.selector if job.selector.name == "magnitude" else load_selector("magnitude")
        self.sync = _dist.attach_search(self)  # distributed: shard batches, return hooks (no-op in one process)
        self.step = SearchStep(net, job.relax, cfg, self.w_opt, self.a_opt, device=job.device, sync=self.sync,
                               world_size=_dist.world_size())
        self.eval_forward = EvalForward(net, self.step.autocast, enabled=self.step.uses_graphs)
        self._compile_cells()
        if job.device.type == "cuda" and not cfg.deterministic:
            torch.backends.cudnn.benchmark = True  # as the official DARTS code: autotuned convolutions

    def _compile_cells(self) -> None:
        """torch.compile the cells where asked and allowed; each compiled cell is checked against eager first."""
        job, cfg = self.job, self.job.config
        if not job.ir.meta["torch_compile"]["used"]:  # `prepare` asked compile_blocker
            return
        shape = (min(self.train.batch_size, len(self.train.indices)), *job.dataset.shape)  # the first batch's
        example = torch.randn(shape, generator=torch.Generator().manual_seed(cfg.seed)).to(job.device)
        if self.channels_last:
            example = example.contiguous(memory_format=torch.channels_last)
        job.relax.set_phase("weights")
        t0 = time.perf_counter()
        report = compile_cells(job.net, example, autocast=self.step.autocast, precision=cfg.precision)
        used = any(v == "compiled" for v in report.values())
        job.ir.meta["torch_compile"] = {"used": used, "reason": summary(report), "cells": report,
                                        "seconds": round(time.perf_counter() - t0, 1)}

    # ---- state ----
    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "net": self.job.net.state_dict(), "w_opt": self.w_opt.state_dict(),
                "relax": self.job.relax.state_dict(),
                "a_opt": self.a_opt.state_dict(), "rng": torch.get_rng_state(), "aug_rng": self.aug_gen.get_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def load_state(self, state: Mapping[str, Any]) -> None:
        try:
            self.job.net.load_state_dict(state["net"])
            self.w_opt.load_state_dict(state["w_opt"])
            self.a_opt.load_state_dict(state["a_opt"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise SearchError(f"the checkpoint does not fit this supernet: {str(e).splitlines()[0]}") from None
        self.job.relax.load_state_dict(state.get("relax", {}))
        torch.set_rng_state(state["rng"])
        self.aug_gen.set_state(state["aug_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.epoch = int(state["epoch"])

    # ---- one epoch ----
    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.step.loss(x, y)

    def _arch_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.step.arch_loss(x, y)

    def _batch(self, images: torch.Tensor, labels: torch.Tensor, augment: Augment) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.job.device
        x = augment(images.to(device), self.aug_gen).to(device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, labels.to(device)

    def run_epoch(self, emit: Callable[[Event], None], *, lr: float | None = None,
                  data_epoch: int | None = None) -> dict[str, Any]:
        """One epoch; `lr` fixes the weight learning rate (selectors' fine-tuning), else the schedule sets it.

        `data_epoch` picks the batch orders instead of the epoch: tuning epochs after the search (DARTS-PT)
        all run at the last epoch's schedule, and would otherwise all replay its batches in its order.
        """
        job, cfg, net = self.job, self.job.config, self.job.net
        epoch = min(self.epoch, cfg.epochs - 1)
        order = epoch if data_epoch is None else data_epoch
        if lr is None:
            lr = learning_rate(cfg.schedule, epoch, cfg.epochs, cfg.lr, cfg.lr_min, exponent=cfg.schedule_exponent,
                               warmup=cfg.warmup, gamma=cfg.schedule_gamma, every=cfg.schedule_every)
        for g in self.w_opt.param_groups:
            g["lr"] = lr
        job.relax.set_progress(epoch, cfg.epochs)
        net.drop_path_prob = search_drop_path(cfg.drop_path, epoch, cfg.epochs)
        update_arch = epoch >= cfg.arch_start and not cfg.fix_alpha
        net.train()
        self.sync.begin_epoch(order)  # distributed hook (reseeds augmentation by it)
        val_iter, val_pass = self.val.epoch(order), 0
        tot_loss = tot_correct = tot_n = 0.0
        steps = len(self.train)
        for step, (xb, yb) in enumerate(self.train.epoch(order)):
            job.relax.set_progress(epoch, cfg.epochs, step)
            x, y = self._batch(xb, yb, self.augment)
            # bi-level: an α step every `arch_every` steps; single-level: α and weights from every step's backward
            nth = step + 1 if job.relax.arch_after_weights else step  # ProxylessNAS: after the arch_every-th
            arch_step = update_arch and (cfg.levels == 1 or nth % cfg.arch_every == 0)
            xv = yv = None
            if arch_step and cfg.levels == 2:
                try:
                    xv, yv = next(val_iter)
                except StopIteration:  # a shorter validation split: each further pass gets an order of its own
                    val_pass += 1
                    val_iter = self.val.epoch(order + 10_000 * val_pass)
                    xv, yv = next(val_iter)
                xv, yv = self._batch(xv, yv, self.augment)
            with normalisable(y.numel()):
                out = self.step(x, y, xv, yv, lr=lr, arch_step=arch_step)
            loss, logits = out.loss, out.logits
            arch_loss = None if out.arch_loss is None else float(out.arch_loss)
            loss_v = float(loss.detach())
            if not math.isfinite(loss_v):
                raise SearchError(f"the training loss became {loss_v} at epoch {epoch + 1}, step {step + 1}",
                                  hint="lower the learning rate or check the data")
            correct = int((logits.argmax(1) == y).sum())
            n = y.numel()
            tot_loss += loss_v * n
            tot_correct += correct
            tot_n += n
            emit({"type": "step", "epoch": epoch, "step": step, "steps": steps, "loss": loss_v,
                  "acc": correct / n, "arch_loss": arch_loss, "lr": lr})
        val_loss, val_acc = self.evaluate()
        self.epoch += 1
        genotype = self.magnitude.select(net, job.ir)  # cheap per-epoch view; the final selector runs at the end
        extra = {"drop_path": net.drop_path_prob} if cfg.drop_path else {}
        return {"type": "epoch", "epoch": epoch, "lr": lr, **extra, "train_loss": tot_loss / max(tot_n, 1),
                "train_acc": tot_correct / max(tot_n, 1), "val_loss": val_loss, "val_acc": val_acc,
                "arch_updates": bool(update_arch), "alpha": alpha_table(net), "genotype": G.canonical_str(genotype),
                "_genotype": genotype}

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        net = self.job.net
        self.sync.before_eval()  # distributed hook: average BN statistics over ranks
        net.eval()
        self.job.relax.set_phase("eval")
        loss = correct = n = 0.0
        for xb, yb in self.val_eval.epoch(0):
            x, y = self._batch(xb, yb, self.plain)
            logits = self.eval_forward(x)
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += y.numel()
        net.train()
        return loss / max(n, 1), correct / max(n, 1)


def search_drop_path(p: float, epoch: int, epochs: int) -> float:
    """RobustDARTS' search-time drop path: rises linearly from 0 at the first epoch to `p` at the last
    (`p · epoch / (epochs − 1)`, src/search/train_search.py), on every mixed edge's output. Epochs past
    the last (DARTS-PT's tuning after the search) keep `p`."""
    return p * min(epoch, epochs - 1) / (epochs - 1) if p and epochs > 1 else p


def _emit_to(run: RunDir, on_event: Callable[[Event], None] | None) -> Callable[[Event], None]:
    def emit(event: Event) -> None:
        record = {k: v for k, v in event.items() if not k.startswith("_")}
        if event["type"] in ("step", "epoch", "select"):
            run.append(run.metrics, record)
        if on_event is not None:
            on_event(event)
    return emit


def run_search(job: Job, run_path: str | Path, *, on_event: Callable[[Event], None] | None = None,
               resume_state: Mapping[str, Any] | None = None, stop_after: int | None = None) -> SearchResult:
    """Train `job` in `run_path` (new, or continuing from `resume_state`); `stop_after` epochs is for tests."""
    _dist.check_job(job)  # distributed hook: refuse what several processes cannot run
    if job.config.stages:  # progressive search (P-DARTS): runtime/progressive.py runs the stages
        from nasc.runtime.progressive import run_progressive
        return run_progressive(job, run_path, on_event=on_event, resume_state=resume_state, stop_after=stop_after)
    run = _dist.run_dir(run_path)  # distributed hook: rank 0 writes, other ranks only read
    trainer = Trainer(job)
    with run.writing(new=resume_state is None):  # one writer per run dir: a second process fails here
        return _search_in(run, job, trainer, on_event=on_event, resume_state=resume_state, stop_after=stop_after)


def _search_in(run: RunDir, job: Job, trainer: Trainer, *, on_event: Callable[[Event], None] | None,
               resume_state: Mapping[str, Any] | None, stop_after: int | None) -> SearchResult:
    """`run_search`'s loop, in the run it holds the lock of."""
    if resume_state is None:
        run.write("config.json", {**describe(job), "space_sources": run.copy_sources(job.space_files)})
        run.write("space.ir.json", to_json_dict(job.ir))
    else:
        trainer.load_state(resume_state)
        run.truncate_metrics(int(resume_state["metrics_size"]))
        run.record_resume(trainer.epoch, job.device)
    emit = _emit_to(run, on_event)
    cfg = job.config
    emit({"type": "start", "epochs": cfg.epochs, "first_epoch": trainer.epoch, "steps": len(trainer.train),
          "batch": cfg.batch, "config": describe(job), "run_dir": str(run.path)})
    final: dict[str, Any] = {}
    genotype = None
    done = 0
    while trainer.epoch < cfg.epochs:
        t0 = time.perf_counter()
        record = trainer.run_epoch(emit)
        genotype = record["_genotype"]
        emit(record)
        seconds = time.perf_counter() - t0
        run.append(run.timing, {"epoch": record["epoch"], "seconds": round(seconds, 3),
                                "graph_replays": trainer.step.replays,
                                "images_per_second": round(len(trainer.train) * cfg.batch / max(seconds, 1e-9), 1)})
        run.save_checkpoint({**trainer.state(), "fingerprint": job.ir.meta["fingerprint"],
                             "metrics_size": run.metrics_size(), "space": job.ir.name})
        final = {k: v for k, v in record.items() if not k.startswith("_") and k != "alpha"}
        done += 1
        if stop_after is not None and done >= stop_after and trainer.epoch < cfg.epochs:
            raise KeyboardInterrupt  # simulated interruption (tests)
    if job.selector.name != "magnitude" or genotype is None:
        genotype = job.selector.select(job.net, job.ir, relax=job.relax, trainer=trainer, emit=emit)
    try:
        if _dist.is_main():  # distributed hook: rank 0 writes the genotype
            G.save(genotype, run.path / "genotype.json")
    except OSError as e:
        raise SearchError(f"cannot write {run.path / 'genotype.json'}: {e}") from None
    emit({"type": "end", "genotype": genotype, "final": final, "run_dir": str(run.path)})
    return SearchResult(genotype=genotype, run_dir=run.path, final=final)


def _search_config(run: RunDir) -> dict[str, Any]:
    """The run's config, refusing a `nasc train` run up front: its checkpoint would otherwise fail the
    fingerprint check, reported as if the space file had changed."""
    config = run.read_config("space_file")
    if config.get("kind") == "train":
        raise SearchError(f"{run.path} is a training run, not a search",
                          hint="continue it with `nasc train --resume`; `nasc export` / `nasc viz` read it too")
    return config


def _copy_hint(run: RunDir, config: Mapping[str, Any]) -> str | None:
    """Where the run keeps a copy of its space file (runs since space/ was written), to put back."""
    copy = next((run.path / c for c in config.get("space_sources") or []
                 if Path(c).name == Path(config["space_file"]).name), None)
    if copy is None or not copy.is_file():
        return None
    return f"the run keeps a copy of it as searched: copy {copy} back to {config['space_file']}"


def resume(run_path: str | Path, *, on_event: Callable[[Event], None] | None = None,
           stop_after: int | None = None) -> SearchResult:
    """Continue an interrupted run from its last checkpoint, with the settings it started with."""
    run = _dist.run_dir(run_path)
    # distributed: every rank reads the run and agrees on its errors, printed once
    config, request = _dist.agreed(_resume_request, run)
    with run.writing():  # before anything is built and the checkpoint read: another writer may still move it on
        with _dist.alike():  # the run's recorded settings, the same on every rank
            job = resuming_with(config.get("plugins") or [], lambda: prepare(request))
        state = _dist.agreed(_resume_state, run, job, config)
        return run_search(job, run.path, on_event=on_event, resume_state=state, stop_after=stop_after)


def _resume_request(run: RunDir) -> tuple[dict[str, Any], Request]:
    """A run's config and the request it was started with."""
    config = _search_config(run)
    req = config.get("request") or {}
    request = Request(space=config["space_file"], params=req.get("params") or {}, relax=req.get("relax"),
                      relax_options=req.get("relax_options") or {}, select=req.get("select"),
                      select_options=req.get("select_options") or {}, overrides=req.get("overrides") or {})
    if not Path(request.space).is_file():
        raise SearchError(f"the run's space file {request.space} no longer exists", hint=_copy_hint(run, config))
    return config, request


def _resume_state(run: RunDir, job: Job, config: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint to resume `run` from, unless it does not fit `job` or the run is finished."""
    state = run.load_checkpoint(job.ir.meta["fingerprint"])
    check_same_data(config.get("data"), job.dataset, run.path)
    if (run.path / "genotype.json").exists() and int(state["epoch"]) >= job.config.epochs:
        raise SearchError(f"the run in {run.path} is already finished",
                          hint="its genotype is in genotype.json")
    return state


def reselect(run_path: str | Path, select: str, select_options: Mapping[str, Any] | None = None, *,
             on_event: Callable[[Event], None] | None = None) -> tuple[G.Genotype, Path]:
    """Run a selector again on a run's last checkpoint; writes genotype-<selector>.json beside the original."""
    run = RunDir(run_path)
    config = _search_config(run)
    req = config.get("request") or {}
    request = Request(space=config["space_file"], params=req.get("params") or {}, relax=req.get("relax"),
                      relax_options=req.get("relax_options") or {}, select=select,
                      select_options=dict(select_options or {}), overrides=req.get("overrides") or {})
    if not Path(request.space).is_file():
        raise SearchError(f"the run's space file {request.space} no longer exists", hint=_copy_hint(run, config))
    with run.writing():  # it appends to metrics.jsonl and reads the checkpoint a running search rewrites
        return _reselect_in(run, request, config, on_event)


def _reselect_in(run: RunDir, request: Request, config: Mapping[str, Any],
                 on_event: Callable[[Event], None] | None) -> tuple[G.Genotype, Path]:
    """`reselect`'s work, in the run it holds the lock of."""
    job = resuming_with(config.get("plugins") or [], lambda: prepare(request))
    if job.config.stages:  # the checkpoint holds the last stage's supernet; `job` is the first stage's
        raise SearchError("nasc select cannot re-select a progressive (P-DARTS) run",
                          hint="its checkpoint holds the last stage's supernet; search again with "
                               "--select instead")
    state = run.load_checkpoint(job.ir.meta["fingerprint"])
    check_same_data(config.get("data"), job.dataset, run.path)  # selectors fine-tune and score on it
    trainer = Trainer(job)
    trainer.load_state(state)

    def emit(event: Event) -> None:
        if event["type"] == "select":
            run.append(run.metrics, event)
        if on_event is not None:
            on_event(event)

    genotype = job.selector.select(job.net, job.ir, relax=job.relax, trainer=trainer, emit=emit)
    target, i = run.path / f"genotype-{job.selector.name}.json", 1
    while target.exists():  # genotype-perturbation.json taken: genotype-perturbation-2.json, ...
        i += 1
        target = run.path / f"genotype-{job.selector.name}-{i}.json"
    G.save(genotype, target)
    return genotype, target


def default_run_dir(space_name: str, seed: int) -> Path:
    return default_run_path(space_name, seed, claim=_dist.is_main())
