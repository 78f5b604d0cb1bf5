"""Training a derived architecture from scratch (`nasc train`).

The network is the space specialised to a genotype (compiler/derive.py) and
lowered in evaluation mode; the protocol comes from the space's `train:`
block (DARTS: C = 36, 20 cells, auxiliary head 0.4, drop path 0.2 rising
linearly, cutout 16, SGD 0.025 cosine, 600 epochs, batch 96), then the
command line. Runs use the same run-directory layout, atomic checkpoints and
resume as searches.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F

from nasc.compiler import genotype as G
from nasc.compiler.build_ir import eval_params
from nasc.compiler.derive import specialise_to_genotype
from nasc.compiler.expr import evaluate
from nasc.compiler.ir import SpaceIR, to_json_dict
from nasc.compiler.pipeline import compile_decl
from nasc.compiler.resolve import resolve_path
from nasc.errors import GenotypeError, NascError, NasSemanticError, SearchError
from nasc.plugins import explicit_plugins, resuming_with
from nasc.runtime.augment import Augment
from nasc.runtime.data import Batches, Dataset, check_same_data, load_dataset, normalisable, recorded_data_dir
from nasc.runtime import distributed as _dist  # torch.distributed hooks (runtime/distributed.py)
from nasc.runtime.rundir import RunDir, default_run_path, environment
from nasc.runtime.schedules import learning_rate
from nasc.runtime.search import check_classes, compiled_settings, evaluated_search, pick_device, seed_everything
from nasc.runtime.supernet import Network, build_network
from nasc.runtime.train_config import TrainConfig, check_train_block, train_config

Event = dict[str, Any]


@attrs.frozen(kw_only=True)
class TrainRequest:
    genotype: str  # file, run directory or genotype string
    space: str | None = None
    params: dict[str, Any] = attrs.field(factory=dict)
    overrides: dict[str, Any] = attrs.field(factory=dict)
    input_shape: tuple[int, int, int] | None = None  # compile for this input instead of the dataset's (--dry-run)


@attrs.define(kw_only=True)
class TrainJob:
    request: TrainRequest
    genotype: G.Genotype
    ir: SpaceIR  # derived
    config: TrainConfig
    dataset: Dataset
    net: Network
    device: torch.device
    space_path: str


def read_genotype(source: str) -> tuple[G.Genotype, dict[str, Any] | None]:
    """A genotype from a file, a run directory (with its config) or a string."""
    return G.read_source(source)


def guess_space(genotype: G.Genotype, run_config: Mapping[str, Any] | None) -> str:
    if run_config and run_config.get("space_file") and Path(run_config["space_file"]).is_file():
        return run_config["space_file"]
    if genotype.space:
        return genotype.space
    cells = list(genotype.cells.values())
    if cells and all(c.n_inputs == 1 for c in cells):
        return "nb201"
    if any(e.op == "noise" for c in cells for e in c.edges):
        return "darts_s4"  # RobustDARTS S4's `noise` is in no other bundled space (darts' error said "did you mean 'none'?")
    if cells:
        return "darts"
    raise GenotypeError("cannot tell which space this genotype belongs to", hint="pass --space FILE")


def searched_data(run_config: Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset a search run searched on, so that `nasc train RUN` trains on it too (a run searched on
    CIFAR-10 or a plugin's data was otherwise trained on the digits, with the head fitted to them).

    Its data dir goes with it only while the dataset stays the same: `--data mnist` on a run searched on
    CIFAR-10 must look for MNIST where MNIST lives ($NASC_DATA or --data-dir), not in CIFAR-10's folder."""
    search = run_config.get("search") if run_config else None
    if not isinstance(search, dict) or not search.get("dataset"):
        return {}
    if overrides.get("dataset") not in (None, search["dataset"]):
        return {}
    return {"dataset": search["dataset"], "data_dir": search.get("data_dir")}


