"""DARTS-PT: the op whose removal hurts the supernet most is kept, whatever α says."""

import json

import pytest
import torch
from typer.testing import CliRunner

from nasc.cli import app
from nasc.runtime.search import Request, Trainer, prepare
from nasc.runtime.selectors import load_selector

# One searchable edge: a parameter-free op that only adds noise, and a convolution that carries the signal.
SPACE = """
space pt_case(C = 8, classes = 10)
op noise = noise(stride)
op nor_conv_{k}x{k} = relu > conv(k, stride) > bn
cell c(x0):
    nodes x1 = sum
    edge x0 -> x1: [noise, nor_conv_3x3]
    output x1
network:
    stem conv(3, out = C) > bn
    stack 1 x c, width C
    head global_avg_pool > linear(classes)
select argmax per edge
search:
    epochs = 3
    batch = 32
    fix_alpha = true
    weights = sgd(lr = 0.05, momentum = 0.9, weight_decay = 3e-4)
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    path = tmp_path_factory.mktemp("pt") / "pt_case.nas"
    path.write_text(SPACE)
    job = prepare(Request(space=str(path)))
    trainer = Trainer(job)
    for _ in range(job.config.epochs):
        trainer.run_epoch(lambda e: None)
    with torch.no_grad():  # α now says the noise op matters most
        job.net.alphas["c"].copy_(torch.tensor([[2.0, 0.0]]))
    return job, trainer


def test_magnitude_and_perturbation_disagree_and_pt_keeps_the_convolution(trained):
    job, trainer = trained
    magnitude = load_selector("magnitude").select(job.net, job.ir)
    assert [e.op for e in magnitude.cells["c"].edges] == ["noise"]
    decisions = []
    pt = load_selector("perturbation", {"tune_epochs": 0}).select(job.net, job.ir, trainer=trainer,
                                                                  emit=decisions.append)
    assert [e.op for e in pt.cells["c"].edges] == ["nor_conv_3x3"]
    (decision,) = [d for d in decisions if d.get("stage") == "op"]
    # removing the convolution leaves only noise: accuracy collapses; removing the noise does not hurt
    assert decision["without"]["nor_conv_3x3"] < decision["without"]["noise"]
    assert decision["chosen"] == "nor_conv_3x3" and decision["edge"] == "x1<-x0"
    assert job.net.weight_transform is None  # the projection is removed afterwards


def test_an_excluded_op_is_neither_scored_nor_chosen(trained):
    """Removing an op that can never be kept says nothing: DARTS' `none` would cost 1/8 of the passes."""
    job, trainer = trained
    decisions = []
    pt = load_selector("perturbation", {"tune_epochs": 0, "exclude": ["nor_conv_3x3"]}).select(
        job.net, job.ir, trainer=trainer, emit=decisions.append)
    assert [e.op for e in pt.cells["c"].edges] == ["noise"]
    plan, = [d for d in decisions if d.get("stage") == "plan"]
    op, = [d for d in decisions if d.get("stage") == "op"]
    assert plan["evaluations"] == 1 and list(op["without"]) == ["noise"]


def test_perturbation_needs_the_trainer(trained):
    from nasc.errors import BuildError

    job, _ = trained
    with pytest.raises(BuildError, match="perturbation"):
        load_selector("perturbation").select(job.net, job.ir)


def _search(tmp_path, space, *extra):
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["search", space, "--set", "C=4", "--epochs", "1", "--batch", "32",
                                      "--opt", "train_portion=0.2", "--run-dir", str(run), *extra])
    assert result.exit_code == 0, result.output
    return run


@pytest.mark.slow
@pytest.mark.parametrize("space,extra", [
    ("spaces/darts_s2.nas", ["--set", "layers=5", "--first-order"]),
    ("spaces/nb201.nas", ["--set", "N=1"]),
])
def test_pt_end_to_end_and_reselection_keeps_the_original(tmp_path, space, extra):
    # two validation batches per score: every projection step runs, on less data
    run = _search(tmp_path, space, "--select", "perturbation", "--select-opt", "tune_epochs=0",
                  "--select-opt", "eval_batches=2", *extra)
    genotype = json.loads((run / "genotype.json").read_text())
    assert genotype["cells"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r["type"] == "select" and r["stage"] == "op" for r in records)
    before = (run / "genotype.json").read_bytes()
    result = CliRunner().invoke(app, ["select", str(run), "--select", "magnitude"])
    assert result.exit_code == 0, result.output
    assert (run / "genotype-magnitude.json").is_file()
    assert (run / "genotype.json").read_bytes() == before  # `nasc select` never overwrites the run's genotype


