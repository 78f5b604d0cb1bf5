"""Distributed search and training (runtime/distributed.py) with 2 CPU processes over gloo.

One torchrun launch (`_sweep`, this file run as a script on every rank) searches every relaxation
for one epoch on a tiny slice of the digits data and writes, per rank, its α, digests of weights,
BN statistics and RNG state, the genotype and the sample indices it trained on
(NASC_DIST_CHECK_DIR); it also runs an uninterrupted and an interrupted-then-resumed 2-epoch GDAS
search and a 2-process `nasc train`. The tests compare the ranks' files. One more launch goes
through the command line (`nasc search --nproc 2` on the real digits split).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SPACES = REPO / "spaces"
TINY = "dist_tiny"  # the first 190 training / 95 test digits: 95 + 95 after the 0.5 split (odd: one pad)
DARTS = {"C": 4, "layers": 3}
BASE = {"epochs": 1, "batch": 16, "device": "cpu", "dataset": TINY, "train_portion": 0.5}
CASES: dict[str, dict] = {
    "softmax": dict(space="darts", params=DARTS),
    "second_order": dict(space="darts", params=DARTS, overrides={"order": 2}),
    "gdas": dict(space="darts", params=DARTS, relax="gdas"),
    "snas": dict(space="darts", params=DARTS, relax="snas"),  # single level: α and w from one backward
    "binary_gate": dict(space="darts", params=DARTS, relax="binary-gate", relax_options={"lambda": 0.1}),
    "partial_channel": dict(space=str(SPACES / "pcdarts.nas"), params={"C": 8, "layers": 3}, relax="pcdarts",
                            overrides={"arch_start": 0}),
    "dropout_group": dict(space="darts", params=DARTS, relax="dropnas", relax_options={"r": 0.3}),
    "rome": dict(space=str(SPACES / "rome.nas"), params=DARTS, relax_options={"samples": 2}),
    "parsec": dict(space="darts", params=DARTS, relax="parsec",
                   relax_options={"samples": 2, "weight_estimator": "importance"}),
    "merged_kernel": dict(space="darts", params=DARTS, relax="mergenas"),
    # 1- vs 2-process comparisons: SGD on α, so α moves by the gradient itself (Adam would hide it);
    # "compare": 2 steps of global batch 64; "ghost": exactly one step (16 training samples)
    "compare": dict(space="darts", params=DARTS, overrides={"arch_optimizer": "sgd", "arch_lr": 3.0, "batch": 64}),
    "ghost": dict(space="darts", params=DARTS, overrides={"arch_optimizer": "sgd", "arch_lr": 3.0,
                                                          "train_portion": 0.085}),
}
RESUME = dict(space="darts", params=DARTS, relax="gdas")


def register_tiny() -> None:
    import attrs

    from nasc.runtime.data import DATASETS, ImageSet, load_dataset

    if TINY in DATASETS:
        return

    @DATASETS.register(TINY)
    def _tiny(data_dir, download):
        d = load_dataset("digits")
        # crop_pad 0 (and no flip): no augmentation, so one and two processes see the same pixels
        return attrs.evolve(d, name=TINY, train=ImageSet(images=d.train.images[:190], labels=d.train.labels[:190]),
                            test=ImageSet(images=d.test.images[:95], labels=d.test.labels[:95]), crop_pad=0)


def request(case: dict, **extra):
    from nasc.runtime.search import Request

    return Request(space=case["space"], params=dict(case["params"]), relax=case.get("relax"),
                   relax_options=dict(case.get("relax_options", {})),
                   overrides={**BASE, **case.get("overrides", {}), **extra})


def _sweep(out: Path) -> None:
    """Every rank of the torchrun launch runs this."""
    import torch.distributed as dist

    from nasc.runtime import distributed as D
    from nasc.runtime.search import prepare, resume, run_search
    from nasc.runtime.train import TrainRequest, prepare_train, run_train

    torch.set_num_threads(1)
    register_tiny()
    assert D.init_from_env() and D.world_size() == 2
    for name, case in CASES.items():
        os.environ[D.CHECK_ENV] = str(out / name / "check")
        run_search(prepare(request(case)), out / name / "run")
    # resume: an uninterrupted 2-epoch GDAS search, and the same interrupted after epoch 1 and resumed
    os.environ[D.CHECK_ENV] = str(out / "full" / "check")
    run_search(prepare(request(RESUME, epochs=2)), out / "full" / "run")
    os.environ[D.CHECK_ENV] = str(out / "resumed" / "check")
    try:
        run_search(prepare(request(RESUME, epochs=2)), out / "resumed" / "run", stop_after=1)
    except KeyboardInterrupt:
        pass
    if D.is_main():  # kept for a 1-process resume of this 2-process checkpoint
        shutil.copytree(out / "resumed" / "run", out / "interrupted")
    resume(out / "resumed" / "run")
    # training a derived network
    dist.barrier()
    os.environ[D.CHECK_ENV] = str(out / "train" / "check")
    job = prepare_train(TrainRequest(genotype=str(out / "softmax" / "run"), params=dict(DARTS),
                                     overrides={"epochs": 1, "batch": 16, "device": "cpu", "dataset": TINY}))
    run_train(job, out / "train" / "run")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "NASC_DIST_CHECK_DIR")}
    env["OMP_NUM_THREADS"] = "1"  # 2 processes on a small, shared CPU
    return env


def _torchrun(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _torchrun([str(Path(__file__).resolve()), str(out)], cwd=REPO)
    return out


def _ranks(folder: Path, kind: str = "search") -> list[dict]:
    from nasc.runtime.distributed import load_check

    got = load_check(folder, kind)
    assert [r["rank"] for r in got] == [0, 1] and all(r["world_size"] == 2 for r in got)
    return got


# ---------------------------------------------------------------------------------------- no processes


def test_sharded_batches_split_every_global_batch():
    from nasc.runtime.data import Batches, ImageSet
    from nasc.runtime.distributed import ShardedBatches

    data = ImageSet(images=torch.zeros(40, 1, 2, 2, dtype=torch.uint8), labels=torch.arange(40))
    indices = torch.arange(3, 38)  # 35 samples: 2 ranks pad 1, 3 ranks pad 1, 4 ranks pad 1
    base = Batches(data, indices, 12, shuffle=True, seed=7)
    for world in (2, 3, 4):
        shards = [ShardedBatches(base, r, world, record=True) for r in range(world)]
        assert all(len(s) == len(base) == 3 for s in shards)
        for epoch in (0, 5):
            steps = [list(s.epoch(epoch)) for s in shards]
            for b, (_, yb) in enumerate(base.epoch(epoch)):
                parts = [steps[r][b][1] for r in range(world)]
                assert len({len(p) for p in parts}) == 1  # the same per-rank batch on every rank
                merged = torch.cat(parts).sort().values
                pad = len(merged) - len(yb)
                assert 0 <= pad < world
                if pad == 0:  # a global step is exactly the one-process step, split over the ranks
                    assert torch.equal(merged, yb.sort().values)
            seen = sorted(i for s in shards for i in s.seen[epoch])
            pad = (-35) % world
            assert len(seen) == 35 + pad and set(seen) == set(indices.tolist())
            assert seen.count(int(base.order(epoch)[0])) == 1 + (pad > 0)  # padding repeats the order's head
        assert all(len(steps[r][0][1]) == 12 // world for r in range(world))


def test_sharded_batches_refuse_an_indivisible_batch():
    from nasc.errors import SearchError
    from nasc.runtime.data import Batches, ImageSet
    from nasc.runtime.distributed import ShardedBatches

    data = ImageSet(images=torch.zeros(10, 1, 2, 2, dtype=torch.uint8), labels=torch.arange(10))
    with pytest.raises(SearchError, match="divisible by 3"):
        ShardedBatches(Batches(data, torch.arange(10), 16, shuffle=True, seed=0), 0, 3)


def test_one_process_needs_no_group():
    from nasc.runtime import distributed as D

    assert not D.is_distributed() and D.world_size() == 1 and D.is_main()
    assert D.strip_option(["search", "--nproc", "2", "x", "--nproc=3", "--batch", "8"], "--nproc") == \
        ["search", "x", "--batch", "8"]
    assert D.main_first(lambda a: a + 1, 1) == 2 and D.broadcast_object("x") == "x"


# ------------------------------------------------------------------------------------------ 2 processes


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_every_relaxation_keeps_alpha_identical_on_both_ranks(sweep, name):
    r0, r1 = _ranks(sweep / name / "check")
    assert r0["alpha"] == r1["alpha"]  # bit-identical: JSON keeps every float32 exactly
    for key in ("arch_digest", "weights_digest", "buffers_digest", "rng_digest", "genotype"):
        assert r0[key] == r1[key], key
    saved = torch.load(sweep / name / "run" / "checkpoint.pt", weights_only=False)["net"]
    for key, values in r0["alpha"].items():  # rank 0's checkpoint holds the α every rank ended with
        assert torch.equal(saved[key], torch.tensor(values, dtype=saved[key].dtype)), key
    genotype = json.loads((sweep / name / "run" / "genotype.json").read_text())
    assert genotype  # rank 0 wrote it; the ranks' genotypes agree (above)


@pytest.mark.slow
def test_every_training_sample_once_per_epoch(sweep):
    r0, r1 = _ranks(sweep / "softmax" / "check")
    train = sorted(r0["seen"]["train"]["0"] + r1["seen"]["train"]["0"])
    assert len(r0["seen"]["train"]["0"]) == len(r1["seen"]["train"]["0"]) == 48  # 6 steps of 16 / 2
    assert set(train) == set(range(95))  # the train half of the split, every sample
    assert len(train) == 96  # 95 samples + 1 pad (the head of the epoch's permutation)
    val = set(r0["seen"]["val"]["0"]) | set(r1["seen"]["val"]["0"])
    assert val == set(range(95, 190))
    t0, t1 = _ranks(sweep / "train" / "check", "train")
    train = sorted(t0["seen"]["train"]["0"] + t1["seen"]["train"]["0"])
    assert set(train) == set(range(190)) and len(train) == 190  # `nasc train`: the whole training set
    assert t0["weights_digest"] == t1["weights_digest"] and t0["buffers_digest"] == t1["buffers_digest"]


@pytest.mark.slow
def test_only_rank_zero_writes_the_run(sweep):
    run = sweep / "softmax" / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["distributed"]["world_size"] == 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["type"] == "step"] == list(range(6))  # one writer, 6 global steps
    assert sum(r["type"] == "epoch" for r in records) == 1
    assert (sweep / "train" / "run" / "weights.pt").is_file()


@pytest.mark.slow
def test_resumed_two_process_run_ends_like_an_uninterrupted_one(sweep):
    full, resumed = _ranks(sweep / "full" / "check"), _ranks(sweep / "resumed" / "check")
    assert full[0]["epoch"] == resumed[0]["epoch"] == 1
    assert full[0]["alpha"] == resumed[0]["alpha"] == resumed[1]["alpha"]
    assert full[0]["genotype"] == resumed[0]["genotype"]
    a = (sweep / "full" / "run" / "genotype.json").read_text()
    assert a == (sweep / "resumed" / "run" / "genotype.json").read_text()
    assert (sweep / "full" / "run" / "metrics.jsonl").read_bytes() == \
        (sweep / "resumed" / "run" / "metrics.jsonl").read_bytes()


@pytest.mark.slow
def test_one_process_resumes_a_two_process_checkpoint(sweep):
    from nasc.runtime.search import resume

    register_tiny()
    state = torch.load(sweep / "interrupted" / "checkpoint.pt", weights_only=False)
    result = resume(sweep / "interrupted")
    records = [json.loads(line) for line in (sweep / "interrupted" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [0, 1]
    assert state["epoch"] == 1 and result.genotype is not None
    # epoch 1 ran on one process (BN sees 16 samples, not 8 + 8), so α is close, not equal
    final = torch.load(sweep / "interrupted" / "checkpoint.pt", weights_only=False)["net"]
    full = _ranks(sweep / "full" / "check")[0]["alpha"]
    for key, values in full.items():
        assert torch.allclose(final[key], torch.tensor(values), atol=6 * 3e-4 * 2), key


def _two(sweep: Path, name: str) -> dict[str, torch.Tensor]:
    return {k.split(".", 1)[1]: torch.tensor(v) for k, v in _ranks(sweep / name / "check")[0]["alpha"].items()}


@pytest.mark.slow
def test_two_processes_match_one_process_up_to_batch_norm(sweep, tmp_path):
    """Same seed, data and global batch 64, softmax, α stepped by SGD, 2 steps: 2 × 32 samples vs 1 × 64.

    The gradients are averaged exactly (next test), but they are not gradients of the same function:
    BatchNorm normalises with the statistics of the batch it sees, 32 samples per rank instead of 64,
    which changes the loss itself (and the last, partial batch is padded by one sample on 2 ranks).
    So α agrees within a tolerance, not to the bit. (Measured here: relative deviation of α's change
    0.30 at batch 64, 0.43 at batch 32, 0.51 at batch 16: it shrinks as the per-rank batch grows.)
    """
    from nasc.runtime.search import prepare, run_search

    register_tiny()
    job = prepare(request(CASES["compare"]))
    start = {k: v.detach().clone() for k, v in job.net.alphas.items()}
    run_search(job, tmp_path / "one")
    one, two = {k: v.detach() for k, v in job.net.alphas.items()}, _two(sweep, "compare")
    d1 = torch.cat([(one[k] - start[k]).flatten() for k in start])
    d2 = torch.cat([(two[k] - start[k]).flatten() for k in start])
    assert d1.norm() > 0.1  # α moved
    rel = float((d2 - d1).norm() / d1.norm())
    cos = float(torch.nn.functional.cosine_similarity(d1, d2, dim=0))
    assert rel < 0.5 and cos > 0.9, (rel, cos)


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_same_per_rank_batches(sweep):
    """One α step of 2 processes equals one process that averages the α gradients of the two
    8-sample halves of the same global batch (`order[:16][r::2]`): BN sees the same samples, so
    the only difference left would be the reduction itself."""
    from nasc.runtime.architect import first_order
    from nasc.runtime.search import Trainer, prepare

    register_tiny()
    job = prepare(request(CASES["ghost"]))
    trainer = Trainer(job)  # one process: plain batches
    assert len(trainer.train) == 1  # one step: α changes once, on the first validation batch
    data, chunk = trainer.val.data, trainer.val.order(0)[:16]
    start = {k: a.detach().clone() for k, a in job.net.alphas.items()}
    job.relax.set_progress(0, 1)
    job.net.train()
    job.relax.set_phase("arch")
    grads = []
    for r in range(2):
        x, y = trainer._batch(data.images[chunk[r::2]], data.labels[chunk[r::2]], trainer.augment)
        first_order(trainer._arch_loss, trainer.arch, x, y)
        grads.append([p.grad.clone() for p in trainer.arch])
    for p, g0, g1 in zip(trainer.arch, *grads):
        p.grad = (g0 + g1) / 2
    trainer.a_opt.step()
    two = _two(sweep, "ghost")
    for k, a in job.net.alphas.items():
        assert not torch.equal(two[k], start[k])
        assert torch.allclose(a.detach(), two[k], rtol=1e-5, atol=1e-7), (k, float((a.detach() - two[k]).abs().max()))


@pytest.mark.slow
def test_nproc_launcher_through_the_command_line(tmp_path):
    """`nasc search --nproc 2` on the digits split (287 training samples: one pad per epoch)."""
    env = {**_env(), "NASC_DIST_CHECK_DIR": str(tmp_path / "check")}
    cmd = [sys.executable, "-m", "nasc", "search", "darts", "--set", "C=4", "--set", "layers=3",
           "--opt", "train_portion=0.2", "--batch", "16", "--epochs", "1", "--device", "cpu",
           "--relax", "gdas", "--nproc", "2", "--run-dir", str(tmp_path / "run")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert proc.stdout.count("genotype (written to") == 1  # rank 0 alone prints
    r0, r1 = _ranks(tmp_path / "check")
    assert r0["alpha"] == r1["alpha"] and r0["genotype"] == r1["genotype"]
    seen = r0["seen"]["train"]["0"] + r1["seen"]["train"]["0"]
    assert len(seen) == 288 and len(set(seen)) == 287
    assert json.loads((tmp_path / "run" / "config.json").read_text())["distributed"]["world_size"] == 2


def test_a_signal_to_the_nproc_launcher_is_an_interruption_not_an_internal_error(monkeypatch):
    """Ctrl-C reaches the launcher as torchelastic's SignalException after it has stopped the workers."""
    import signal

    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException

    from nasc.runtime import distributed as D

    def interrupted(args):
        raise SignalException("Process 1 got signal: 2", sigval=signal.SIGINT)

    monkeypatch.setattr(torchrun, "main", interrupted)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert D.launch(2, ["search", "--nproc", "2"]) == 130


