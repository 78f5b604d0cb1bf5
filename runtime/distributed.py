"""Several processes, one search: torch.distributed for `nasc search` and `nasc train`.

Launch with torchrun (`torchrun --nproc_per_node N -m nasc search SPACE ...`) or
`nasc search --nproc N`, which starts torch.distributed.run's elastic launcher on
this machine. Each process joins the group from the environment torchrun sets
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; `env://`), with gloo for
CPU tensors and NCCL for CUDA tensors (`cpu:gloo,cuda:nccl`), and uses the GPU
numbered by its LOCAL_RANK.

What is identical on every rank, and why (docs/distributed.md says more):

* the supernet's weights and α at every step: they start from the same seed (and
  are broadcast from rank 0 once, to be sure), every rank steps them with the same
  gradient (the all-reduced mean, `average_grads`) and the same optimiser state;
* every random choice a relaxation makes (GDAS/SNAS noise, binary-gate paths,
  DropNAS masks, ROME and PARSEC samples): they come from the global torch RNG,
  seeded identically on every rank and consumed identically (the draws depend on
  α only, and every rank has the same per-rank batch size, so even batch-shaped
  draws such as the `noise` op's match). Rank 0's generator state is broadcast at
  the start of every search epoch, which makes a resume exact on any rank count
  and is followed by a check that α and the weights agree bit for bit;
* BatchNorm running statistics, after `before_eval` averages them at the end of
  every epoch (so evaluation, checkpoints and selectors see one network).

What differs per rank: the samples (each rank takes its share of every global
batch, `ShardedBatches`), augmentation (a generator seeded from (seed, epoch,
rank)), and therefore BatchNorm's batch statistics in training mode.

Weight gradients are averaged by an explicit all-reduce after backward, not by
DistributedDataParallel: the search loop differentiates with several forward
passes per backward (ROME's K samples, PARSEC's children, second-order DARTS'
three passes at shifted weights), with `torch.autograd.grad` (which DDP's hooks
never see) and over sampled sub-networks that leave most candidates unused;
DDP handles none of these (find_unused_parameters only covers the last). One
flat all-reduce per step handles every relaxation the same way. Its cost is the
same bytes as DDP's buckets, without the overlap with backward.

Rank 0 alone writes the run directory (metrics, timing, the atomic checkpoint,
the genotype); the checkpoint holds unwrapped, rank-independent state, so any
number of ranks (one included) can resume it.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from nasc.errors import NascError, SearchError
from nasc.runtime.data import Batches
from nasc.runtime.rundir import RunDir, write_json_atomic

__all__ = ["init_from_env", "shutdown", "is_distributed", "world_size", "rank", "local_rank", "is_main",
           "main_first", "broadcast_object", "ShardedBatches", "LocalSync", "attach_search", "attach_train",
           "check_job", "run_dir", "launch", "strip_option", "cli_entry", "peer_stopped", "CHECK_ENV"]

#: when set, every rank writes `search-rank<r>.json` / `train-rank<r>.json` there at each evaluation:
#: α, digests of weights, buffers and RNG state, the genotype and the sample indices it saw (tests)
CHECK_ENV = "NASC_DIST_CHECK_DIR"

_AUG, _TRAIN_RNG = 0x617567, 0x726E67  # stream tags mixed into derived seeds

T = TypeVar("T")


# ----------------------------------------------------------------------------------------- process group


def is_distributed() -> bool:
    """True inside a process group of two or more ranks."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def is_main() -> bool:
    """Whether this process writes files and prints (rank 0, or the only process)."""
    return rank() == 0


