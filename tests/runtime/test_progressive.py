"""Progressive search (P-DARTS): stage schedule, candidate pruning, skip dropout, the skip-connect rule,
one run directory across stages, resume at and between stage boundaries, and `nasc search` on pdarts.nas."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nasc.compiler import genotype as G
from nasc.compiler.ir import lint
from nasc.compiler.pipeline import compile_space
from nasc.compiler.restrict import restrict_candidates
from nasc.errors import NascError, NasSemanticError, SearchError
from nasc.runtime import progressive as P
from nasc.runtime.relaxations.base import load_relaxation
from nasc.runtime.search import Request, prepare, resume, run_search
from nasc.runtime.supernet import build_supernet

torch.set_num_threads(1)  # a loaded 2-core machine: two intra-op threads are 10-50x slower

OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
       "dil_conv_5x5"]
KEEP = [8, 4, 2]
TINY = """space tiny_pdarts(C = 4, layers = 3) extends "darts.nas"
search:
    stages = [stage(layers = 3, keep = 8, skip_dropout = 0.2),
              stage(layers = 5, keep = 4, skip_dropout = 0.4),
              stage(layers = 5, keep = 2)]
    epochs = 1
    batch = 32
    arch_start = 0
    skip_limit = 2
"""
OVERRIDES = {"device": "cpu", "train_portion": 0.1}  # 5 steps per stage


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_ir():
    return compile_space("darts", params={"C": 4, "layers": 3}, input_shape=(1, 8, 8))


@pytest.fixture
def tiny_net(tiny_ir):
    return build_supernet(tiny_ir, load_relaxation("softmax"), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "tiny_pdarts.nas"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def resumed_run(space_file, tmp_path_factory):
    """The tiny 3-stage search, interrupted after stage 0's only epoch and resumed to the end."""
    run = tmp_path_factory.mktemp("runs") / "run"
    job = prepare(Request(space=str(space_file), overrides=OVERRIDES))
    with pytest.raises(KeyboardInterrupt):
        run_search(job, run, stop_after=1)
    assert not (run / "genotype.json").exists()
    events: list[dict] = []
    result = resume(run, on_event=events.append)
    return run, result, events


# ---- compiler/restrict.py ----


def test_restrict_candidates_rewrites_edges_and_reruns_the_passes(tiny_ir):
    out = restrict_candidates(tiny_ir, {"normal": {"n0<-s0": ["sep_conv_3x3", "skip_connect"]},
                                        "reduce": {"n3<-n2": ["none", "max_pool_3x3", "dil_conv_5x5"]}})
    rows = {r["edge"]: r["ops"] for r in out.alpha_groups["normal"]["rows"]}
    assert rows["n0<-s0"] == ["skip_connect", "sep_conv_3x3"]  # declared order, not the order asked
    assert rows["n0<-s1"] == OPS  # edges not listed keep their candidates
    assert {r["edge"]: r["ops"] for r in out.alpha_groups["reduce"]["rows"]}["n3<-n2"] == \
        ["none", "max_pool_3x3", "dil_conv_5x5"]
    assert lint(out) == []
    assert out.meta["costs"]["total_without_aux"]["params"] < tiny_ir.meta["costs"]["total_without_aux"]["params"]
    assert out.meta["fingerprint"] != tiny_ir.meta["fingerprint"]
    assert len(tiny_ir.alpha_groups["normal"]["rows"][0]["ops"]) == 8  # pure: the input is unchanged
    assert restrict_candidates(tiny_ir, {}).meta["fingerprint"] == tiny_ir.meta["fingerprint"]
    single = restrict_candidates(tiny_ir, {"normal": {"n0<-s0": ["sep_conv_3x3"]}})  # one op: no α row
    assert "n0<-s0" not in [r["edge"] for r in single.alpha_groups["normal"]["rows"]]


@pytest.mark.parametrize("keep, message", [
    ({"normal": {"n0<-s0": ["conv_9x9"]}}, "not a candidate"),
    ({"normal": {"n9<-s0": ["none"]}}, "has no edge"),
    ({"norml": {"n0<-s0": ["none"]}}, "no α group"),
    ({"normal": {"n0<-s0": []}}, "at least one op"),
])
def test_restrict_candidates_rejects_bad_subsets(tiny_ir, keep, message):
    with pytest.raises(NascError, match=message):
        restrict_candidates(tiny_ir, keep)


# ---- pruning, α carry-over, skip dropout ----