@pytest.mark.parametrize("args, code, message", [
    (["--opt", "lr=-1"], 1, "lr must be positive, got -1"),
    (["--set", "Q=4"], 1, "space 'nb201' has no parameter 'Q'"),
    (["--opt", "arch_betas=(0.5,"], 2, "unexpected end of the value"),
])
def test_a_settings_error_under_nproc_is_printed_once(tmp_path, args, code, message):
    """Every rank printed the same error, and torchrun's launcher added its own log lines about the failure."""
    cmd = [sys.executable, "-m", "nasc", "search", "nb201", "--set", "C=4", "--epochs", "1", "--device", "cpu",
           "--nproc", "2", "--run-dir", str(tmp_path / "run"), *args]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == code, out[-3000:]
    assert out.count(message) == 1 and "Traceback" not in out and "exitcode" not in out, out[-3000:]
    assert not (tmp_path / "run").exists()


def test_a_dataset_that_fails_on_one_rank_only_stops_every_rank_with_its_error(tmp_path):
    """A data folder missing on one machine: rank 1 failed alone and, the error being a setting's, kept quiet;
    rank 0 went on, was stopped by the launcher, and said 'interrupted' instead of the error."""
    plugin = tmp_path / "rank_data.py"
    plugin.write_text("import os\nfrom nasc.errors import DataError\nfrom nasc.runtime.data import DATASETS, load_dataset\n"
                      "@DATASETS.register('rank_digits')\ndef _load(data_dir, download):\n"
                      "    if os.environ.get('RANK') == '1':\n"
                      "        raise DataError('rank_digits: the data folder is unreadable here', hint='mount it')\n"
                      "    return load_dataset('digits')\n")
    cmd = [sys.executable, "-m", "nasc", "search", "nb201", "--plugin", str(plugin), "--data", "rank_digits",
           "--set", "C=4", "--set", "N=1", "--epochs", "1", "--batch", "16", "--device", "cpu", "--nproc", "2",
           "--run-dir", str(tmp_path / "run")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1, out[-3000:]
    assert out.count("rank 1 of 2: rank_digits: the data folder is unreadable here") == 1, out[-3000:]
    assert "interrupted" not in out and "Traceback" not in out, out[-3000:]
    assert not (tmp_path / "run").exists()


def test_an_error_one_rank_meets_mid_run_is_not_an_internal_error_on_the_others(tmp_path):
    """Rank 1 printed its error and exited; rank 0's next all-reduce failed with gloo's 'Connection closed by
    peer ... GLHF!', which the command line reported as an internal error, a bug in the plugin or in nasc."""
    plugin = tmp_path / "rank_relax.py"
    plugin.write_text("import os\nfrom nasc.errors import SearchError\nfrom nasc.runtime.relaxations.base import "
                      "RELAXATIONS\nfrom nasc.runtime.relaxations.softmax import Softmax\n"
                      "@RELAXATIONS.register('rank_softmax')\nclass RankSoftmax(Softmax):\n"
                      "    name, presets = 'rank_softmax', {}\n"
                      "    def set_progress(self, epoch, epochs, step=0):\n"
                      "        super().set_progress(epoch, epochs, step)\n"
                      "        if os.environ.get('RANK') == '1' and step == 1:\n"
                      "            raise SearchError('rank_softmax: a problem only rank 1 met')\n")
    cmd = [sys.executable, "-m", "nasc", "search", "nb201", "--plugin", str(plugin), "--relax", "rank_softmax",
           "--set", "C=4", "--set", "N=1", "--epochs", "1", "--batch", "16", "--device", "cpu", "--nproc", "2",
           "--run-dir", str(tmp_path / "run")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1, out[-3000:]
    assert out.count("rank_softmax: a problem only rank 1 met") == 1, out[-3000:]
    assert "internal error" not in out and "Traceback" not in out and "GLHF" not in out, out[-3000:]


@pytest.mark.parametrize("command", ["search", "train"])
def test_a_resume_every_rank_refuses_is_printed_once(tmp_path, command):
    """What a resume reads from the run is the same on every rank: its errors were printed once per rank."""
    (tmp_path / "old").mkdir()
    cmd = [sys.executable, "-m", "nasc", command, "--resume", str(tmp_path / "old"), "--nproc", "2"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1, out[-3000:]
    assert out.count("is not a nasc run directory (no config.json)") == 1 and "Traceback" not in out, out[-3000:]


@pytest.mark.parametrize("command", [
    ["search", "nb201", "--set", "C=4"],
    ["train", str(REPO / "examples" / "genotypes" / "nb201_best_cifar10.json"), "--set", "C=4"],
])
def test_a_batch_the_ranks_cannot_split_is_printed_once_and_claims_no_run_dir(tmp_path, command):
    """--batch 15 over 2 ranks was refused in run_search: every rank printed it, after rank 0 had made the default
    run directory (runs/SPACE-TIME-sSEED), which stayed behind empty."""
    cmd = [sys.executable, "-m", "nasc", *command, "--epochs", "1", "--batch", "15", "--device", "cpu", "--nproc", "2"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 1, out[-3000:]
    assert out.count("must be divisible by 2") == 1 and "Traceback" not in out, out[-3000:]
    assert not (tmp_path / "runs").exists()


def test_a_worker_killed_by_a_signal_is_named_by_the_launcher(monkeypatch):
    """A worker killed by the OOM killer says nothing itself; the launcher used to exit 1 without a word."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    from nasc.errors import SearchError
    from nasc.runtime import distributed as D

    def killed(args):
        raise ChildFailedError("nasc", {1: ProcessFailure(local_rank=1, pid=1, exitcode=-9, error_file="")})

    monkeypatch.setattr(torchrun, "main", killed)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    with pytest.raises(SearchError, match=r"worker 1 of 2 was killed \(SIGKILL\)"):
        D.launch(2, ["search", "--nproc", "2"])


@pytest.mark.slow
def test_ctrl_c_under_nproc_says_how_to_resume(tmp_path):
    """SIGINT to the whole process group, as a terminal's Ctrl-C sends it, once the first epoch is saved."""
    import signal
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "nasc", "search", "darts", "--set", "C=4", "--set", "layers=3",
           "--opt", "train_portion=0.2", "--batch", "16", "--epochs", "20", "--device", "cpu",
           "--nproc", "2", "--run-dir", str(run)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (run / "checkpoint.pt").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-3000:]
    assert " ".join(out.split()).count("resume with nasc search --resume") == 1  # rank 0's, not every rank's
    assert "internal error" not in out and (run / "checkpoint.pt").exists()


def test_batch_must_divide_over_the_ranks(tmp_path):
    """Refused on every rank before anything is written."""
    cmd = ["-m", "nasc", "search", "darts", "--set", "C=4", "--set", "layers=3", "--batch", "15",
           "--epochs", "1", "--device", "cpu", "--run-dir", str(tmp_path / "run")]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           *cmd], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "must be divisible by 2" in " ".join((proc.stderr + proc.stdout).split())
    assert not (tmp_path / "run").exists()


def test_the_ranks_digest_hashes_values_whatever_the_memory_layout():
    """Searches run in channels-last tensors, where a 1x1 conv weight is "contiguous" with a last stride > 1."""
    from nasc.runtime.distributed import _digest

    pointwise, depthwise = torch.randn(8, 12, 1, 1), torch.randn(8, 1, 3, 3)
    nhwc = [t.to(memory_format=torch.channels_last) for t in (pointwise, depthwise)]
    assert _digest(nhwc) == _digest([pointwise, depthwise])
    assert _digest(nhwc) != _digest([pointwise, depthwise + 1e-6])


if __name__ == "__main__":  # torchrun tests/runtime/test_distributed.py OUT
    _sweep(Path(sys.argv[1]))


def test_a_run_dir_in_use_stops_every_rank_with_rank_zeros_error(tmp_path):
    """Rank 0 alone takes the run's lock; the other ranks must stop with its error, not wait for it forever."""
    run = tmp_path / "run"
    hold = ("import sys, time\nfrom nasc.runtime.rundir import RunDir\nwith RunDir(sys.argv[1]).writing(new=True):\n"
            "    RunDir(sys.argv[1]).config.write_text('{}')\n    print('locked', flush=True)\n    time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        cmd = ["-m", "nasc", "search", "nb201", "--set", "C=4", "--set", "N=1", "--batch", "16", "--epochs", "1",
               "--device", "cpu", "--run-dir", str(run)]
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                               *cmd], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    finally:
        holder.kill()
        holder.wait()
    out = " ".join((proc.stderr + proc.stdout).split())
    assert proc.returncode != 0
    assert out.count(f"run directory {run} is in use: another nasc process (pid {holder.pid})") == 1, out  # rank 0's
    assert sorted(p.name for p in run.iterdir()) == [".nasc.lock", "config.json"]