def test_each_step_decides_for_normal_and_reduce_then_tunes_once_with_fresh_momentum(monkeypatch):
    """As ruocwang/darts-pt's projection loop: per step one edge (then one node with more than two
    inputs) of each cell type, a tuning after each step but the last, a new SGD before tuning."""
    from nasc.runtime.perturbation import Perturbation

    job = prepare(Request(space="darts", params={"C": 4, "layers": 3}, overrides={"batch": 16, "epochs": 1}))
    trainer = Trainer(job)
    first = trainer.w_opt.param_groups[0]["params"][0]
    trainer.w_opt.state[first]["momentum_buffer"] = torch.ones_like(first)  # as the search leaves it
    seen = []

    def tune(self, trainer, emit):
        proj = job.net.weight_transform
        seen.append(({g: len(d) for g, d in proj.decided.items()}, {g: len(r) for g, r in proj.removed.items()},
                     len(trainer.w_opt.state)))
    monkeypatch.setattr(Perturbation, "_tune", tune)
    scores = iter(torch.rand(1000, generator=torch.Generator().manual_seed(0)).tolist())
    monkeypatch.setattr(Perturbation, "_score", lambda self, trainer: next(scores))  # the steps, not the scores
    decisions = []
    genotype = load_selector("perturbation").select(job.net, job.ir, trainer=trainer,
                                                                         emit=decisions.append)
    assert seen[0][2] == 0  # the first tuning starts without the search's momentum
    # 14 op steps and 3 node steps (n1, n2, n3 have 3, 4, 5 inputs; n0 has 2): 16 tunings, none after the last
    assert [d for d, _, _ in seen] == [{"normal": i, "reduce": i} for i in range(1, 15)] + [{"normal": 14,
                                                                                            "reduce": 14}] * 2
    removed = [r for _, r, _ in seen[14:]]  # each group's nodes in its own random order: 1, 2 or 3 edges each
    assert all(0 < r[g] < 6 for r in removed for g in r) and all(removed[0][g] < removed[1][g] for g in removed[0])
    assert sum(d.get("stage") == "topology" for d in decisions) == 2 * (1 + 2 + 3)
    # the plan, up front: 2 x 14 edges x 7 ops (`none` is excluded, so not scored), then
    # 2 x (3 + (4 + 3) + (5 + 4 + 3)) edge removals scored
    (plan,) = [d for d in decisions if d.get("stage") == "plan"]
    assert (plan["decisions"], plan["evaluations"], plan["tune_epochs"]) == (17, 2 * 14 * 7 + 2 * 22, 16 * 5)
    assert decisions[0] is plan
    assert all(len(genotype.cells[c].edges) == 8 for c in ("normal", "reduce"))


