"""The search loop end to end on the bundled digits data: config, schedules, run-dir artefacts, determinism,
resume, the variants (second order, single level, delayed α) and every way a run can be refused."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import urllib.error
from pathlib import Path

import pytest
import torch

from nasc.compiler import genotype as G
from nasc.compiler.derive import specialise_to_genotype
from nasc.errors import DataError, NascError, SearchError
from nasc.runtime.config import SearchConfig
from nasc.runtime.schedules import learning_rate
from nasc.runtime.search import Request, describe, prepare, resume, run_search

NB201_TINY = {"C": 4, "N": 1}
DARTS_TINY = {"C": 4, "layers": 5}
FILES = {"config.json", "space.ir.json", "metrics.jsonl", "timing.jsonl", "checkpoint.pt", "genotype.json"}


@pytest.fixture(autouse=True)
def _one_thread():
    # Two intra-op threads on a loaded 2-core machine slow torch down by 10-50x; one is always enough here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _job(space: str = "nb201", params=None, **overrides):
    """A prepared search, 1 epoch at batch 64 on the CPU unless overridden."""
    overrides = {"epochs": 1, "batch": 64, "device": "cpu", **overrides}
    return prepare(Request(space=space, params=dict(NB201_TINY if params is None else params), overrides=overrides))


def _search(path: Path, space: str = "nb201", params=None, **overrides):
    job = _job(space, params, **overrides)
    return job, run_search(job, path)


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def one_thread_module():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def nb201_run(tmp_path_factory, one_thread_module) -> Path:
    """A finished 1-epoch NB201 search (C=4, N=1), shared read-only; copy it before changing anything."""
    path = tmp_path_factory.mktemp("nb201") / "run"
    _search(path)
    return path


@pytest.fixture(scope="module")
def darts_run(tmp_path_factory, one_thread_module) -> Path:
    """A finished 1-epoch DARTS search on digits (C=4, layers=5, batch 64), shared read-only.

    train_portion 0.1 keeps it to 3 steps (a few seconds); the slow acceptance test runs the full split."""
    path = tmp_path_factory.mktemp("darts") / "run"
    _search(path, "darts", DARTS_TINY, train_portion=0.1)
    return path


# ------------------------------------------------------------------ config and schedules


def test_darts_defaults_come_from_the_space_file():
    cfg = prepare(Request(space="darts", params={"C": 2, "layers": 3})).config
    assert isinstance(cfg, SearchConfig)
    assert (cfg.lr, cfg.lr_min, cfg.momentum, cfg.weight_decay, cfg.clip) == (0.025, 0.001, 0.9, 3e-4, 5)
    assert cfg.schedule == "cosine"
    assert (cfg.arch_optimizer, cfg.arch_lr, tuple(cfg.arch_betas), cfg.arch_weight_decay) == \
        ("adam", 3e-4, (0.5, 0.999), 1e-3)
    assert (cfg.epochs, cfg.batch, cfg.train_portion, cfg.order, cfg.levels) == (50, 64, 0.5, 1, 2)
    assert cfg.nesterov is False


def test_nb201_defaults_come_from_its_file():
    cfg = prepare(Request(space="nb201", params=NB201_TINY)).config
    assert (cfg.weight_decay, cfg.nesterov, cfg.lr) == (5e-4, True, 0.025)


def test_overrides_win():
    job = prepare(Request(space="darts", params={"C": 2, "layers": 3},
                          overrides={"lr": 0.1, "epochs": 3, "arch_lr": 1e-3, "order": 2, "seed": 7}))
    cfg = job.config
    assert (cfg.lr, cfg.epochs, cfg.arch_lr, cfg.order, cfg.seed) == (0.1, 3, 1e-3, 2, 7)
    assert cfg.weight_decay == 3e-4  # untouched settings keep the file's value
    assert describe(job)["search"]["lr"] == 0.1


def test_unknown_or_invalid_override_is_a_search_error():
    with pytest.raises(SearchError) as info:
        prepare(Request(space="nb201", params=NB201_TINY, overrides={"learning_rate": 0.1}))
    assert "learning_rate" in info.value.message
    with pytest.raises(SearchError, match="epochs must be positive"):
        prepare(Request(space="nb201", params=NB201_TINY, overrides={"epochs": 0}))
    with pytest.raises(SearchError, match="bi-level"):
        prepare(Request(space="nb201", params=NB201_TINY, overrides={"order": 2, "levels": 1}))


def test_cosine_schedule():
    lr, low = 0.025, 0.001
    assert learning_rate("cosine", 0, 50, lr, low) == pytest.approx(lr, rel=1e-12)
    assert learning_rate("cosine", 25, 50, lr, low) == pytest.approx((lr + low) / 2, rel=1e-12)
    values = [learning_rate("cosine", e, 50, lr, low) for e in range(50)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert low < values[-1] < low + 1e-4
    assert learning_rate("constant", 17, 50, lr, low) == lr


def _cosine_power(epoch: int, epochs: int, hi: float, lo: float, e: float, warmup: int) -> float:
    """sharpDARTS cosine_power_annealing, as its code computes it: 1-based epochs i = 1..E, shifted by the
    warm-up W (j = i - W, T = E - W); c_j = (1 + cos(pi j / T)) / 2, P_j = e^(c_j + 1) (c_j itself for e = 1),
    normalised by the min and max over every epoch's j, warm-up ones included; the first W + 1 epochs'
    proportions are then replaced by the ramp i / (W + 1); lr = lo + (hi - lo) * proportion."""
    i = epoch + 1
    if warmup and i <= warmup + 1:
        return lo + (hi - lo) * i / (warmup + 1)
    i, total = i - warmup, epochs - warmup
    p = {j: ((1 + math.cos(math.pi * j / total)) / 2) if e == 1 else e ** ((1 + math.cos(math.pi * j / total)) / 2 + 1)
         for j in range(1 - warmup, total + 1)}
    return lo + (hi - lo) * (p[i] - min(p.values())) / (max(p.values()) - min(p.values()))


@pytest.mark.parametrize("epochs, exponent, warmup", [(10, 2.0, 0), (20, 10.0, 0), (12, 1.0, 0), (15, 2.0, 3)])
def test_cosine_power_schedule(epochs, exponent, warmup):
    hi, lo = 0.025, 1e-4
    for epoch in range(epochs):
        got = learning_rate("cosine_power", epoch, epochs, hi, lo, exponent=exponent, warmup=warmup)
        assert got == pytest.approx(_cosine_power(epoch, epochs, hi, lo, exponent, warmup), rel=1e-9, abs=1e-15)
    first = warmup  # the first epoch after the ramp starts at the maximum, the last ends at the minimum
    assert learning_rate("cosine_power", first, epochs, hi, lo, exponent=exponent, warmup=warmup) == \
        pytest.approx(hi)
    assert learning_rate("cosine_power", epochs - 1, epochs, hi, lo, exponent=exponent, warmup=warmup) == \
        pytest.approx(lo)


def test_cosine_power_warmup_matches_sharpdarts_code():
    """Values printed by sharpDARTS' own cnn/cosine_power_annealing.py (epochs=10, max_lr=0.025, min_lr=1e-4,
    warmup_epochs=5, exponent_order=2): its ramp spans lr_min..lr, and its normalisation counts the warm-up
    epochs, whose j = 0 is the maximum (nasc ramped 0..lr and normalised over the post-warm-up epochs only:
    0.0041667 and 0.016495 here)."""
    official = {0: 0.00425, 4: 0.02085, 5: 0.025, 6: 0.014394581999626012, 8: 0.0018038906309259927, 9: 1e-4}
    for epoch, want in official.items():
        got = learning_rate("cosine_power", epoch, 10, 0.025, 1e-4, exponent=2.0, warmup=5)
        assert got == pytest.approx(want, rel=1e-12, abs=1e-15), epoch


# ------------------------------------------------------------------ the run directory


def test_darts_search_writes_the_run_directory(darts_run):
    assert FILES <= {p.name for p in darts_run.iterdir()}
    config = json.loads((darts_run / "config.json").read_text())
    assert config["space"] == "darts"
    assert config["search"]["epochs"] == 1 and config["search"]["batch"] == 64
    assert config["search"]["train_portion"] == 0.1
    assert config["resolved_params"]["C"] == 4 and config["resolved_params"]["layers"] == 5
    assert config["input"] == [1, 8, 8]  # compiled for the dataset: digits are 1x8x8
    # what the numbers depend on beyond the settings: another thread count rounds sums differently
    assert config["threads"] == torch.get_num_threads() and config["torch"] == torch.__version__
    # which code: the version number does not move between commits of a checkout, the commit does
    repo = Path(__file__).resolve().parents[2]
    if (repo / ".git").exists() and shutil.which("git"):
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert config["nasc_git"]["commit"] == head.stdout.strip() and isinstance(config["nasc_git"]["dirty"], bool)
    ir = json.loads((darts_run / "space.ir.json").read_text())
    assert isinstance(ir, dict) and ir
    assert config["fingerprint"] in (darts_run / "space.ir.json").read_text()

    records = _records(darts_run)
    steps = [r for r in records if r["type"] == "step"]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert steps and len(epochs) == 1
    assert {r["type"] for r in records} == {"step", "epoch"}
    assert len(steps) == steps[0]["steps"] == math.ceil(math.floor(1437 * 0.1) / 64)  # digits: 1437 train images
    for r in steps:
        assert {"epoch", "step", "loss", "acc", "lr"} <= set(r)
        assert math.isfinite(r["loss"]) and 0 <= r["acc"] <= 1 and r["lr"] == pytest.approx(0.025)
    epoch = epochs[0]
    assert {"epoch", "lr", "alpha", "genotype", "train_loss", "train_acc", "val_loss", "val_acc"} <= set(epoch)
    assert set(epoch["alpha"]) == {"normal", "reduce"}
    assert len(epoch["alpha"]["normal"]) == 14
    for row in epoch["alpha"]["normal"].values():
        assert len(row) == 8 and sum(row.values()) == pytest.approx(1, abs=1e-4)

    genotype = G.load(darts_run / "genotype.json")
    assert genotype.space == "darts" and genotype.fingerprint == config["fingerprint"]
    assert config["space_sources"] == ["space/darts.nas"]
    assert (darts_run / "space" / "darts.nas").read_text() == (Path(config["space_file"])).read_text()
    assert G.canonical_str(genotype) == epoch["genotype"]
    assert all(e.op != "none" for c in genotype.cells.values() for e in c.edges)
    assert all(len(c.edges) == 8 for c in genotype.cells.values())

    timing = [json.loads(line) for line in (darts_run / "timing.jsonl").read_text().splitlines()]
    assert len(timing) == 1 and timing[0]["seconds"] > 0
    assert "seconds" not in (darts_run / "metrics.jsonl").read_text()  # wall clock stays out of metrics

    state = torch.load(darts_run / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 1 and state["fingerprint"] == config["fingerprint"]


def test_the_searched_genotype_fits_its_space(nb201_run):
    job = _job()
    genotype = G.load(nb201_run / "genotype.json")
    assert set(genotype.cells) == {"cell"} and len(genotype.cells["cell"].edges) == 6
    G.to_nb201(genotype)  # a complete NB201 cell
    specialise_to_genotype(job.ir, genotype)


def test_same_seed_same_metrics_other_seed_other_metrics(nb201_run, tmp_path):
    _search(tmp_path / "again")
    assert (tmp_path / "again" / "metrics.jsonl").read_bytes() == (nb201_run / "metrics.jsonl").read_bytes()
    assert G.load(tmp_path / "again" / "genotype.json") == G.load(nb201_run / "genotype.json")
    _search(tmp_path / "other", seed=1)
    assert (tmp_path / "other" / "metrics.jsonl").read_bytes() != (nb201_run / "metrics.jsonl").read_bytes()


@pytest.fixture(scope="module")
def nb201_two_epochs(tmp_path_factory, one_thread_module) -> Path:
    """An uninterrupted 2-epoch NB201 search, shared read-only."""
    path = tmp_path_factory.mktemp("whole") / "run"
    _search(path, epochs=2)
    return path


def test_resume_replays_an_uninterrupted_run(tmp_path, nb201_two_epochs):
    job = _job(epochs=2)
    with pytest.raises(KeyboardInterrupt):
        run_search(job, tmp_path / "cut", stop_after=1)
    assert not (tmp_path / "cut" / "genotype.json").exists()
    assert len([r for r in _records(tmp_path / "cut") if r["type"] == "epoch"]) == 1
    result = resume(tmp_path / "cut")
    assert result.run_dir == tmp_path / "cut"
    # config.json describes where the run started; where it continued, and in what environment (another
    # machine's thread count or torch changes the numbers), is recorded beside it
    [resumed] = [json.loads(line) for line in (tmp_path / "cut" / "resumes.jsonl").read_text().splitlines()]
    assert (resumed["epoch"], resumed["threads"], resumed["torch"], resumed["device"]) == \
        (1, torch.get_num_threads(), torch.__version__, "cpu")
    for name in ("metrics.jsonl", "genotype.json"):
        assert (tmp_path / "cut" / name).read_bytes() == (nb201_two_epochs / name).read_bytes(), name
    with pytest.raises(SearchError, match="already finished"):
        resume(tmp_path / "cut")


def test_resume_after_a_crash_mid_epoch_drops_the_partial_records(tmp_path, nb201_two_epochs):
    """A crash after the checkpoint leaves stray step records; resuming cuts them back first."""
    job = _job(epochs=2)
    with pytest.raises(KeyboardInterrupt):
        run_search(job, tmp_path / "cut", stop_after=1)
    with open(tmp_path / "cut" / "metrics.jsonl", "a") as f:
        f.write('{"type": "step", "epoch": 1, "step": 0, "loss": 9.9}\n')
    resume(tmp_path / "cut")
    assert (tmp_path / "cut" / "metrics.jsonl").read_bytes() == (nb201_two_epochs / "metrics.jsonl").read_bytes()


# ------------------------------------------------------------------ variants


def test_search_drop_path_rises_from_zero_to_its_value(tmp_path, nb201_two_epochs):
    """RobustDARTS' schedule, p·epoch/(epochs − 1): the first epoch runs without drop path, the last with p."""
    _search(tmp_path / "run", epochs=2, drop_path=0.3)
    epochs = [r for r in _records(tmp_path / "run") if r["type"] == "epoch"]
    assert [r["drop_path"] for r in epochs] == [0.0, 0.3]
    plain = [r for r in _records(nb201_two_epochs) if r["type"] == "epoch"]
    assert epochs[0]["train_loss"] == plain[0]["train_loss"]  # nothing dropped yet: the same run
    assert epochs[1]["train_loss"] != plain[1]["train_loss"]
    assert "drop_path" not in plain[0]