ZERO_NODE_SPACE = """space zn(C = 4, classes = 10)
op none = zero(stride)
op skip = identity | on stride 2: factorized_reduce
cell c(x):
    nodes a, b
    edge x -> a: [none]
    edge x -> b: [skip, conv(3, stride)]
    edge a -> b: [skip, none]
    output concat(a, b)
cell r = c with stride 2 on inputs
network:
    input 3 x 8 x 8
    stem conv(3, out = C) > bn
    preprocess conv(1) > bn | on stride 2: conv(1, stride = 2) > bn
    stack 3 x c, reduce r at [1]
    head global_avg_pool > linear(classes)
"""


def test_restrict_candidates_keeps_constant_zero_nodes():
    """A node whose only edge is `none` (dropped by remove_dead_nodes) stays a zero node of the reduced size when
    a stage narrows the space; the rerun passes lost its zero edges and gave it the input's 8x8 in the reduction
    cell, so the next stage failed with 'inputs of node 'b' disagree in shape'."""
    ir = compile_space("zn.nas", text=ZERO_NODE_SPACE)
    out = restrict_candidates(ir, {"c": {"b<-x": ["skip", "conv(3, stride)"]}, "r": {"b<-a": ["none", "skip"]}})
    assert out.meta["zero_nodes"] == ir.meta["zero_nodes"] == {"c": ["a"], "r": ["a"]}
    assert out.meta["shapes"]["cell1"]["states"]["a"] == [4, 4]
    assert out.alpha_groups == ir.alpha_groups and lint(out) == []

def test_prune_keeps_the_strongest_ops_in_declared_order(tiny_net):
    with torch.no_grad():
        a = tiny_net.alphas["normal"]
        a.zero_()
        a[0] = torch.tensor([5.0, 0, 0, 1.0, 4.0, 0, 3.0, 2.0])  # none > sep3 > dil3 > dil5 > skip > ...
        a[1, 2] = 1.0  # avg_pool first, then a tie of seven zeros broken by declared order
    kept = P.prune(tiny_net, 4)
    assert kept["normal"]["n0<-s0"] == ["none", "sep_conv_3x3", "dil_conv_3x3", "dil_conv_5x5"]
    assert kept["normal"]["n0<-s1"] == ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"]
    assert all(len(ops) == 4 for g in kept.values() for ops in g.values())
    assert P.prune(tiny_net, None)["reduce"]["n0<-s0"] == OPS
    merged = P.merge({"normal": {"a": ["x"], "b": ["y"]}}, {"normal": {"b": ["z"]}})
    assert merged == {"normal": {"a": ["x"], "b": ["z"]}}


def test_alpha_carries_over_by_op_name(tiny_ir, tiny_net):
    with torch.no_grad():
        tiny_net.alphas["normal"][0] = torch.arange(8.0)
    table = P.alpha_by_op(tiny_net)
    narrowed = restrict_candidates(tiny_ir, {"normal": {"n0<-s0": ["skip_connect", "dil_conv_5x5"]}})
    net = build_supernet(narrowed, load_relaxation("softmax"))
    P.load_alpha_by_op(net, table)
    assert net.alphas["normal"][0, :2].tolist() == [3.0, 7.0]


def test_skip_dropout_rate_follows_the_official_schedule():
    r, E, start = 0.4, 25, 10
    assert P.skip_dropout_rate(r, 0, E, start) == pytest.approx(r * 24 / 25)  # weight-only: r·(E − e − 1)/E
    assert P.skip_dropout_rate(r, 9, E, start) == pytest.approx(r * 15 / 25)
    assert P.skip_dropout_rate(r, 10, E, start) == pytest.approx(r)  # α trains: r·exp(−0.2·(e − start))
    assert P.skip_dropout_rate(r, 15, E, start) == pytest.approx(r * math.exp(-1.0))
    assert P.skip_dropout_rate(r, 24, E, start) == pytest.approx(r * math.exp(-2.8))
    assert P.skip_dropout_rate(0.0, 3, E, start) == 0.0


def test_skip_dropout_wraps_only_identity_skip_candidates(tiny_ir, tiny_net):
    installed = P.install_skip_dropout(tiny_net)
    # skip_connect is an identity on stride-1 edges only (factorized_reduce on a reduction cell's input edges)
    expected = sum(1 for layer in tiny_ir.layers() if layer.kind == "cell"
                   for e in tiny_ir.cell_edges(layer.cell) if e.stride == 1 and "skip_connect" in e.candidates)
    assert len(installed) == expected > 0
    P.set_skip_dropout(installed, 0.5)
    x = torch.ones(4, 3, 5, 5)
    drop = installed[0]
    drop.train()
    y = drop(x)
    assert set(y.unique().tolist()) <= {0.0, 2.0} and (y == 0).any()  # nn.Dropout: zero or rescaled by 1/(1 − p)
    drop.eval()
    assert torch.equal(drop(x), x)
    tiny_net.train()
    tiny_net(torch.randn(2, 1, 8, 8)).sum().backward()  # the supernet still runs