def searched_input(run_config: Mapping[str, Any] | None) -> tuple[tuple[int, int, int], int] | None:
    """The input shape and classes of the data a search run searched on, as its config records them."""
    data = run_config.get("data") if run_config and run_config.get("kind") != "train" else None
    try:
        return tuple(int(n) for n in data["shape"]), int(data["classes"])
    except (KeyError, TypeError, ValueError):
        return None


def train_params(space: str, run_config: Mapping[str, Any] | None, params: Mapping[str, Any],
                 input_shape: tuple[int, int, int] | None) -> tuple[dict[str, Any], tuple[int, int, int] | None]:
    """The parameters and input shape `nasc train` compiles `space` with, so that `nasc export` of a genotype or
    search run builds the network `nasc train` would: the `train:` block's parameters, then `params`; for a search
    run, the searched data's input shape and classes (`nasc train RUN` trains on that data; without them a DARTS
    search on the 8x8 digits exported the 3x32x32 network). `input_shape` overrides the data's, with the
    space's own classes, as `nasc train --dry-run --input` counts. A genotype alone: the space's declared input."""
    decl = resolve_path(space)
    base = eval_params(decl, {})
    values = {k: evaluate(s.value, base) for k, s in decl.train.items() if k in decl.params}
    values.update(params)
    searched = searched_input(run_config)
    if searched is not None and input_shape is None:
        input_shape = searched[0]
        if "classes" in decl.params and "classes" not in values:
            values["classes"] = searched[1]
    return values, input_shape


def changed_since_search(decl, run_config: Mapping[str, Any] | None) -> list[str]:
    """A warning when the space file of a search run, trained by its directory, no longer compiles to the space
    the run searched (its recorded fingerprint): an op body or candidate edited since would train another
    network than the one the search scored, with nothing to show for it. Compiling is cheap (no torch)."""
    if not run_config or run_config.get("kind") == "train" or not isinstance(run_config.get("fingerprint"), str):
        return []
    try:
        searched = compile_decl(decl, params=dict(run_config["resolved_params"]),
                                input_shape=tuple(run_config["input"]),  # and `--opt affine=true`, if the search had it
                                search=compiled_settings(evaluated_search(decl), run_config.get("search") or {}))
    except (KeyError, TypeError, ValueError, AttributeError, NascError):
        return []  # a config without what it takes to compile again: nothing to compare
    now = searched.meta["fingerprint"]
    if now == run_config["fingerprint"]:
        return []
    return [f"the space file {decl.path} changed since the search ran: it compiles to fingerprint {now} for the "
            f"searched parameters, the search recorded {run_config['fingerprint']}; the network trained may not be "
            "the one the search chose"]