def test_search_drop_path_stays_at_its_value_after_the_search():
    """DARTS-PT tunes after the last epoch: the rate must not climb past the p the user asked for."""
    from nasc.runtime.search import search_drop_path

    assert [search_drop_path(0.3, e, 3) for e in range(5)] == [0.0, 0.15, 0.3, 0.3, 0.3]
    assert search_drop_path(0.2, 0, 1) == 0.2 and search_drop_path(0.0, 4, 3) == 0.0


def test_second_order_search(tmp_path):
    job, result = _search(tmp_path / "run", order=2)
    assert job.config.order == 2
    steps = [r for r in _records(tmp_path / "run") if r["type"] == "step"]
    assert steps and all(r["arch_loss"] is not None and math.isfinite(r["arch_loss"]) for r in steps)
    assert (tmp_path / "run" / "genotype.json").is_file()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["search"]["order"] == 2


def test_each_pass_over_a_shorter_validation_split_has_its_own_order():
    """train_portion 0.75: an epoch's α steps go through the validation split three times. The official code
    draws a fresh random batch for every α step (PC-DARTS: a fresh iterator per pass); the second and third
    passes used to repeat one order, batch for batch."""
    from nasc.runtime.search import Trainer

    trainer = Trainer(_job(train_portion=0.75))
    per_pass = len(trainer.val)
    assert len(trainer.train) > 2 * per_pass
    seen: list[torch.Tensor] = []
    step = trainer.step

    def spy(x, y, xv, yv, **kw):
        seen.append(yv.clone())
        return step(x, y, xv, yv, **kw)

    trainer.step = spy
    trainer.run_epoch(lambda event: None)
    passes = [seen[i:i + per_pass - 1] for i in range(0, len(seen), per_pass)][:3]  # full batches of each pass
    assert len(passes) == 3 and all(len(p) == per_pass - 1 for p in passes)
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert not all(torch.equal(u, v) for u, v in zip(passes[a], passes[b])), (a, b)