def test_skip_dropout_runs_in_fused_edge_groups(tiny_net):
    """On a GPU edges are fused by default (fuse_edges); the groups must not keep running the bare identities."""
    tiny_net.set_memory("plain", fuse=True)
    assert any(cell.groups for cell in tiny_net.modules() if hasattr(cell, "groups"))
    installed = P.install_skip_dropout(tiny_net)
    P.set_skip_dropout(installed, 0.5)
    ran = set()
    for m in installed:
        m.register_forward_hook(lambda mod, inp, out: ran.add(id(mod)))
    tiny_net.train()
    tiny_net(torch.randn(2, 1, 8, 8))
    assert len(ran) == len(installed)


def test_skip_dropout_reaches_mergenas_edges(tiny_ir, tiny_net):
    """A MergeNAS edge keeps skip_connect outside its merged convs (`others`); P-DARTS with --relax mergenas
    once installed no skip dropout at all and recorded skip_dropout 0.0 in every epoch."""
    merged = build_supernet(tiny_ir, load_relaxation("merged-kernel"), generator=torch.Generator().manual_seed(0))
    installed = P.install_skip_dropout(merged)
    assert len(installed) == len(P.install_skip_dropout(tiny_net)) > 0
    P.set_skip_dropout(installed, 0.5)
    ran = set()
    for m in installed:
        m.register_forward_hook(lambda mod, inp, out: ran.add(id(mod)))
    merged.train()
    merged(torch.randn(2, 1, 8, 8)).sum().backward()
    assert len(ran) == len(installed)



def test_skip_dropout_drops_the_same_elements_in_channels_last():
    """A search runs channels-last by default; the seeded mask must not depend on the layout."""
    drop = P.SkipDropout(0.5).train()
    x = torch.randn(2, 4, 5, 5)
    torch.manual_seed(0)
    nchw = drop(x)
    torch.manual_seed(0)
    nhwc = drop(x.contiguous(memory_format=torch.channels_last))
    assert nhwc.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(nhwc, nchw)

# ---- the final rule ----


def _prefer_skip(net, group: str, skip: list[float]) -> None:
    with torch.no_grad():
        a = net.alphas[group]
        a.zero_()
        a[:, OPS.index("skip_connect")] = torch.tensor(skip)


def test_final_rule_restricts_skip_connects_in_the_normal_cell(tiny_ir, tiny_net):
    skip = [6.0 + 0.1 * r for r in range(14)]  # skip dominates every edge; weaker on earlier rows
    _prefer_skip(tiny_net, "normal", skip)
    _prefer_skip(tiny_net, "reduce", skip)
    final, before, removed = P.pdarts_genotype(tiny_ir, tiny_net, skip_limit=2)
    assert P.count_skips(before, "normal") == 8
    assert P.count_skips(final, "normal") == 2
    assert P.count_skips(final, "reduce") == 8  # the rule only applies to normal cells
    # the lowest-probability skip goes first: row 0 (n0<-s0) has the smallest skip logit
    assert removed[0]["edge"] == tiny_net.group_rows["normal"][0]
    assert len(removed) >= 6 and len({r["edge"] for r in removed}) == len(removed)
    assert all(e.op != "none" for e in final.cells["normal"].edges)
    assert P.count_skips(P.pdarts_genotype(tiny_ir, tiny_net, skip_limit=0)[0], "normal") == 0
    unlimited, _, none_removed = P.pdarts_genotype(tiny_ir, tiny_net, skip_limit=None)
    assert unlimited == before and none_removed == []


def test_final_rule_stops_when_no_skip_can_go(tiny_ir):
    # every edge offers only none and skip_connect: nothing can replace a skip, so the rule must end
    only = restrict_candidates(tiny_ir, {"normal": {r["edge"]: ["none", "skip_connect"]
                                                    for r in tiny_ir.alpha_groups["normal"]["rows"]}})
    net = build_supernet(only, load_relaxation("softmax"))
    final, _, removed = P.pdarts_genotype(only, net, skip_limit=2)
    assert P.count_skips(final, "normal") == 8 and len(removed) == 14


# ---- settings ----