def fit_to_dataset(config, shape: tuple[int, int, int]):
    """Cap a cutout written for 32x32 CIFAR at half the image side (a 16-pixel hole erases an 8x8 digit)."""
    side = shape[1]
    if config.cutout > side // 2:
        note = f"cutout {config.cutout} capped at {side // 2} for {side}x{side} images"
        return attrs.evolve(config, cutout=side // 2), [note]
    return config, []


def has_aux(ir: SpaceIR) -> bool:
    """Whether the (derived) network has an auxiliary head."""
    return any(layer.kind == "aux" for layer in ir.layers())


def declared_aux_weight(config, ir: SpaceIR, settings: Mapping[str, Any], overrides: Mapping[str, Any]):
    """The `aux ... weight W` of the space's network, unless a `train:` block or the command line sets
    aux_weight (the train setting defaults to 0, so a declared head would otherwise never be trained)."""
    aux = [layer for layer in ir.layers() if layer.kind == "aux"]
    if not aux or "aux_weight" in settings or overrides.get("aux_weight") is not None:
        return config
    return attrs.evolve(config, aux_weight=aux[0].weight)


def fit_aux_weight(config, ir: SpaceIR):
    """Set an auxiliary loss weight to 0 where there is no auxiliary head to weigh, saying why."""
    if not config.aux_weight or has_aux(ir):
        return config, []
    dropped = [w for w in ir.meta.get("warnings", []) if w.startswith("auxiliary head dropped")]
    why = ("the auxiliary head was dropped at this input size" if dropped
           else f"space {ir.name!r} has no auxiliary head")
    return attrs.evolve(config, aux_weight=0.0), [f"aux_weight {config.aux_weight:g} set to 0: {why}"]


def fit_drop_path(config, ir: SpaceIR):
    """Set drop path to 0 where the network has no cell edges for it to act on (a ProxylessNAS chain: its
    choice blocks and fixed layers are never dropped), saying so, rather than train as asked and ignore it."""
    if not config.drop_path or any(layer.kind == "cell" for layer in ir.layers()):
        return config, []
    return attrs.evolve(config, drop_path=0.0), [f"drop_path {config.drop_path:g} set to 0: network {ir.name!r} has "
                                                 "no cells (drop path acts on the edges of cells only)"]


def prepare_train(request: TrainRequest) -> TrainJob:
    """The training job of a request; a run directory as the genotype brings the plugins the run recorded."""
    genotype, run_config = read_genotype(request.genotype)
    recorded = run_config.get("plugins") if isinstance(run_config, dict) else None
    run_config = run_config if isinstance(run_config, dict) else None
    return resuming_with(recorded or [], lambda: _prepare_train(request, genotype, run_config))


def _prepare_train(request: TrainRequest, genotype: G.Genotype, run_config: Mapping[str, Any] | None) -> TrainJob:
    space = request.space or guess_space(genotype, run_config)
    try:
        decl = resolve_path(space)
    except NasSemanticError as e:
        if request.space or space != genotype.space or e.span is not None or not e.message.startswith("cannot find"):
            raise
        # the name came from the genotype file, not from the user: say so, and how to choose another
        raise GenotypeError(f"the genotype names space {space!r}, which cannot be found",
                            hint=f"pass --space FILE (the .nas file it was searched in); {e.hint}") from None
    base_params = eval_params(decl, {})  # the train block's own parameters override these below
    train_settings = {k: evaluate(s.value, base_params) for k, s in decl.train.items()}
    params = {k: v for k, v in train_settings.items() if k in decl.params}
    settings = {k: v for k, v in train_settings.items() if k not in decl.params}
    params.update(request.params)
    check_train_block(settings, {k: decl.train[k].span for k in settings})
    config = train_config(settings, {**searched_data(run_config, request.overrides), **request.overrides})
    config = attrs.evolve(config, data_dir=recorded_data_dir(config.data_dir))
    dataset = _dist.main_first(load_dataset, config.dataset, config.data_dir)  # distributed: one download per machine
    config, notes = fit_to_dataset(config, request.input_shape or dataset.shape)
    # the head fits the dataset, except in a dry run counted for another input (`--input`) without a
    # dataset named: that counts the network the space declares (DARTS ImageNet: 1000 classes)
    counting_for_input = request.input_shape is not None and "dataset" not in request.overrides
    if "classes" in decl.params and "classes" not in params and not counting_for_input:
        params["classes"] = dataset.classes
    ir = compile_decl(decl, params=params, input_shape=request.input_shape or dataset.shape)
    if not counting_for_input:
        check_classes(ir, dataset, "classes" in decl.params)
    derived = specialise_to_genotype(ir, genotype)
    config = declared_aux_weight(config, ir, settings, request.overrides)
    genotype = attrs.evolve(genotype, space=derived.name)  # genotype.json names the space it was trained in
    config, aux_notes = fit_aux_weight(config, derived)
    config, drop_notes = fit_drop_path(config, derived)
    notes += changed_since_search(decl, run_config) if space == guess_space(genotype, run_config) else []
    derived.meta["warnings"] = derived.meta.get("warnings", []) + notes + aux_notes + drop_notes
    seed_everything(config.seed, config.deterministic)
    net = build_network(derived)
    if not config.aux_weight:
        net.aux_ids = []  # the auxiliary head stays built (parameter counts) but is not trained
    device = pick_device(config.device)
    job = TrainJob(request=request, genotype=genotype, ir=derived, config=config, dataset=dataset,
                   net=net.to(device), device=device, space_path=str(Path(decl.path).resolve()))
    _dist.check_job(job)  # as search.prepare: before a default run dir is made, printed once by the command line
    return job


def counts(job: TrainJob) -> dict[str, int]:
    costs = job.ir.meta["costs"]
    return {"params": costs["total_without_aux"]["params"], "params_with_aux": costs["total"]["params"],
            "madds": costs["total_without_aux"]["madds"]}


def describe_train(job: TrainJob) -> dict[str, Any]:
    return {"space": job.ir.name, "space_file": job.space_path, "fingerprint": job.ir.meta["fingerprint"],
            "genotype": G.to_json(job.genotype), "resolved_params": dict(job.ir.params),
            "input": list(job.ir.input_shape), "train": attrs.asdict(job.config), **counts(job),
            "data": job.dataset.record(),
            "device": str(job.device),
            "warnings": job.ir.meta.get("warnings", []),
            "request": {"genotype": job.request.genotype, "space": job.request.space,
                        "params": job.request.params, "overrides": job.request.overrides},
            "plugins": explicit_plugins(),  # loaded again by `resume_train`
            **environment()}


def decay_groups(net: torch.nn.Module, bn_weight_decay: bool) -> list[Any]:
    """The optimiser's parameters: all decayed alike (DARTS, NAS-Bench-201), or with `bn_weight_decay = false`
    the batch norms' weights and biases in a group of their own without weight decay, as ProxylessNAS trains
    (run_manager.py, `no_decay_keys = "bn"`)."""
    if bn_weight_decay:
        return list(net.parameters())
    bn = {id(p) for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
    return [{"params": [p for p in net.parameters() if id(p) not in bn]},
            {"params": [p for p in net.parameters() if id(p) in bn], "weight_decay": 0.0}]


class Fitter:
    """Optimiser, data and RNG state of one training run; resumable at epoch boundaries."""

    def __init__(self, job: TrainJob):
        self.job = job
        cfg = job.config
        self.layout = torch.channels_last if cfg.channels_last else torch.contiguous_format
        job.net.to(memory_format=self.layout)
        self.opt = torch.optim.SGD(decay_groups(job.net, cfg.bn_weight_decay), lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay, nesterov=cfg.nesterov and cfg.momentum > 0)
        train = job.dataset.train
        self.batches = Batches(train, torch.arange(len(train)), cfg.batch, shuffle=True, seed=cfg.seed,
                               drop_single=True)
        test = job.dataset.test
        self.test = Batches(test, torch.arange(len(test)), max(cfg.batch, 256), shuffle=False, seed=0) if test else None
        self.augment = Augment(job.dataset, cutout=cfg.cutout, train=True)
        self.plain = Augment(job.dataset, train=False)
        self.gen = torch.Generator().manual_seed(cfg.seed + 2)
        self.epoch = 0
        self.sync = _dist.attach_train(self)  # distributed: shard batches, return hooks (no-op in one process)

    def state(self) -> dict[str, Any]:
        """The CUDA generators too, as a search checkpoints them: drop path draws its masks on the
        network's device, so a resumed GPU run otherwise dropped other paths than an uninterrupted one."""
        return {"epoch": self.epoch, "net": self.job.net.state_dict(), "opt": self.opt.state_dict(),
                "rng": torch.get_rng_state(), "aug_rng": self.gen.get_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}

    def load_state(self, state: Mapping[str, Any]) -> None:
        try:
            self.job.net.load_state_dict(state["net"])
            self.opt.load_state_dict(state["opt"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise SearchError(f"the checkpoint does not fit this network: {str(e).splitlines()[0]}") from None
        torch.set_rng_state(state["rng"])
        self.gen.set_state(state["aug_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.epoch = int(state["epoch"])

    def run_epoch(self, emit: Callable[[Event], None]) -> dict[str, Any]:
        job, cfg, net = self.job, self.job.config, self.job.net
        epoch = self.epoch
        lr = learning_rate(cfg.schedule, epoch, cfg.epochs, cfg.lr, cfg.lr_min, exponent=cfg.schedule_exponent,
                           warmup=cfg.warmup, gamma=cfg.schedule_gamma, every=cfg.schedule_every)
        for g in self.opt.param_groups:
            g["lr"] = lr
        net.drop_path_prob = cfg.drop_path * epoch / cfg.epochs  # DARTS: rises linearly from 0
        net.train()
        self.sync.begin_epoch(epoch)  # distributed hook
        tot = {"loss": 0.0, "correct": 0, "n": 0}
        steps = len(self.batches)
        use_aux = bool(cfg.aux_weight and net.aux_ids)
        for step, (xb, yb) in enumerate(self.batches.epoch(epoch)):
            x = self.augment(xb.to(job.device), self.gen).to(job.device).contiguous(memory_format=self.layout)
            y = yb.to(job.device)
            self.opt.zero_grad(set_to_none=True)
            with normalisable(y.numel()):
                if use_aux:
                    logits, aux = net(x, with_aux=True)
                    loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                    loss_total = loss + cfg.aux_weight * F.cross_entropy(aux, y, label_smoothing=cfg.label_smoothing)
                else:
                    logits = net(x)
                    loss = loss_total = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            loss_total.backward()
            self.sync.average_grads(list(net.parameters()))  # distributed hook: mean gradients over ranks
            if cfg.clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
            self.opt.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise SearchError(f"the training loss became {value} at epoch {epoch + 1}",
                                  hint="lower the learning rate")
            correct = int((logits.argmax(1) == y).sum())
            tot["loss"] += value * y.numel()
            tot["correct"] += correct
            tot["n"] += y.numel()
            emit({"type": "step", "epoch": epoch, "step": step, "steps": steps, "loss": value,
                  "acc": correct / y.numel(), "lr": lr})
        test_loss, test_acc, test_top5 = self.evaluate()
        self.epoch += 1
        return {"type": "epoch", "epoch": epoch, "lr": lr, "drop_path": net.drop_path_prob,
                "train_loss": tot["loss"] / max(tot["n"], 1), "train_acc": tot["correct"] / max(tot["n"], 1),
                "val_loss": test_loss, "val_acc": test_acc, "val_top5": test_top5}

    @torch.no_grad()
    def evaluate(self) -> tuple[float | None, float | None, float | None]:
        """Test loss, top-1 and top-5 accuracy (papers report both on ImageNet, as DARTS' train_imagenet.py
        does); top-5 is None with 5 classes or fewer, where every label is among the top 5. All three are
        None for a dataset without a test split (a plugin's): NaN would not be valid JSON in the run files."""
        if self.test is None:
            return None, None, None
        net = self.job.net
        self.sync.before_eval()  # distributed hook: average BN statistics over ranks
        net.eval()
        loss = correct = top5 = n = 0.0
        for xb, yb in self.test.epoch(0):
            x = self.plain(xb.to(self.job.device)).to(self.job.device).contiguous(memory_format=self.layout)
            y = yb.to(self.job.device)
            logits = net(x)
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            if logits.shape[1] > 5:
                top5 += int((logits.topk(5, dim=1).indices == y[:, None]).any(1).sum())
            else:
                top5 = None
            n += y.numel()
        return loss / max(n, 1), correct / max(n, 1), None if top5 is None else top5 / max(n, 1)


def run_train(job: TrainJob, run_path: str | Path, *, on_event: Callable[[Event], None] | None = None,
              resume_state: Mapping[str, Any] | None = None, stop_after: int | None = None) -> dict[str, Any]:
    """Train in `run_path`; returns the final epoch record (with the test accuracy)."""
    _dist.check_job(job)  # distributed hook: refuse what several processes cannot run
    run = _dist.run_dir(run_path)  # distributed hook: rank 0 writes, other ranks only read
    fit = Fitter(job)
    with run.writing(new=resume_state is None):  # one writer per run dir: a second process fails here
        return _train_in(run, job, fit, on_event=on_event, resume_state=resume_state, stop_after=stop_after)


def _train_in(run: RunDir, job: TrainJob, fit: Fitter, *, on_event: Callable[[Event], None] | None,
              resume_state: Mapping[str, Any] | None, stop_after: int | None) -> dict[str, Any]:
    """`run_train`'s loop, in the run it holds the lock of."""
    if resume_state is None:
        run.write("config.json", {**describe_train(job), "kind": "train"})
        run.write("network.ir.json", to_json_dict(job.ir))
        if _dist.is_main():  # distributed hook: rank 0 writes
            G.save(job.genotype, run.path / "genotype.json")
    else:
        fit.load_state(resume_state)
        run.truncate_metrics(int(resume_state["metrics_size"]))
        run.record_resume(fit.epoch, job.device)

    def emit(event: Event) -> None:
        if event["type"] in ("step", "epoch"):
            run.append(run.metrics, event)
        if on_event is not None:
            on_event(event)

    cfg = job.config
    emit({"type": "start", "title": "training", "epochs": cfg.epochs, "first_epoch": fit.epoch,
          "steps": len(fit.batches), "config": describe_train(job), "run_dir": str(run.path)})
    final: dict[str, Any] = {}
    done = 0
    while fit.epoch < cfg.epochs:
        t0 = time.perf_counter()
        record = fit.run_epoch(emit)
        emit(record)
        run.append(run.timing, {"epoch": record["epoch"], "seconds": round(time.perf_counter() - t0, 3)})
        run.save_checkpoint({**fit.state(), "fingerprint": job.ir.meta["fingerprint"],
                             "metrics_size": run.metrics_size(), "space": job.ir.name})
        final = record
        done += 1
        if stop_after is not None and done >= stop_after and fit.epoch < cfg.epochs:
            raise KeyboardInterrupt
    if _dist.is_main():  # distributed hook: rank 0 writes
        run.save_torch(run.path / "weights.pt", job.net.state_dict(), what="weights ")
    result = {"test_acc": final.get("val_acc"), "test_top5": final.get("val_top5"), "test_loss": final.get("val_loss"),
              **counts(job),
              "epochs": cfg.epochs}
    run.write("result.json", result)
    emit({"type": "end", "final": result, "run_dir": str(run.path)})
    return result


def resume_train(run_path: str | Path, *, on_event: Callable[[Event], None] | None = None,
                 stop_after: int | None = None) -> dict[str, Any]:
    with _dist.run_dir(run_path).writing():  # locked before reading the checkpoint, which another writer moves on
        with _dist.alike():  # read from the run, the same on every rank: its errors are printed once
            job, state = prepare_resume_train(run_path)
        return run_train(job, RunDir(run_path).path, on_event=on_event, resume_state=state, stop_after=stop_after)


def check_same_protocol(recorded: Mapping[str, Any] | None, config: TrainConfig, path: Path) -> None:
    """Refuse to resume with other training settings than the run started with. They are rebuilt from the space
    file's `train:` block, which the fingerprint leaves out: an edited block (lr, epochs) went on mid-run with the
    new values while config.json kept the old. Where the data is read from and the device may change (the data
    itself is checked by its fingerprint); a setting a run of an older nasc did not record is not compared."""
    if not isinstance(recorded, Mapping):
        return
    now = attrs.asdict(config)
    changed = [k for k, v in now.items() if k in recorded and k not in ("data_dir", "device") and recorded[k] != v]
    if changed:
        said = ", ".join(f"{k} {recorded[k]!r} -> {now[k]!r}" for k in changed)
        raise SearchError(f"the training settings of {path} changed since it started ({said})",
                          hint="the space file's train: block was edited: restore it to resume, or start a new run")


def prepare_resume_train(run_path: str | Path) -> tuple[TrainJob, dict[str, Any]]:
    """The job and last checkpoint of an interrupted training run (`nasc.resume` keeps the job's network)."""
    run = RunDir(run_path)
    config = run.read_config()
    if config.get("kind") != "train":
        raise SearchError(f"{run.path} is not a training run", hint="use `nasc search --resume` for searches")
    run.require(config, "space_file", "request")
    req = config["request"]
    genotype_file = run.path / "genotype.json"
    # the data it trained on: a run of `nasc train SEARCH_RUN` took the search's dataset, which the genotype file
    # read back here does not name (it resumed on the digits, whose input shape failed the fingerprint check)
    trained = config.get("train") if isinstance(config.get("train"), dict) else {}
    data = {k: trained[k] for k in ("dataset", "data_dir") if trained.get(k) is not None}
    request = TrainRequest(genotype=str(genotype_file), space=config["space_file"], params=req.get("params") or {},
                           overrides={**data, **(req.get("overrides") or {})})
    job = resuming_with(config.get("plugins") or [], lambda: prepare_train(request))
    state = run.load_checkpoint(job.ir.meta["fingerprint"])
    check_same_data(config.get("data"), job.dataset, run.path)
    check_same_protocol(config.get("train"), job.config, run.path)
    if int(state["epoch"]) >= job.config.epochs:
        raise SearchError(f"the training run in {run.path} is already finished")
    return job, state


@attrs.frozen(kw_only=True)
class TrainedRun:
    """What a training run directory holds, rebuilt: its derived IR, the network with its weights, the genotype."""

    ir: SpaceIR
    net: Network
    genotype: G.Genotype
    weights: Path  # the file the weights came from
    finished: bool  # False: the last checkpoint of an interrupted run


def run_space(config: Mapping[str, Any]) -> str:
    """The space a run used: its file where it still is, else its name."""
    path = config.get("space_file")
    return path if path and Path(path).is_file() else config["space"]


def load_trained(run_path: str | Path, *, space: str | None = None, params: Mapping[str, Any] | None = None,
                 input_shape: tuple[int, int, int] | None = None,
                 checkpoint: str | Path | None = None) -> TrainedRun:
    """The network a `nasc train` run trained, as it was compiled (space, parameters, input shape), with its weights.

    `space`, `params` and `input_shape` override what the run recorded, and `checkpoint` its weights
    (`weights.pt`, or an unfinished run's last `checkpoint.pt`); weights that do not fit are an error.
    """
    from nasc.runtime.export import load_weights  # export imports nothing from here

    run = RunDir(run_path)
    config = run.read_config()
    if config.get("kind") != "train":
        raise SearchError(f"{run.path} is not a training run", hint="train it first: nasc train RUN_DIR")
    run.require(config, "space", "resolved_params", "input")
    genotype = G.load(run.path / "genotype.json")

    def build() -> SpaceIR:
        decl = resolve_path(space or run_space(config))
        ir = compile_decl(decl, params={**config["resolved_params"], **(params or {})},
                          input_shape=input_shape or tuple(config["input"]))
        return specialise_to_genotype(ir, genotype)

    derived = resuming_with(config.get("plugins") or [], build)
    net = build_network(derived).eval()
    weights = run.path / "weights.pt"
    finished = weights.is_file()
    if checkpoint is not None:
        weights = Path(checkpoint)
    elif not finished:
        weights = run.checkpoint
        if not weights.is_file():
            raise SearchError(f"{run.path} has no weights yet", hint="a run writes its first checkpoint at the end "
                                                                       "of epoch 1")
    load_weights(net, weights)
    return TrainedRun(ir=derived, net=net, genotype=genotype, weights=weights, finished=finished)


def default_train_dir(space: str, seed: int) -> Path:
    return default_run_path(f"train-{space}", seed, claim=_dist.is_main())


def load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