def test_second_order_in_bf16_is_refused_before_a_search():
    """The unrolled step's Hessian term is a difference of two α gradients a step of norm 0.01 apart; in bfloat16
    it came out 0.8-0.9 off its fp32 value (the first-order gradient: 0.13), so it would steer α by rounding."""
    with pytest.raises(SearchError, match="second-order DARTS needs precision") as info:
        _job(order=2, precision="bf16")
    assert "--opt precision=fp32" in info.value.hint and "--first-order" in info.value.hint
    assert _job(order=1, precision="bf16").config.precision == "bf16"
    assert _job(order=2, precision="fp32").config.order == 2


def test_single_level_search_updates_alpha_on_the_training_split(tmp_path):
    job = _job(levels=1)
    before = [a.detach().clone() for a in job.net.arch_parameters()]
    run_search(job, tmp_path / "run")
    records = _records(tmp_path / "run")
    steps = [r for r in records if r["type"] == "step"]
    assert all(r["arch_loss"] is None for r in steps)  # no separate validation step
    assert len(steps) == math.ceil(1437 / 64)  # the whole training set trains weights and α
    assert any(not torch.equal(b, a.detach()) for b, a in zip(before, job.net.arch_parameters()))
    assert (tmp_path / "run" / "genotype.json").is_file()