def test_stage_settings_are_checked(space_file, tmp_path):
    bad = tmp_path / "bad.nas"
    bad.write_text(TINY.replace("keep = 4,", "kept = 4,"))
    with pytest.raises(NasSemanticError, match="no option 'kept'") as info:  # at the `stages` line
        prepare(Request(space=str(bad), overrides=OVERRIDES))
    assert "keep" in (info.value.hint or "")
    assert info.value.span.file == str(bad) and "stages" in bad.read_text().splitlines()[info.value.span.line - 1]
    bad.write_text(TINY.replace("keep = 2", "keep = 1"))
    with pytest.raises(NasSemanticError, match="keep must be an integer ≥ 2"):
        prepare(Request(space=str(bad), overrides=OVERRIDES))
    with pytest.raises(SearchError, match="conflicts with the stages"):
        prepare(Request(space=str(space_file), params={"layers": 8}, overrides=OVERRIDES))
    with pytest.raises(SearchError, match="list of stage"):
        prepare(Request(space=str(space_file), overrides={**OVERRIDES, "stages": "stage(keep = 2)"}))


def test_progressive_settings_without_stages_are_warned_about():
    """`skip_limit` on a one-stage search (e.g. pdarts with `stages = []`, or darts) was dropped silently."""
    job = prepare(Request(space="pdarts", params={"C": 4}, overrides={**OVERRIDES, "stages": []}))
    assert any("skip_limit applies only to a progressive search" in w for w in job.ir.meta["warnings"])
    job = prepare(Request(space="darts", params={"C": 4, "layers": 3}, overrides={**OVERRIDES, "carry_alpha": True}))
    assert any("carry_alpha applies only" in w for w in job.ir.meta["warnings"])


def test_skip_limit_under_another_selector_is_warned_about(space_file):
    """With --select perturbation the skip-connect rule is not run; the search said nothing of it."""
    job = prepare(Request(space=str(space_file), select="perturbation", overrides=OVERRIDES))
    assert any("skip_limit = 2 is not applied: the perturbation selector" in w for w in job.ir.meta["warnings"])
    job = prepare(Request(space=str(space_file), overrides=OVERRIDES))
    assert not any("skip_limit" in w for w in job.ir.meta.get("warnings", []))


def test_prepare_compiles_the_first_stage(space_file):
    job = prepare(Request(space=str(space_file), overrides=OVERRIDES))
    assert job.ir.params["layers"] == 3 and len(job.config.stages) == 3 and job.config.skip_limit == 2
    job1 = prepare(Request(space=str(space_file), overrides=OVERRIDES), stage=1,
                   restrict={"normal": {"n0<-s0": ["skip_connect", "sep_conv_3x3"]}})
    assert job1.ir.params["layers"] == 5 and job1.net.group_ops["normal"][0] == ["skip_connect", "sep_conv_3x3"]


def test_stage_plan_shows_every_stage_and_bounds_its_supernet(space_file):
    """`nasc search pdarts --dry-run` showed stage 0's network only: a later stage's depth, ops per edge and
    size (the deepest stage decides whether the search fits in memory) were not to be seen before running."""
    from nasc.cli import app

    job = prepare(Request(space=str(space_file), overrides=OVERRIDES))
    plan = P.stage_plan(job)
    weights = sum(p.numel() for p in job.net.weight_parameters())
    assert [(r["params"]["layers"], r["ops_per_edge"], r["skip_dropout"]) for r in plan] == \
        [(3, 8, 0.2), (5, 4, 0.4), (5, 2, 0.0)]
    assert plan[0]["supernet_weights"] == [weights, weights]
    lo, hi = plan[1]["supernet_weights"]
    for kept, bound in ((["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"], lo),
                        (["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"], hi)):
        restrict = {g: {row["edge"]: kept for row in info["rows"]} for g, info in job.ir.alpha_groups.items()}
        staged = prepare(Request(space=str(space_file), overrides=OVERRIDES), stage=1, restrict=restrict)
        assert sum(p.numel() for p in staged.net.weight_parameters()) == bound
    result = CliRunner().invoke(app, ["search", str(space_file), "--device", "cpu", "--dry-run"])
    out = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert f"stage 1 C = 4, layers = 5, classes = 10; 4 ops per edge; 1 epochs (α from epoch 0); " \
           f"skip dropout 0.4; {lo:,} to {hi:,} weights" in out and "stage 2 C = 4, layers = 5" in out


# ---- one run across stages ----