def test_projections_are_scored_with_batch_statistics_and_leave_running_statistics_alone(trained):
    """darts-pt scores a projection with `infer(..., _eval=False)`, i.e. in training mode: BN normalises
    with the batch's statistics, not running statistics gathered with every op in place."""
    import copy

    import torch.nn.functional as F

    from nasc.runtime.perturbation import evaluate_limited

    job, trainer = trained
    bns = [m for m in job.net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    try:
        for m in bns:  # running statistics far from any batch's: an eval-mode pass would be ruined by them
            m.running_mean.fill_(50.0)
            m.running_var.fill_(1e-4)
        reference = copy.deepcopy(job.net).eval()
        for m in reference.modules():  # the official code's model.train(); the noise op stays off
            if isinstance(m, torch.nn.BatchNorm2d):
                m.train()
        loss = correct = n = 0
        torch.manual_seed(0)  # the same noise in both passes
        with torch.no_grad():
            for xb, yb in trainer.val_eval.epoch(0):
                x, y = trainer._batch(xb, yb, trainer.plain)
                logits = reference(x)
                loss += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
                n += y.numel()
        torch.manual_seed(0)
        assert evaluate_limited(trainer) == pytest.approx((loss / n, correct / n), rel=1e-5)
        assert all(bool((m.running_mean == 50.0).all() and (m.running_var == m.running_var[0]).all()) for m in bns)
        assert job.net.training
    finally:
        with torch.no_grad():
            for m, (mean, var) in zip(bns, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)


def test_topology_ties_drop_the_later_input_as_darts_pt(monkeypatch):
    """darts-pt's project_edge keeps the last edge of a tie as the one to delete (`not compare(crit,
    crit_extrema)`, i.e. ≥): with every score equal, each node keeps its two earliest inputs."""
    from nasc.runtime.perturbation import Perturbation

    job = prepare(Request(space="darts", params={"C": 4, "layers": 3}, overrides={"batch": 16, "epochs": 1}))
    monkeypatch.setattr(Perturbation, "_tune", lambda self, trainer, emit: None)
    monkeypatch.setattr(Perturbation, "_score", lambda self, trainer: 0.5)
    genotype = load_selector("perturbation").select(job.net, job.ir, trainer=Trainer(job))
    for cell in genotype.cells.values():
        assert sorted((e.node, e.input) for e in cell.edges) == [(n, i) for n in range(2, 6) for i in (0, 1)]
        assert {e.op for e in cell.edges} == {"max_pool_3x3"}  # op ties: the first allowed op, as project_op


def test_the_selection_says_its_cost_and_how_to_shorten_it_then_counts_down(monkeypatch):
    """DARTS-PT's tuning makes it take ~(edges + nodes) x 5 search epochs: say so before the first
    decision, name the options that shorten it, and estimate the time left once both kinds are timed."""
    from rich.console import Console
    from rich.progress import Progress

    from nasc.progress import SelectionDisplay

    job = prepare(Request(space="darts", params={"C": 4, "layers": 3}, overrides={"batch": 16, "epochs": 1}))
    trainer = Trainer(job)
    monkeypatch.setattr(trainer, "run_epoch", lambda emit, lr=None, data_epoch=None: {"val_acc": 0.5, "val_loss": 1.0})
    from nasc.runtime.perturbation import Perturbation

    monkeypatch.setattr(Perturbation, "_score", lambda self, trainer: 0.5)
    events = []
    load_selector("perturbation", {"tune_epochs": 1}).select(job.net, job.ir, trainer=trainer, emit=events.append)
    progress = [e for e in events if e["type"] == "progress"]
    assert [e["done"] for e in progress] == list(range(1, 240 + 16 + 1)) and progress[-1]["total"] == 240 + 16
    first_tune = next(i for i, e in enumerate(progress) if e["tune_epochs"])
    assert all(e["seconds_left"] is None for e in progress[:first_tune])  # no guess before a tuning is timed
    assert all(e["seconds_left"] is not None for e in progress[first_tune:]) and progress[-1]["seconds_left"] == 0
    console = Console(record=True, width=200)
    show = SelectionDisplay(console, Progress(console=console))
    for e in events:
        show(e)
    text = console.export_text()
    assert "17 decisions, 240 supernet evaluations" in text and "16 tuning epochs" in text
    assert "--select-opt tune_epochs=N" in text and "eval_batches=N" in text


def test_each_tuning_epoch_draws_its_own_batches(tmp_path):
    """DARTS-PT's tuning epochs all run at the last search epoch's index (its schedule, no further progress):
    they used to replay that epoch's batches in its order, where the official loader reshuffles every epoch."""
    path = tmp_path / "two_edges.nas"
    path.write_text(SPACE.replace("nodes x1 = sum", "nodes x1..x2 = sum")
                    .replace("    edge x0 -> x1: [noise, nor_conv_3x3]\n    output x1",
                             "    edge x0 -> x1: [noise, nor_conv_3x3]\n    edge x1 -> x2: [noise, nor_conv_3x3]\n"
                             "    output x2")
                    .replace("epochs = 3", "epochs = 1"))
    job = prepare(Request(space=str(path)))
    trainer = Trainer(job)
    epochs: list[list[torch.Tensor]] = []
    step, run_epoch = trainer.step, trainer.run_epoch

    def spy_step(x, y, xv, yv, **kw):
        epochs[-1].append(y.clone())
        return step(x, y, xv, yv, **kw)

    def spy_epoch(*args, **kw):
        epochs.append([])
        return run_epoch(*args, **kw)

    trainer.step, trainer.run_epoch = spy_step, spy_epoch
    trainer.run_epoch(lambda e: None)  # the search's one epoch
    load_selector("perturbation", {"tune_epochs": 2}).select(job.net, job.ir, trainer=trainer)
    assert len(epochs) == 3  # two edges: one tuning (2 epochs) between the two decisions
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert not all(torch.equal(u, v) for u, v in zip(epochs[a], epochs[b])), (a, b)


@pytest.mark.parametrize("relax, warned", [("gdas", True), ("darts", False)])
def test_a_relaxation_that_evaluates_one_op_per_edge_is_told_its_scores_mostly_tie(tmp_path, relax, warned):
    """GDAS scores the argmax op of each edge: removing any other op changes nothing, so DARTS-PT's picks
    there are close to the magnitude rule's, which the plan says (on screen and in metrics.jsonl)."""
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["search", "spaces/nb201.nas", "--set", "C=4", "--set", "N=1", "--relax", relax,
                                      "--epochs", "1", "--batch", "32", "--opt", "train_portion=0.2",
                                      "--select", "perturbation", "--select-opt", "tune_epochs=0",
                                      "--select-opt", "eval_batches=1", "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    assert ("scores tie" in " ".join(result.output.split())) is warned
    plan = next(r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                if r["type"] == "select" and r["stage"] == "plan")
    assert (plan["warning"] is not None) is warned