def test_arch_start_after_the_last_epoch_leaves_alpha_unchanged(tmp_path):
    job = _job(arch_start=1)
    before = [a.detach().clone() for a in job.net.arch_parameters()]
    weights = [w.detach().clone() for w in job.net.weight_parameters()]
    run_search(job, tmp_path / "run")
    for b, a in zip(before, job.net.arch_parameters()):
        assert torch.equal(b, a.detach())
    assert any(not torch.equal(b, w.detach()) for b, w in zip(weights, job.net.weight_parameters()))
    epoch = [r for r in _records(tmp_path / "run") if r["type"] == "epoch"][0]
    assert epoch["arch_updates"] is False
    assert all(r["arch_loss"] is None for r in _records(tmp_path / "run") if r["type"] == "step")
    # the warning the run printed is part of its record, as a training run's config.json keeps its own
    warnings = json.loads((tmp_path / "run" / "config.json").read_text())["warnings"]
    assert any(w.startswith("α is never trained") for w in warnings), warnings


def test_search_moves_alpha(nb201_run):
    state = torch.load(nb201_run / "checkpoint.pt", map_location="cpu", weights_only=False)
    job = _job()
    initial = job.net.alphas["cell"].detach()
    assert not torch.equal(state["net"]["alphas.cell"], initial)


# ------------------------------------------------------------------ refusals