def test_stages_prune_to_the_declared_sizes(resumed_run):
    run, _, _ = resumed_run
    records = _records(run)
    stages = [r for r in records if r["type"] == "stage"]
    assert [s["stage"] for s in stages] == [0, 1, 2]  # once each, also across the resume
    assert [s["params"] for s in stages] == [{"layers": 3}, {"layers": 5}, {"layers": 5}]
    for s, keep in zip(stages, KEEP):
        assert {len(ops) for edges in s["candidates"].values() for ops in edges.values()} == {keep}
        assert set(s["candidates"]) == {"normal", "reduce"} and len(s["candidates"]["normal"]) == 14
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [e["stage"] for e in epochs] == [0, 1, 2]
    for prev, cur, alpha in zip(stages, stages[1:], [e["alpha"] for e in epochs]):
        for group, edges in cur["candidates"].items():
            for edge, kept in edges.items():
                earlier = prev["candidates"][group][edge]
                dropped = set(earlier) - set(kept)
                assert set(kept) <= set(earlier)
                probs = alpha[group][edge]
                # the strongest of the previous stage's α (the metrics round to 6 digits)
                assert min(probs[o] for o in kept) >= max(probs[o] for o in dropped) - 1e-6
    assert all("stage" in r for r in records if r["type"] == "step")


def test_run_writes_the_genotype_and_metrics(resumed_run):
    run, result, events = resumed_run
    assert {"config.json", "space.ir.json", "metrics.jsonl", "timing.jsonl", "checkpoint.pt",
            "genotype.json"} <= {p.name for p in run.iterdir()}
    genotype = G.load(run / "genotype.json")
    assert genotype == result.genotype
    config = json.loads((run / "config.json").read_text())
    assert genotype.fingerprint == config["fingerprint"] and genotype.space == "tiny_pdarts"
    assert P.count_skips(genotype, "normal") <= 2
    assert all(e.op != "none" for c in genotype.cells.values() for e in c.edges)
    records = _records(run)
    derive = [r for r in records if r["type"] == "derive"]
    assert len(derive) == 1 and derive[0]["genotype"] == G.canonical_str(genotype) and derive[0]["skip_limit"] == 2
    # the skip dropout in each stage's single epoch: r·exp(0) once α trains from epoch 0; stage 2 has none
    assert [e["skip_dropout"] for e in records if e["type"] == "epoch"] == [0.2, 0.4, 0.0]
    assert [e["stage"] for e in events if e["type"] == "start"] == [1, 2]  # resumed at the stage-1 boundary
    [resumed] = [json.loads(line) for line in (run / "resumes.jsonl").read_text().splitlines()]
    assert (resumed["stage"], resumed["epoch"]) == (1, 0) and resumed["threads"] == torch.get_num_threads()
    assert result.final["stage"] == 2
    with pytest.raises(SearchError, match="already finished"):
        resume(run)


def test_reselect_refuses_a_progressive_run_clearly(resumed_run):
    """`nasc select` on a P-DARTS run once failed with 'Error(s) in loading state_dict for Network:'."""
    from nasc.runtime.search import reselect

    run, _, _ = resumed_run
    with pytest.raises(SearchError, match="cannot re-select a progressive"):
        reselect(run, "magnitude")


@pytest.mark.slow
def test_resumed_run_equals_an_uninterrupted_one(resumed_run, space_file, tmp_path):
    run, _, _ = resumed_run
    job = prepare(Request(space=str(space_file), overrides=OVERRIDES))
    straight = run_search(job, tmp_path / "straight")
    assert (tmp_path / "straight" / "metrics.jsonl").read_bytes() == (run / "metrics.jsonl").read_bytes()
    assert straight.genotype == G.load(run / "genotype.json")


@pytest.mark.slow
def test_cli_search_on_pdarts(tmp_path, monkeypatch):
    from nasc.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["search", "pdarts", "--set", "C=4", "--epochs", "1", "--batch", "32",
                                      "--opt", "train_portion=0.1", "--opt", "arch_start=0", "--device", "cpu",
                                      "--run-dir", "run"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    genotype = G.load(run / "genotype.json")
    assert genotype.space == "pdarts" and P.count_skips(genotype, "normal") <= 2
    records = _records(run)
    stages = [r for r in records if r["type"] == "stage"]
    assert [(s["params"]["layers"], s["keep"], s["skip_dropout"]) for s in stages] == \
        [(5, 8, 0.1), (11, 5, 0.4), (17, 3, 0.7)]
    assert [{len(o) for e in s["candidates"].values() for o in e.values()} for s in stages] == [{8}, {5}, {3}]
    assert [r["stage"] for r in records if r["type"] == "epoch"] == [0, 1, 2]
    assert "genotype" in result.output