def init_from_env() -> bool:
    """Join the process group torchrun describes; False (and nothing done) unless WORLD_SIZE > 1.

    Call it before `prepare`/`prepare_train`: it makes this rank's GPU (LOCAL_RANK) the current
    device, so `--device cuda` (or auto) puts the network there.
    """
    if dist.is_available() and dist.is_initialized():
        return is_distributed()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_available():
        raise SearchError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise SearchError(f"WORLD_SIZE is set but {', '.join(missing)} is not",
                          hint="launch with torchrun (or `nasc search --nproc N`), which sets all of them")
    backend = "gloo"
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local < torch.cuda.device_count():
            torch.cuda.set_device(local)
        backend = "cpu:gloo,cuda:nccl"  # collectives on CPU tensors go to gloo, on CUDA tensors to NCCL
    dist.init_process_group(backend=backend, init_method="env://")
    atexit.register(shutdown)
    return True


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main_first(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(...)` on each machine's local rank 0 first, then on the others (one download per machine).

    A failure on any rank stops every rank, with the failing rank's error: a data folder missing on one
    machine failed there alone, and the command line prints such an error once, from rank 0 (every rank
    meets a setting's error alike), so rank 0 went on to its next collective and was stopped by the
    launcher, and the user read "interrupted" instead of the error.
    """
    if not is_distributed():
        return fn(*args, **kwargs)
    first = local_rank() == 0
    out = _run_then_agree(first, fn, *args, **kwargs)  # local rank 0 of every machine, then the others
    later = _run_then_agree(not first, fn, *args, **kwargs)
    return out if first else later


def agreed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(...)` on every rank, which then agree on whether it failed (`fn` must run no collective).

    For what every rank reads from the run directory before a resume: an error there is the same on every
    rank and printed once, and a rank that cannot read what rank 0 can (a run directory on a disk one machine
    lacks) stops every rank with its error instead of failing alone and silently.
    """
    if not is_distributed():
        return fn(*args, **kwargs)
    return _run_then_agree(True, fn, *args, **kwargs)


def _run_then_agree(run: bool, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """`fn(...)` where `run` is true, then every rank learns whether it failed on some rank (`_raise_any`)."""
    out: Any = None
    error: BaseException | None = None
    if run:
        try:
            out = fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - re-raised below, once every rank knows, so none waits
            error = e
    _raise_any(error)
    return out


@contextlib.contextmanager
def alike() -> Iterator[None]:
    """Errors raised inside are met alike by every rank (settings every rank reads): printed once, by rank 0."""
    try:
        yield
    except NascError as e:
        e.every_rank = True
        raise


def _raise_any(error: BaseException | None) -> None:
    """Raise on every rank if some rank failed: its own error where it failed, the lowest failing rank's elsewhere
    (both marked `every_rank`: the command line prints the error once, from rank 0)."""
    said = None if error is None else (error.message, error.hint) if isinstance(error, NascError) else \
        (f"{type(error).__name__}: {error}", None)
    everyone: list[Any] = [None] * world_size()
    dist.all_gather_object(everyone, said)
    if isinstance(error, NascError):
        error.every_rank = True
    if error is not None:
        raise error
    failed = next((r for r, s in enumerate(everyone) if s is not None), None)
    if failed is not None:
        message, hint = everyone[failed]
        shown = SearchError(f"rank {failed} of {world_size()}: {message}", hint=hint)
        shown.every_rank = True
        raise shown


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank `src`'s value of a picklable object, on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=torch.device("cpu"))
    return box[0]


def _groups(tensors: Iterable[Tensor]) -> dict[tuple[torch.device, torch.dtype], list[int]]:
    out: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        out.setdefault((t.device, t.dtype), []).append(i)
    return out


def broadcast_tensors(tensors: Sequence[Tensor], src: int = 0) -> None:
    """In place: every tensor takes rank `src`'s value (one flat broadcast per device and dtype)."""
    if not is_distributed() or not tensors:
        return
    with torch.no_grad():
        for _, idx in _groups(tensors).items():
            flat = torch.cat([tensors[i].detach().reshape(-1) for i in idx])
            dist.broadcast(flat, src=src)
            offset = 0
            for i in idx:
                n = tensors[i].numel()
                tensors[i].copy_(flat[offset:offset + n].view_as(tensors[i]))
                offset += n


def average_tensors(tensors: Sequence[Tensor]) -> None:
    """In place: every tensor becomes the mean of its values over the ranks."""
    if not is_distributed() or not tensors:
        return
    w = world_size()
    with torch.no_grad():
        for _, idx in _groups(tensors).items():
            flat = torch.cat([tensors[i].detach().reshape(-1) for i in idx])
            dist.all_reduce(flat)
            flat /= w
            offset = 0
            for i in idx:
                n = tensors[i].numel()
                tensors[i].copy_(flat[offset:offset + n].view_as(tensors[i]))
                offset += n


def average_grads(params: Sequence[nn.Parameter]) -> None:
    """Every parameter's `.grad` becomes the mean over the ranks, identical everywhere.

    A parameter without a gradient on some rank counts as a zero gradient there; one without a
    gradient on every rank keeps `grad = None` (so SGD still skips it, as DropNAS relies on).
    One all-reduce per device and dtype carries the gradients and the "has a gradient" flags.
    """
    if not is_distributed():
        return
    w = world_size()
    with torch.no_grad():
        for (device, dtype), idx in _groups(params).items():
            parts = [params[i].grad.reshape(-1) if params[i].grad is not None
                     else torch.zeros(params[i].numel(), device=device, dtype=dtype) for i in idx]
            flags = torch.tensor([params[i].grad is not None for i in idx], device=device, dtype=dtype)
            flat = torch.cat(parts + [flags])
            dist.all_reduce(flat)
            present = (flat[flat.numel() - len(idx):] > 0).tolist()  # one device sync, not one per parameter
            offset = 0
            for j, i in enumerate(idx):
                p, n = params[i], params[i].numel()
                if present[j]:
                    mean = flat[offset:offset + n].view_as(p) / w
                    if p.grad is None:
                        p.grad = mean.clone()
                    else:
                        p.grad.copy_(mean)
                offset += n


def _digest(tensors: Iterable[Tensor]) -> str:
    """A hash of the values, whatever the memory layout: a channels-last 1x1 convolution's weight counts
    as contiguous yet has a last stride > 1, so it is flattened before its bytes are read."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _agree(values: dict[str, str]) -> list[str]:
    """Names whose value differs between ranks (compared on 8 bytes of each digest)."""
    names = sorted(values)
    mine = torch.tensor([int(values[k][:15], 16) for k in names], dtype=torch.int64)
    everyone = [torch.zeros_like(mine) for _ in range(world_size())]
    dist.all_gather(everyone, mine)
    return [k for i, k in enumerate(names) if any(int(t[i]) != int(mine[i]) for t in everyone)]


def derived_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence: no aliasing between streams)."""
    state = np.random.SeedSequence([int(p) % 2**64 for p in parts]).generate_state(1, np.uint64)[0]
    return int(state) & (2**63 - 1)


# --------------------------------------------------------------------------------------------- sampler


class ShardedBatches(Batches):
    """Rank `rank`'s share of `base`'s global batches: a distributed sampler over the (seed, epoch) order.

    The permutation of an epoch is `base`'s, identical on every rank. It is padded to a multiple of
    the world size with its own first entries (at most world − 1 of them, so only when the split's
    size is not a multiple of it; those few samples are seen twice that epoch), and rank r takes the
    strided slice `order[r::world]`, batch by batch. Global step b therefore covers exactly the
    samples the one-process run sees at step b (`order[b·B:(b+1)·B]`), split over the ranks, every
    rank gets the same number of samples per step (B / world, the last step ⌈rest / world⌉), and
    every rank runs `len(self)` steps per epoch.
    """

    def __init__(self, base: Batches, rank: int, world: int, *, record: bool = False):
        super().__init__(base.data, base.indices, base.batch_size, shuffle=base.shuffle, seed=base.seed,
                         drop_last=base.drop_last, drop_single=base.drop_single)
        if world < 1 or not 0 <= rank < world:
            raise SearchError(f"bad rank {rank} of {world}")
        if base.batch_size % world:
            raise SearchError(f"the batch {base.batch_size} is the global batch over {world} processes and "
                              f"must be divisible by {world}", hint=f"use a multiple of {world}")
        if len(base.indices) < world:
            raise SearchError(f"a split of {len(base.indices)} samples cannot feed {world} processes")
        self.rank, self.world = rank, world
        self.local_batch = base.batch_size // world
        self.seen: dict[int, list[int]] | None = {} if record else None

    def padded_order(self, epoch: int) -> Tensor:
        order = self.order(epoch)[: len(self) * self.batch_size]  # without what drop_last / drop_single drop
        pad = (-len(order)) % self.world
        return torch.cat([order, order[:pad]]) if pad else order

    def shard(self, epoch: int, step: int) -> Tensor:
        """The dataset indices this rank trains on at global step `step` of epoch `epoch`."""
        return self.padded_order(epoch)[step * self.batch_size:(step + 1) * self.batch_size][self.rank::self.world]

    def epoch(self, epoch: int, *, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        if epoch < 0:
            raise SearchError(f"epoch must be >= 0, got {epoch}")
        order = self.padded_order(epoch)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size][self.rank::self.world]  # (B / world,)
            if self.seen is not None:
                self.seen.setdefault(epoch, []).extend(int(i) for i in idx)
            yield self.data.images[idx], self.data.labels[idx]


# ----------------------------------------------------------------------------------------------- hooks


class LocalSync:
    """What the loops call at their hook points when there is one process: nothing."""

    active = False

    def begin_epoch(self, epoch: int) -> None:
        """Start of an epoch's training steps."""

    def average_grads(self, params: Sequence[nn.Parameter]) -> None:
        """Between backward and gradient clipping."""

    def before_eval(self) -> None:
        """Start of an evaluation pass (end of an epoch)."""


class _Sync(LocalSync):
    active = True

    def __init__(self, net: nn.Module, aug_gen: torch.Generator, seed: int, kind: str,
                 samplers: dict[str, ShardedBatches]):
        self.net, self.aug_gen, self.seed, self.kind, self.samplers = net, aug_gen, seed, kind, samplers
        self.epoch = 0

    def average_grads(self, params: Sequence[nn.Parameter]) -> None:
        average_grads(list(params))

    def bn_stats(self) -> list[Tensor]:
        out = []
        for m in self.net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats \
                    and m.running_mean is not None:
                out += [m.running_mean, m.running_var]
        return out

    def before_eval(self) -> None:
        average_tensors(self.bn_stats())
        folder = os.environ.get(CHECK_ENV)
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            record = {"rank": rank(), "world_size": world_size(), "epoch": self.epoch, **self.check_record(),
                      "weights_digest": _digest(self.net.parameters()),
                      "buffers_digest": _digest(self.bn_stats()),
                      "seen": {name: {str(e): idx for e, idx in s.seen.items()}
                               for name, s in self.samplers.items() if s.seen is not None}}
            write_json_atomic(Path(folder) / f"{self.kind}-rank{rank()}.json", record)

    def check_record(self) -> dict[str, Any]:
        return {}

    def reseed_augment(self, epoch: int) -> None:
        self.epoch = epoch
        self.aug_gen.manual_seed(derived_seed(self.seed, epoch, rank(), _AUG))


class _SearchSync(_Sync):
    def __init__(self, trainer: Any, samplers: dict[str, ShardedBatches]):
        super().__init__(trainer.job.net, trainer.aug_gen, trainer.job.config.seed, "search", samplers)
        self.trainer = trainer

    def begin_epoch(self, epoch: int) -> None:
        self.reseed_augment(epoch)
        # rank 0's relaxation RNG is authoritative: identical already in a fresh run, restored from
        # rank 0's checkpoint on a resume (where each rank's own CUDA device state is not)
        state = torch.get_rng_state()
        dist.broadcast(state, src=0)
        torch.set_rng_state(state)
        device = next(iter(self.net.parameters())).device
        if device.type == "cuda":
            cuda_state = torch.cuda.get_rng_state(device)
            dist.broadcast(cuda_state, src=0)
            torch.cuda.set_rng_state(cuda_state, device)
        net = self.trainer.job.net
        differ = _agree({"alpha": _digest(net.arch_parameters()), "weights": _digest(net.weight_parameters())})
        if differ:
            raise SearchError(f"the ranks disagree on {' and '.join(differ)} at the start of epoch {epoch + 1}",
                              hint="a relaxation drew a rank-dependent random number; this is a bug in nasc")

    def check_record(self) -> dict[str, Any]:
        from nasc.compiler import genotype as G

        net, job = self.trainer.job.net, self.trainer.job
        return {"alpha": {name: p.detach().cpu().tolist() for name, p in net.named_parameters()
                          if any(p is a for a in net.arch_parameters())},
                "arch_digest": _digest(net.arch_parameters()),
                "rng_digest": _digest([torch.get_rng_state()]),
                "genotype": G.canonical_str(self.trainer.magnitude.select(net, job.ir))}


class _TrainSync(_Sync):
    def begin_epoch(self, epoch: int) -> None:
        self.reseed_augment(epoch)
        # no α here: each rank draws its own drop-path masks, from (seed, epoch, rank) so a resume is exact
        torch.manual_seed(derived_seed(self.seed, epoch, rank(), _TRAIN_RNG))


def _record() -> bool:
    return bool(os.environ.get(CHECK_ENV))


def check_job(job: Any) -> None:
    """Refuse what a distributed run cannot do, before anything is written."""
    if not is_distributed():
        return
    w = world_size()
    if job.config.batch % w:
        raise SearchError(f"--batch {job.config.batch} is the global batch over {w} processes and must be "
                          f"divisible by {w}", hint=f"use a multiple of {w}: each process takes batch / {w}")
    if getattr(job.config, "stages", ()):
        raise SearchError("progressive search (stages) does not run under torch.distributed yet",
                          hint="run it in one process")


def attach_search(trainer: Any) -> LocalSync:
    """Called at the end of `Trainer.__init__`: shard its batches and return the hooks it calls."""
    if not is_distributed():
        return LocalSync()
    check_job(trainer.job)
    r, w = rank(), world_size()
    trainer.train = ShardedBatches(trainer.train, r, w, record=_record())
    trainer.val = ShardedBatches(trainer.val, r, w, record=_record())
    # val_eval stays whole on every rank: selectors score the supernet on it, and must agree
    net = trainer.job.net
    broadcast_tensors(list(net.parameters()) + [b for b in net.buffers() if b.is_floating_point()])
    return _SearchSync(trainer, {"train": trainer.train, "val": trainer.val})


def attach_train(fitter: Any) -> LocalSync:
    """Called at the end of `Fitter.__init__`: shard its training batches and return the hooks."""
    if not is_distributed():
        return LocalSync()
    check_job(fitter.job)
    fitter.batches = ShardedBatches(fitter.batches, rank(), world_size(), record=_record())
    net = fitter.job.net
    broadcast_tensors(list(net.parameters()) + [b for b in net.buffers() if b.is_floating_point()])
    return _TrainSync(net, fitter.gen, fitter.job.config.seed, "train", {"train": fitter.batches})


# ------------------------------------------------------------------------------------------- run dir


def _told(failure: tuple[str, str | None]) -> SearchError:
    """Rank 0's error about the run directory, raised on every rank alike (printed once)."""
    error = SearchError(failure[0], hint=failure[1])
    error.every_rank = True
    return error


class _MainRunDir(RunDir):
    """Rank 0's run directory: the usual one; config.json also records the world size."""

    @contextlib.contextmanager
    def writing(self, *, new: bool = False) -> Iterator[None]:
        """Rank 0 alone takes the run's lock (and creates a new run); if it cannot, every rank stops with its error."""
        failure = None
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(super().writing(new=new))
            except SearchError as e:
                failure = (e.message, e.hint)
            broadcast_object(failure)
            if failure is not None:
                raise _told(failure)
            yield

    def write(self, name: str, data: Any) -> None:
        if name == "config.json" and isinstance(data, dict):
            data = {**data, "distributed": {"world_size": world_size(), "backend": str(dist.get_backend())}}
        super().write(name, data)


class _FollowerRunDir(RunDir):
    """Another rank's view of the run directory: reads it, writes nothing."""

    @contextlib.contextmanager
    def writing(self, *, new: bool = False) -> Iterator[None]:
        """Rank 0 holds the lock for every rank: this one only learns whether it got it."""
        failure = broadcast_object(None)
        if failure is not None:
            raise _told(failure)
        yield

    def write(self, name: str, data: Any) -> None:
        pass

    def append(self, target: Path, record: dict[str, Any]) -> None:
        pass

    def copy_sources(self, files: Any) -> list[str]:
        return []

    def truncate_metrics(self, size: int) -> None:
        pass

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        pass

    def metrics_size(self) -> int:
        return 0


def run_dir(path: str | Path) -> RunDir:
    """The run directory every rank uses (rank 0's path); only rank 0's object writes."""
    if not is_distributed():
        return RunDir(path)
    path = broadcast_object(str(path))
    return _MainRunDir(path) if is_main() else _FollowerRunDir(path)


# -------------------------------------------------------------------------------------------- launcher


def strip_option(argv: Sequence[str], name: str) -> list[str]:
    """`argv` without `name VALUE` / `name=VALUE`."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(f"{name}="):
            out.append(arg)
    return out


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run `python -m nasc ARGV` (without --nproc) in `nproc` processes on this machine; the exit code.

    This is `torchrun --standalone --nproc-per-node N -m nasc ...`: torch.distributed.run's elastic
    launcher with a local rendezvous on a free port.
    """
    if nproc < 1:
        raise SearchError(f"--nproc must be at least 1, got {nproc}")
    if is_distributed() or "LOCAL_RANK" in os.environ:
        raise SearchError("--nproc inside a torchrun worker", hint="use either torchrun or --nproc, not both")
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    args = ["--standalone", "--nproc-per-node", str(nproc), "--module", "nasc", *strip_option(argv, "--nproc")]
    # The workers print their own errors (a setting's error once, from rank 0): the launcher's log lines
    # ("failed (exitcode: 1) local_rank: 0 ...", the OMP_NUM_THREADS banner) would only repeat them noisily.
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # what torchrun sets anyway, with a banner
    logger = logging.getLogger("torch.distributed.elastic")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        torchrun.main(args)
    except ChildFailedError as e:
        codes = [f.exitcode for f in e.failures.values() if isinstance(f.exitcode, int) and f.exitcode > 0]
        if not codes:  # killed by a signal: the worker could say nothing itself
            rank, failure = min(e.failures.items())
            raise SearchError(f"worker {rank} of {nproc} was killed ({failure.signal_name()})",
                              hint="out of memory is the usual cause (the system log says); rerun with fewer "
                                   "processes or a smaller batch") from None
        return codes[0]
    except SignalException as e:  # Ctrl-C (or a kill) reached the launcher: it stopped the workers, which said so
        return 128 + int(e.sigval)
    finally:
        logger.setLevel(level)
    return 0


def cli_entry(nproc: int | None, console: Any, *, launch_ok: bool = True,
              argv: Sequence[str] | None = None) -> int | None:
    """What `nasc search` / `nasc train` do first: with `--nproc N`, start N workers of this very
    command (minus --nproc) and return their exit code; else join torchrun's group, if any, and keep
    every rank but 0 quiet. None means: go on in this process."""
    import sys

    if nproc is not None and launch_ok:
        return launch(nproc, list(sys.argv[1:] if argv is None else argv))
    init_from_env()
    if not is_main():
        console.quiet = True  # rank 0 alone shows progress and results; errors still print on every rank
    return None


#: what gloo's RuntimeError says when the rank at the other end of a collective has exited
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer")


def peer_stopped(error: BaseException) -> SearchError | None:
    """What to say for a collective that failed because another rank stopped first, else None.

    A rank that meets an error of its own (a plugin's, a non-finite loss on its batch) prints it and exits;
    the others then fail in their next collective with gloo's plain RuntimeError ("Connection closed by
    peer ... GLHF!"), which the command line reported as an internal error and a bug in nasc.
    """
    if not is_distributed() or not isinstance(error, RuntimeError):
        return None
    if not any(s in str(error) for s in _PEER_GONE):
        return None
    return SearchError(f"rank {rank()} of {world_size()} stopped: another process of this run stopped first",
                       hint="its error is printed above (a process killed by the system prints none)")


def describe() -> dict[str, Any]:
    """This process's place in the group (for messages and config.json)."""
    return {"world_size": world_size(), "rank": rank(), "local_rank": local_rank(),
            "backend": str(dist.get_backend()) if is_distributed() else None}


def load_check(folder: str | Path, kind: str = "search") -> list[dict[str, Any]]:
    """The check files every rank wrote into `folder` (see CHECK_ENV), by rank."""
    files = sorted(Path(folder).glob(f"{kind}-rank*.json"), key=lambda p: int(p.stem.split("rank")[1]))
    return [json.loads(p.read_text(encoding="utf-8")) for p in files]