def test_missing_cifar_dir_is_a_data_error_without_network(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    target = tmp_path / "nope"
    with pytest.raises(DataError) as info:
        prepare(Request(space="nb201", params=NB201_TINY,
                        overrides={"dataset": "cifar10", "data_dir": str(target)}))
    assert "cifar10" in info.value.message
    assert info.value.hint  # says how to get the files by hand
    assert not target.exists()  # a failed first download leaves nothing behind


@pytest.mark.parametrize("files, hint", [
    ({"config.json": {"kind": "train"}, "checkpoint.pt": 0}, "resume it with `nasc train --resume"),
    ({"config.json": {"kind": "train"}, "checkpoint.pt": 0, "result.json": {}}, "finished `nasc train` run"),
    ({"config.json": {}, "checkpoint.pt": 0}, "resume it with `nasc search --resume"),
    ({"config.json": {}, "checkpoint.pt": 0, "genotype.json": {}}, "finished `nasc search` run"),
    ({"notes.txt": "mine"}, "not a nasc run"),
])
def test_a_taken_run_dir_says_which_command_resumes_it(tmp_path, files, hint):
    """`nasc search --resume` on a training run (or on a folder of notes) only fails again."""
    from nasc.runtime.rundir import RunDir

    for name, content in files.items():
        (tmp_path / name).write_text(json.dumps(content))
    with pytest.raises(SearchError, match="already contains a run") as info:
        RunDir(tmp_path).create()
    assert hint in info.value.hint


def test_unknown_dataset_names_the_closest(tmp_path):
    with pytest.raises(NascError) as info:
        prepare(Request(space="nb201", params=NB201_TINY, overrides={"dataset": "digit"}))
    assert "digit" in info.value.message and "digits" in (info.value.hint or "")


def test_existing_run_is_refused_and_left_intact(nb201_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(nb201_run, run)
    before = _snapshot(run)
    job = _job()
    with pytest.raises(SearchError, match="already contains a run"):
        run_search(job, run)
    assert _snapshot(run) == before

    other = tmp_path / "notes"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(SearchError):
        run_search(job, other)
    assert _snapshot(other) == {"notes.txt": b"mine"}


def test_unwritable_run_dir_is_a_search_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    job = _job()
    with pytest.raises(SearchError, match="cannot write"):
        run_search(job, blocker / "run")
    with pytest.raises(SearchError, match="not a directory"):
        run_search(job, blocker)
    assert blocker.read_text() == "a file, not a folder"


def test_a_full_disk_is_a_search_error_that_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    """torch.save reports a full disk as a RuntimeError ('unexpected pos ...'); it was an internal error
    that left a half-written .checkpoint.pt.tmp holding the space."""
    import nasc.runtime.rundir as rundir

    saves, real_save = [], torch.save

    def full_on_the_second(obj, f, *args, **kwargs):
        saves.append(f)
        if len(saves) == 2:
            Path(f).write_bytes(b"half a checkpoint")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 67328 vs 67224")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(rundir.torch, "save", full_on_the_second)
    run = tmp_path / "run"
    with pytest.raises(SearchError, match="cannot write checkpoint") as info:
        _search(run, epochs=2, train_portion=0.1)
    assert "--resume" in info.value.hint
    assert not list(run.glob(".*.tmp"))
    assert torch.load(run / "checkpoint.pt", weights_only=False)["epoch"] == 1  # the first epoch's, intact

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("builtins.open", no_space)
    with pytest.raises(SearchError, match="No space left on device"):
        rundir.RunDir(run).append(run / "metrics.jsonl", {"type": "step"})


def test_resume_in_a_run_dir_it_cannot_write_is_a_search_error(nb201_run, tmp_path):
    """Resuming first cuts metrics.jsonl back to the checkpoint; on a read-only run dir that was an
    internal error ('OSError: [Errno 30] Read-only file system')."""
    run = tmp_path / "run"
    shutil.copytree(nb201_run, run)
    (run / "genotype.json").unlink()
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()  # unwritable as a file, even for root
    with pytest.raises(SearchError, match="cannot write .*metrics.jsonl"):
        resume(run)


def test_resume_with_another_spaces_checkpoint_is_refused(darts_run, nb201_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(darts_run, run)
    shutil.copy(nb201_run / "checkpoint.pt", run / "checkpoint.pt")
    before = _snapshot(run)
    with pytest.raises(SearchError) as info:
        resume(run)
    assert "another space" in info.value.message
    assert _snapshot(run) == before


def test_resume_without_checkpoint_is_refused(nb201_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(nb201_run, run)
    (run / "checkpoint.pt").unlink()
    (run / "genotype.json").unlink()
    before = _snapshot(run)
    with pytest.raises(SearchError, match="no checkpoint"):
        resume(run)
    assert _snapshot(run) == before
    with pytest.raises(SearchError, match="not a nasc run directory"):
        resume(tmp_path / "empty")


def test_resume_when_the_space_file_is_gone(tmp_path, spaces_dir):
    space = tmp_path / "mine.nas"
    space.write_text((spaces_dir / "nb201.nas").read_text())
    job = _job(str(space), epochs=2)
    with pytest.raises(KeyboardInterrupt):
        run_search(job, tmp_path / "run", stop_after=1)
    text = space.read_text()
    space.unlink()
    with pytest.raises(SearchError, match="no longer exists") as info:
        resume(tmp_path / "run")
    # the run keeps the file it searched: a reader without the author's files can still see the space
    copy = tmp_path / "run" / "space" / "mine.nas"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["space_sources"] == ["space/mine.nas"]
    assert copy.read_text() == text and str(copy) in info.value.hint
    shutil.copy(copy, space)
    assert resume(tmp_path / "run").run_dir == tmp_path / "run"


def test_resume_hint_names_the_copy_of_the_space_file_not_of_a_base_with_its_name(tmp_path, spaces_dir):
    """a/x.nas extends ../b/x.nas: the base was read (and copied) first, as space/x.nas, and the hint for a gone
    a/x.nas said to copy the base's text over it, a space the run never searched."""
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.nas").write_text((spaces_dir / "nb201.nas").read_text())
    space = tmp_path / "a" / "x.nas"
    space.write_text('space mine extends "../b/x.nas"\n')
    with pytest.raises(KeyboardInterrupt):
        run_search(_job(str(space), epochs=2), tmp_path / "run", stop_after=1)
    text = space.read_text()
    space.unlink()
    with pytest.raises(SearchError, match="no longer exists") as info:
        resume(tmp_path / "run")
    copy = re.search(r"copy (\S+) back", info.value.hint).group(1)
    assert Path(copy).read_text() == text
    shutil.copy(copy, space)
    assert resume(tmp_path / "run").run_dir == tmp_path / "run"


def test_config_records_the_data_and_resume_refuses_other_data(tmp_path, mini_mnist):
    """Same dataset name and folder, other files: the run's record tells them apart and resume stops."""
    data = mini_mnist(tmp_path / "data", seed=0)
    job = _job(epochs=2, batch=16, dataset="mnist", data_dir=str(data))
    with pytest.raises(KeyboardInterrupt):
        run_search(job, tmp_path / "run", stop_after=1)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert recorded == {"name": "mnist", "fingerprint": job.dataset.fingerprint, "shape": [1, 8, 8], "classes": 10,
                        "train_images": 64, "test_images": 16, "weight_images": 32, "arch_images": 32}
    mini_mnist(data, seed=1)
    before = _snapshot(tmp_path / "run")
    with pytest.raises(DataError, match="other data") as info:
        resume(tmp_path / "run")
    assert recorded["fingerprint"] in info.value.message and "restore" in info.value.hint
    assert _snapshot(tmp_path / "run") == before
    # a run written before data fingerprints were recorded resumes as it always did
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    del config["data"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    assert resume(tmp_path / "run").run_dir == tmp_path / "run"


def test_a_run_copies_every_file_its_space_was_read_from(tmp_path, spaces_dir):
    from nasc.runtime.rundir import RunDir

    job = prepare(Request(space="darts_s2", params={"C": 2, "layers": 3}))  # extends darts.nas
    assert [Path(f).name for f in job.space_files] == ["darts_s2.nas", "darts.nas"]  # the space's own first
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.nas").write_text("a"), (tmp_path / "b" / "x.nas").write_text("b")
    run = RunDir(tmp_path / "run")
    run.create()
    assert run.copy_sources([tmp_path / "a" / "x.nas", tmp_path / "b" / "x.nas"]) == ["space/x.nas", "space/1-x.nas"]
    assert [(run.path / n).read_text() for n in ("space/x.nas", "space/1-x.nas")] == ["a", "b"]


def test_a_run_records_which_gpus_and_cuda_it_could_use(monkeypatch):
    """"device": "cuda" does not say which GPU: kernels round differently from one model to another."""
    from nasc.runtime.rundir import environment

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"GPU model {i}")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    env = environment()
    assert env["gpus"] == ["GPU model 0", "GPU model 1"] and env["cudnn"] == 90100
    assert env["cuda"] == torch.version.cuda
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not {"gpus", "cuda", "cudnn"} & set(environment())  # a CPU run's record stays as it was


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_search_error():
    with pytest.raises(SearchError, match="no CUDA device"):
        _job(device="cuda")


def test_corrupt_checkpoint_is_a_search_error(nb201_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(nb201_run, run)
    (run / "genotype.json").unlink()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SearchError, match="cannot read checkpoint"):
        resume(run)


# ------------------------------------------------------------------ acceptance


@pytest.mark.slow
def test_search_derive_and_train_beats_chance(tmp_path):
    """The issue's acceptance: search DARTS on digits, derive the genotype's network, train it, beat chance."""
    import torch.nn.functional as F

    from nasc.compiler.pipeline import compile_space
    from nasc.runtime.data import load_dataset
    from nasc.runtime.supernet import build_network

    job, result = _search(tmp_path / "run", "darts", DARTS_TINY, epochs=2)
    genotype = G.load(tmp_path / "run" / "genotype.json")
    assert genotype == result.genotype
    epochs = [r for r in _records(tmp_path / "run") if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1]
    assert epochs[1]["lr"] < epochs[0]["lr"]  # cosine

    ir = compile_space("darts", params={"C": 8, "layers": 5}, input_shape=job.dataset.shape)
    assert job.dataset.shape == (1, 8, 8)
    net = build_network(specialise_to_genotype(ir, genotype))
    data = load_dataset("digits")

    def prep(images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255 - data.mean[0]) / data.std[0]  # (N, 1, 8, 8)

    x, y = prep(data.train.images), data.train.labels
    x_test, y_test = prep(data.test.images), data.test.labels
    torch.manual_seed(0)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        net.train()
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 64):
            idx = order[i:i + 64]
            loss = F.cross_entropy(net(x[idx]), y[idx])  # at 8x8 the compiler drops the aux head (2x2 < pool 5)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = float((net(x_test).argmax(1) == y_test).float().mean())
    assert accuracy > 0.3  # 10 classes: chance is 0.1


@pytest.mark.parametrize("setting, value, message", [
    ("momentum", -1, "momentum must be ≥ 0, got -1"),
    ("weight_decay", -1e-4, "weight_decay must be ≥ 0"),
    ("clip", -1, "clip must be ≥ 0"),
    ("arch_start", -3, "arch_start must be ≥ 0"),
    ("cutout", -2, "cutout must be ≥ 0"),
    ("warmup", -1, "warmup must be ≥ 0"),
    ("skip_limit", -1, "skip_limit must be ≥ 0"),
    ("seed", -1, "seed must be ≥ 0"),
    ("seed", 2**64, "seed must be below 2^63"),  # was 'internal error: ValueError: Overflow when unpacking long long'
    ("arch_betas", (0.5, 1.5), "arch_betas must both lie in [0, 1)"),
    ("schedule_exponent", 0, "schedule_exponent must be positive"),
])
def test_out_of_range_settings_are_refused_before_a_search(setting, value, message):
    """They used to pass --dry-run and fail inside torch once training started (momentum = -1)."""
    from nasc.runtime.config import make_config

    with pytest.raises(SearchError, match=re.escape(message)):
        make_config({}, {setting: value})


@pytest.mark.parametrize("setting, value", [
    ("arch_lr", float("nan")), ("arch_weight_decay", float("nan")), ("lr", float("inf")),
    ("lr", float("nan")), ("clip", float("nan")), ("weight_decay", float("-inf")),
])
def test_non_finite_settings_are_refused_before_a_search(setting, value):
    """NaN passed `value < 0` checks: `--opt arch_lr=nan` ended in 'internal error: ValueError: Invalid
    learning rate: nan' from torch's Adam, and a NaN α made a GDAS step redraw its sample forever."""
    from nasc.runtime.config import make_config
    from nasc.runtime.train import train_config

    with pytest.raises(SearchError, match=f"{setting} must be a finite number"):
        make_config({}, {setting: value})
    if not setting.startswith("arch"):
        with pytest.raises(SearchError, match=setting):
            train_config({}, {setting: value})


def test_out_of_range_training_settings_are_refused():
    from nasc.runtime.train import train_config

    for setting, value in (("label_smoothing", 1.5), ("aux_weight", -0.4), ("momentum", -1), ("seed", 2**64)):
        with pytest.raises(SearchError, match=setting):
            train_config({}, {setting: value})


@pytest.mark.parametrize("kind", ["search", "train"])
def test_opt_with_a_block_call_setting_names_its_own_fields(kind):
    """`--opt weights=...` (the `.nas` spelling) used to hint 'did you mean weight_decay?'; --opt takes
    the call's options one by one, and the hint must name them."""
    from nasc.runtime.config import make_config
    from nasc.runtime.train import train_config

    build = make_config if kind == "search" else train_config
    with pytest.raises(SearchError) as info:
        build({}, {"weights": "sgd(lr=0.1)"})
    assert "lr, momentum, weight_decay, nesterov" in info.value.hint
    with pytest.raises(SearchError) as info:
        build({}, {"lr_schedule": "cosine(min=0)"})
    assert "lr_min" in info.value.hint and "schedule" in info.value.hint
    if kind == "search":
        with pytest.raises(SearchError) as info:
            build({}, {"arch": "adam(lr=1e-3)"})
        assert "arch_lr" in info.value.hint and "arch_betas" in info.value.hint


def test_deterministic_kernels_follow_each_run_not_the_last_one_in_the_process():
    """A notebook's second run with deterministic = false kept the first run's deterministic kernels."""
    from nasc.runtime.search import seed_everything

    before = torch.are_deterministic_algorithms_enabled()
    try:
        seed_everything(0, True)
        assert torch.are_deterministic_algorithms_enabled()
        seed_everything(0, False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before, warn_only=True)


def test_a_last_batch_of_one_image_does_not_crash_a_chain_that_reaches_1x1(tmp_path):
    """8x8 digits through three stride-2 stages end at 1x1; with 718 training images at batch 239 the
    last batch held one image, and batch norm in training mode raised ValueError (an internal error)."""
    space = tmp_path / "tiny.nas"
    space.write_text("""space tiny(classes = 10)

op mb3 = conv(1, out = C_in * 2) > bn > relu > dw_conv(3, stride) > bn > relu > conv(1) > bn
op mb5 = conv(1, out = C_in * 2) > bn > relu > dw_conv(5, stride) > bn > relu > conv(1) > bn

network:
    input 1 x 8 x 8
    stem conv(3, stride = 2, out = 4) > bn > relu
    choice 1 x [mb3, mb5], out 4, stride 2
    choice 1 x [mb3, mb5], out 4, stride 2
    head conv(1, out = 8) > bn > relu > global_avg_pool > linear(classes)

alpha per instance
select argmax per layer
""")
    job, result = _search(tmp_path / "run", str(space), params={}, batch=239)
    assert len(job.dataset.train) // 2 % 239 == 1  # the case: one image left over in the weights' half
    steps = [r for r in _records(tmp_path / "run") if r.get("type") == "step"]
    assert len(steps) == 3


# ------------------------------------------------------------------ one writer per run dir

_HOLD = """import sys, time
from nasc.runtime.rundir import RunDir
with RunDir(sys.argv[1]).writing(new=True):
    (RunDir(sys.argv[1]).config).write_text("{}")
    print("locked", flush=True)
    time.sleep(600)
"""


def _holder(run: Path):
    """Another process writing `run` (it holds the run's lock until killed)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_of_a_run_dir_fails_at_once_naming_the_holder(tmp_path):
    """Two processes in one run dir interleaved metrics.jsonl and overwrote each other's checkpoint; a run
    in progress even drew the hint to delete it ("never finished an epoch")."""
    from nasc.runtime.rundir import RunDir

    run = tmp_path / "run"
    proc = _holder(run)
    try:
        for attempt in (lambda: RunDir(run).create(), lambda: RunDir(run).writing().__enter__()):
            with pytest.raises(SearchError, match="is in use") as info:
                attempt()
            assert str(run) in info.value.message and f"pid {proc.pid}" in info.value.message
            assert "another --run-dir" in info.value.hint and "delete" not in info.value.hint
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_writer_leaves_no_stale_lock(tmp_path):
    from nasc.runtime.rundir import LOCK_FILE, RunDir

    run = tmp_path / "run"
    proc = _holder(run)
    proc.kill()
    proc.wait()
    assert (run / LOCK_FILE).is_file()  # the file stays, its lock went with the process
    with RunDir(run).writing():
        with RunDir(run).writing():  # nested in one process (resume -> run_search): the same lock
            pass
        assert (run / LOCK_FILE).is_file()
    assert not (run / LOCK_FILE).exists()


def test_a_finished_run_keeps_no_lock_file(nb201_run):
    from nasc.runtime.rundir import LOCK_FILE

    assert not (nb201_run / LOCK_FILE).exists()


def test_a_file_system_without_locks_still_runs(tmp_path, monkeypatch):
    """Lustre mounted without `flock` answers ENOSYS: the run goes on unguarded rather than not at all."""
    import errno
    import fcntl

    from nasc.runtime.rundir import RunDir

    def no_locks(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with RunDir(tmp_path / "run").writing(new=True):
        assert not RunDir(tmp_path / "run")._in_use()
    assert list((tmp_path / "run").iterdir()) == []


def test_runs_started_in_the_same_second_get_their_own_default_run_dir(tmp_path, monkeypatch):
    """A sweep over methods (`nasc search --relax gdas & nasc search --relax snas &`) names both runs
    runs/SPACE-TIME-sSEED: both picked the folder before either created it, and wrote it together."""
    from nasc.runtime import rundir
    from nasc.runtime.search import default_run_dir
    from nasc.runtime.train import default_train_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rundir.time, "strftime", lambda fmt: "20250101-120000")
    first, second = default_run_dir("nb201", 0), default_run_dir("nb201", 0)
    assert (first.name, second.name) == ("nb201-20250101-120000-s0", "nb201-20250101-120000-s0-2")
    assert first.is_dir() and second.is_dir()  # claimed: a third process takes -3
    assert default_train_dir("nb201", 0) != default_train_dir("nb201", 0)
@pytest.mark.parametrize("kind", ["search", "train"])
@pytest.mark.parametrize("schedule, option, value, field", [
    ("cosine", "exponent", 3, "schedule_exponent"), ("constant", "every", 2, "schedule_every"),
    ("step", "exponent", 2.5, "schedule_exponent"), ("constant", "gamma", 0.5, "schedule_gamma"),
    ("cosine_power", "every", 2, "schedule_every"),
])
def test_a_schedule_option_the_schedule_does_not_read_is_refused(kind, schedule, option, value, field):
    """`lr_schedule = cosine(warmup = 5)` and `--opt schedule_exponent=3` were accepted and changed nothing:
    only cosine_power reads exponent, only step gamma and every."""
    from nasc.compiler.expr import CallValue
    from nasc.runtime.config import make_config
    from nasc.runtime.train import train_config

    build = make_config if kind == "search" else train_config
    with pytest.raises(SearchError, match=f"schedule '{schedule}' takes no {option}") as info:
        build({"lr_schedule": CallValue(name=schedule, args=(), kwargs=((option, value),))}, {})
    assert "cosine_power(min, exponent, warmup), step(gamma, every, warmup)" in info.value.hint
    with pytest.raises(SearchError, match=f"--opt {field}"):
        build({}, {"schedule": schedule, field: value})
    assert build({}, {"schedule": "cosine_power", "schedule_exponent": 3, "warmup": 5}).warmup == 5
    assert build({}, {"schedule": "step", "schedule_gamma": 0.5, "schedule_every": 2}).schedule_every == 2


def test_a_plugin_schedule_takes_exponent_and_warmup():
    from nasc.runtime.config import make_config
    from nasc.runtime.schedules import SCHEDULES

    SCHEDULES.add("warm_test", lambda epoch, epochs, lr, lr_min, *, exponent, warmup: lr, doc="test", origin=__name__)
    try:
        assert make_config({}, {"schedule": "warm_test", "warmup": 3, "schedule_exponent": 1.5}).warmup == 3
        with pytest.raises(SearchError, match="'warm_test' takes no gamma .*takes min, exponent, warmup$"):
            make_config({}, {"schedule": "warm_test", "schedule_gamma": 0.5})
    finally:
        SCHEDULES._entries.pop("warm_test", None)


def test_an_architecture_optimiser_option_it_does_not_read_is_refused():
    """`arch = adam(momentum = 0.9)` and `--opt arch_momentum=0.9` (Adam) were accepted and dropped: Adam reads
    betas, SGD momentum. A preset's or the file's value for the other optimiser stays allowed (unused)."""
    from nasc.compiler.expr import CallValue
    from nasc.runtime.config import make_config

    for name, option, value in (("adam", "momentum", 0.9), ("sgd", "betas", (0.9, 0.99))):
        with pytest.raises(SearchError, match=f"{name}\\(\\) has no option '{option}'"):
            make_config({"arch": CallValue(name=name, args=(), kwargs=(("lr", 1e-3), (option, value)))}, {})
    with pytest.raises(SearchError, match="adam architecture optimiser takes no momentum"):
        prepare(Request(space="nb201", params={"C": 4, "N": 1}, overrides={"arch_momentum": 0.9, "device": "cpu"}))
    job = prepare(Request(space="proxyless", relax="snas", overrides={"device": "cpu"}))  # Adam betas in the file
    assert job.config.arch_optimizer == "sgd"


def test_opt_affine_reaches_the_supernet(tmp_path):
    """`--opt affine=true` was recorded in config.json while the supernet kept its affine-free BNs: the compiler
    read `affine` from the file's search block alone."""
    space = tmp_path / "affine.nas"
    space.write_text('space affine extends "nb201.nas"\nsearch:\n    affine = true\n')

    def weights(**request):
        job = prepare(Request(params={"C": 4, "N": 1}, **request))
        return sum(p.numel() for p in job.net.weight_parameters()), job

    plain, _ = weights(space="nb201", overrides={"device": "cpu"})
    from_file, _ = weights(space=str(space), overrides={"device": "cpu"})
    from_opt, job = weights(space="nb201", overrides={"device": "cpu", "affine": True})
    assert from_opt == from_file > plain and job.config.affine
    assert weights(space=str(space), overrides={"device": "cpu", "affine": False})[0] == plain
    assert job.ir.meta["fingerprint"] != prepare(Request(space="nb201", params={"C": 4, "N": 1})).ir.meta["fingerprint"]


def test_single_level_search_says_it_does_not_use_train_portion_and_arch_every():
    """levels = 1 trains on the whole training split with an α step at every weight step, so
    `--opt train_portion=0.2` or the file's `arch_every = 5` changed nothing, without a word."""
    def notes(**overrides):
        return " ".join(prepare(Request(space="nb201", params={"C": 4, "N": 1},
                                        overrides={"device": "cpu", **overrides})).notes)

    assert "train_portion = 0.2 and arch_every = 5 not used: a single-level search" in \
        notes(levels=1, train_portion=0.2, arch_every=5)
    assert "not used" not in notes(levels=2, train_portion=0.2, arch_every=5) and "not used" not in notes(levels=1)


@pytest.mark.parametrize("kind", ["search", "train"])
def test_nesterov_without_momentum_is_refused(kind):
    """`sgd(momentum = 0, nesterov = true)` searched and trained with plain SGD, dropping nesterov unsaid."""
    from nasc.compiler.expr import CallValue
    from nasc.runtime.config import make_config
    from nasc.runtime.train import train_config

    build = make_config if kind == "search" else train_config
    weights = CallValue(name="sgd", args=(), kwargs=(("momentum", 0.0), ("nesterov", True)))
    with pytest.raises(SearchError, match="nesterov = true needs momentum > 0"):
        build({"weights": weights}, {})
    with pytest.raises(SearchError, match="nesterov = true needs momentum > 0"):
        build({}, {"nesterov": True, "momentum": 0})
    assert build({}, {"nesterov": True}).nesterov and not build({}, {"momentum": 0}).nesterov


@pytest.mark.parametrize("kind", ["search", "train"])
def test_cosine_power_exponent_below_one_is_refused(kind):
    """e^(c + 1) with e < 1 grows as c falls: `cosine_power(exponent = 0.5)` ran a schedule rising from min to lr
    (sharpDARTS' cosine_power_annealing raises a ValueError for it)."""
    from nasc.compiler.expr import CallValue
    from nasc.runtime.config import make_config
    from nasc.runtime.train import train_config

    build = make_config if kind == "search" else train_config
    schedule = CallValue(name="cosine_power", args=(), kwargs=(("exponent", 0.5),))
    with pytest.raises(SearchError, match="cosine_power needs exponent ≥ 1"):
        build({"lr_schedule": schedule}, {})
    with pytest.raises(SearchError, match="cosine_power needs exponent ≥ 1"):
        build({}, {"schedule": "cosine_power", "schedule_exponent": 0.5})
    assert build({}, {"schedule": "cosine_power", "schedule_exponent": 1}).schedule_exponent == 1


@pytest.mark.parametrize("schedule", ["constant", "step"])
def test_a_min_the_schedule_does_not_read_is_refused(schedule):
    """`lr_schedule = constant(min = 0.01)` or `step(min = 0)` was accepted and changed nothing: only the cosine
    schedules read lr_min. (--opt lr_min: the next test.)"""
    from nasc.compiler.expr import CallValue
    from nasc.runtime.config import make_config
    from nasc.runtime.train import train_config

    for build in (make_config, train_config):
        with pytest.raises(SearchError, match=f"schedule '{schedule}' takes no min"):
            build({"lr_schedule": CallValue(name=schedule, args=(), kwargs=(("min", 0.01),))}, {})
        assert build({"lr_schedule": CallValue(name="cosine_power", args=(), kwargs=(("min", 0.01),))}, {}).lr_min == 0.01


@pytest.mark.parametrize("schedule", ["constant", "step", "linear"])
def test_an_opt_lr_min_the_schedule_does_not_read_is_refused_but_not_a_presets(schedule):
    """`--opt lr_min=0.1` beside `step` or `constant` was accepted and changed nothing, where docs/language.md says an
    option the schedule does not read is an error, also from --opt. A relaxation preset's lr_min (GDAS: 0.001)
    beside a space's own `step` is not the user's doing and stays accepted."""
    from nasc.runtime.train import train_config

    with pytest.raises(SearchError, match=rf"schedule '{schedule}' takes no min \(--opt lr_min=0.1; "):
        prepare(Request(space="nb201", params=NB201_TINY, overrides={"schedule": schedule, "lr_min": 0.1}))
    with pytest.raises(SearchError, match=rf"schedule '{schedule}' takes no min \(--opt lr_min=0.1; "):
        train_config({}, {"schedule": schedule, "lr_min": 0.1})
    assert train_config({}, {"schedule": "cosine", "lr_min": 0.1}).lr_min == 0.1
    assert prepare(Request(space="nb201", params=NB201_TINY, relax="gdas",
                           overrides={"schedule": schedule})).config.schedule == schedule


def test_a_search_batch_of_one_image_that_batch_norm_cannot_normalise_is_a_clear_error(tmp_path):
    """The ProxylessNAS chain on 8x8 digits reaches 1x1 maps: at batch 1 torch's batch-norm ValueError reached
    the command line as an internal error (a bug in nasc); it is the batch size's fault, and now says so."""
    job = prepare(Request(space="proxyless", overrides={"epochs": 1, "batch": 1}))
    with pytest.raises(DataError, match="batch norm cannot normalise a batch of one image") as e:
        run_search(job, tmp_path / "run")
    assert "--batch" in e.value.hint
