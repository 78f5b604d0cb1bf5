"""torch.compile'd cells (runtime/compiled.py): used only after they match eager, and never change the maths.

Inductor's code generation takes minutes per cell on a CPU, so these tests run
the same machinery with dynamo's `aot_eager` backend (the graphs dynamo and
AOTAutograd produce, run without code generation), and with backends that
fail or compute something wrong, to check that such cells fall back to eager
and say why.
"""

import json

import pytest
import torch

import nasc.runtime.compiled as compiled
from nasc.compiler.pipeline import compile_space
from nasc.runtime.config import make_config
from nasc.runtime.supernet import Cell

SMALL = {"C": 4, "layers": 3}
SHAPE = (3, 8, 8)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/runtime/conftest.py
EXACT = {"grad_atol": 1e-6, "buffer_rtol": 1e-4}  # aot_eager (tests' backend) runs the eager kernels


@pytest.fixture(autouse=True)
def _fresh_dynamo(monkeypatch):
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# DARTS' eight ops on two nodes (5 edges per cell, not 14): dynamo traces a third of the DARTS cell, and
# the machinery under test (compile, check against float64, fall back) does not depend on the cell's size.
TWO_NODES = """space darts_two_nodes extends "darts.nas"
cell normal(s0, s1):
    nodes n0..n1 = sum
    edges dense: darts_ops
    output concat(n0..n1)
"""


def _ir():
    return compile_space("darts_two_nodes.nas", text=TWO_NODES, params=SMALL, input_shape=SHAPE)


def _cells(net):
    return [m for m in net.modules() if isinstance(m, Cell)]


def _compile(net, batch=8, backend=None):
    example = torch.randn(batch, *SHAPE, generator=torch.Generator().manual_seed(3))
    return compiled.compile_cells(net, example, autocast=_no_autocast, backend=backend)


def _no_autocast():
    return torch.autocast("cpu", enabled=False)


class _Counting:
    """Wraps a cell's compiled forward to count the calls that reach it."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        return self.fn(*args)


@pytest.mark.parametrize("fuse", [False, True], ids=["edge-by-edge", "fused"])
def test_compiled_cells_train_exactly_as_eager_and_run_only_where_checked(fuse, supernet, train_steps,
                                                                         assert_same_training):
    eager = supernet(_ir(), fuse=fuse)
    net = supernet(_ir(), fuse=fuse)
    report = _compile(net, batch=8)
    assert report == {"cell0": "compiled", "cell1": "compiled", "cell2": "compiled"}
    counters = []
    for cell in _cells(net):
        cell.compiled = _Counting(cell.compiled)
        counters.append(cell.compiled)
    assert_same_training(*(train_steps(n, SHAPE, steps=3, batch=8) for n in (eager, net)), **EXACT)
    assert all(c.calls == 3 for c in counters)  # every step ran the compiled cells
    net(torch.randn(5, *SHAPE))  # another batch size: never compiled, never checked
    with torch.no_grad():
        net(torch.randn(8, *SHAPE))
    net.eval()
    net(torch.randn(8, *SHAPE))
    assert all(c.calls == 3 for c in counters)


def test_more_cells_than_dynamos_recompile_limit_run_compiled_and_the_limit_is_put_back(supernet):
    """The cells share Cell.forward's code object, hence its dynamo cache: one entry per cell must fit."""
    made, runs = [], []

    def counting(gm, example_inputs):
        made.append(gm)

        def run(*args):
            runs.append(gm)
            return gm(*args)
        return run

    # dynamo's own patch, not monkeypatch: under pytest 9.2 monkeypatch's undo left the entry hidden
    with torch._dynamo.config.patch(recompile_limit=1):
        net = supernet(_ir(), fuse=True)
        assert _compile(net, backend=counting) == {"cell0": "compiled", "cell1": "compiled", "cell2": "compiled"}
        assert torch._dynamo.config.recompile_limit == 1
        graphs, checked = len(made), len(runs)
        assert graphs >= 3
        net(torch.randn(8, *SHAPE)).sum().backward()
        assert len(made) == graphs  # nothing compiled again, nothing unchecked
        assert len(runs) == 2 * checked  # every graph the check ran, once more


def test_checking_leaves_the_network_as_it_was_and_a_new_lowering_drops_compiled_cells(supernet):
    net = supernet(_ir(), fuse=True)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    _compile(net)
    after = net.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k
    assert all(cell.compiled is not None for cell in _cells(net))
    net.set_memory("plain", share=True, fuse=False)
    assert all(cell.compiled is None for cell in _cells(net))


def test_a_backend_that_computes_something_else_leaves_the_cells_eager_and_says_how_far_off(
        supernet, train_steps, assert_same_training):
    def off_by_one_percent(gm, example_inputs):
        def run(*args):
            out = gm(*args)
            return [o * 1.01 for o in out] if isinstance(out, (list, tuple)) else out * 1.01
        return run

    net = supernet(_ir())
    report = _compile(net, backend=off_by_one_percent)
    assert all(v.startswith("eager: the compiled cell is further from the float64 answer than eager")
               for v in report.values())
    assert "off by 1.00% of its largest value, eager by 0.00%" in report["cell0"]
    assert all(cell.compiled is None for cell in _cells(net))
    eager = supernet(_ir())
    assert_same_training(*(train_steps(n, SHAPE, steps=3, batch=8) for n in (eager, net)), **EXACT)


def test_a_backend_that_fails_leaves_the_cells_eager_and_says_why(supernet):
    def broken(gm, example_inputs):
        raise RuntimeError("no C++ compiler found")

    net = supernet(_ir())
    report = _compile(net, backend=broken)
    assert all(v.startswith("eager: compilation failed") and "no C++ compiler found" in v for v in report.values())
    assert all(cell.compiled is None for cell in _cells(net))
    net(torch.randn(8, *SHAPE)).sum().backward()  # still trains, eagerly


def test_a_cell_that_cannot_be_checked_stays_eager(monkeypatch, supernet):
    def no_float64(*args):
        raise TypeError("this plugin op has no float64 kernel")

    monkeypatch.setattr(compiled, "_float64_answer", no_float64)
    net = supernet(_ir())
    report = _compile(net)
    assert all(v == "eager: cannot be checked (TypeError: this plugin op has no float64 kernel)"
               for v in report.values())
    assert all(cell.compiled is None for cell in _cells(net))


def test_the_compiled_cell_is_judged_by_its_distance_from_float64_not_from_eager():
    exact = {"output": torch.tensor([1.0, -2.0], dtype=torch.float64), "gradient of w": None,
             "BN statistic m": torch.tensor([1e-9, -2e-9], dtype=torch.float64)}
    eager = {"output": torch.tensor([1.0, -2.0]), "gradient of w": None, "BN statistic m": torch.tensor([3e-9, 0.0])}
    near = {"output": torch.tensor([1.0, -2.0001]), "gradient of w": None,  # within 1e-4 of the largest value
            "BN statistic m": torch.tensor([-4e-9, 0.0])}  # 250% off eager, but zero up to rounding as eager is
    assert compiled._compare(exact, eager, near, 1e-4) == ""
    far = {**near, "output": torch.tensor([1.0, -2.01])}
    assert "output off by 0.50% of its largest value, eager by 0.00%" in compiled._compare(exact, eager, far, 1e-4)
    nan = {**near, "output": torch.tensor([1.0, float("nan")])}
    assert "output off by nan%" in compiled._compare(exact, eager, nan, 1e-4)
    extra = {**near, "gradient of w": torch.ones(1)}
    assert "computed by one and not the other" in compiled._compare(exact, eager, extra, 1e-4)


@pytest.mark.parametrize("overrides, relax, mode, expected", [
    ({}, "softmax", "plain", "auto: off"),
    ({"torch_compile": False}, "softmax", "plain", "turned off"),
    ({"torch_compile": True}, "gdas", "plain", "changes the network from step to step"),
    ({"torch_compile": True}, "softmax", "recompute", "recompute mode"),
    ({"torch_compile": True, "drop_path": 0.2}, "softmax", "plain", "drop path"),
    ({"torch_compile": True}, "softmax", "plain", None),
])
def test_compile_blocker(overrides, relax, mode, expected, supernet):
    net = supernet(_ir(), relax=relax, mode=mode)
    blocker = compiled.compile_blocker(net, net.relax, make_config({}, overrides))
    assert blocker is None if expected is None else expected in blocker


def test_torch_compile_must_be_a_boolean_and_the_cli_says_so():
    from typer.testing import CliRunner

    from nasc.cli import app

    result = CliRunner().invoke(app, ["search", "--opt", "torch_compile=yes", "--dry-run"])
    assert result.exit_code != 0 and "torch_compile must be true or false" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_a_search_asked_to_compile_records_each_cell_in_config_json(tmp_path):
    from nasc.runtime.search import Request, prepare, run_search

    space = tmp_path / "darts_two_nodes.nas"
    space.write_text(TWO_NODES)
    job = prepare(Request(space=str(space), params=SMALL, overrides={
        "epochs": 1, "batch": 32, "train_portion": 0.2, "torch_compile": True, "memory": "plain"}))
    assert job.ir.meta["torch_compile"]["used"] is True
    run_search(job, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "config.json").read_text())["torch_compile"]
    assert record["used"] is True and record["cells"] == {f"cell{i}": "compiled" for i in range(3)}
    assert record["reason"].startswith("3 of 3 cells compiled and checked against float64")
    assert (tmp_path / "run" / "genotype.json").exists()


def test_dry_run_says_whether_cells_are_compiled():
    from typer.testing import CliRunner

    from nasc.cli import app

    result = CliRunner().invoke(app, ["search", "--dry-run", "--opt", "memory=recompute",
                                      "--opt", "torch_compile=true"])
    assert result.exit_code == 0, result.output
    assert "torch.compile" in result.output and "recompute mode" in result.output


def test_a_progressive_stage_with_skip_dropout_is_not_compiled(tmp_path):
    """P-DARTS installs its skip dropout after `prepare`: its cells were compiled with p = 0, and dynamo
    recompiled them, unchecked, once the epoch's p was set. A stage without skip dropout still compiles."""
    from nasc.runtime.search import Request, prepare

    space = tmp_path / "staged.nas"
    space.write_text('space staged(C = 4, layers = 3) extends "darts.nas"\nsearch:\n'
                     '    stages = [stage(layers = 3, skip_dropout = 0.2), stage(layers = 3, keep = 4)]\n')
    request = Request(space=str(space), overrides={"device": "cpu", "torch_compile": True, "memory": "plain"})
    first = prepare(request).ir.meta["torch_compile"]
    assert first["used"] is False and "skip_dropout" in first["reason"]
    assert any("torch_compile = true is not used" in w for w in prepare(request).ir.meta["warnings"])
    assert prepare(request, stage=1).ir.meta["torch_compile"]["used"] is True


@pytest.mark.slow
def test_a_progressive_search_asked_to_compile_records_each_cell_in_config_json(tmp_path):
    """config.json of a progressive search was written before its first stage's cells were compiled and
    checked: it said "each cell compiled" with no per-cell record, whatever the check found."""
    from nasc.runtime.search import Request, prepare, run_search

    space = tmp_path / "staged.nas"
    space.write_text(TWO_NODES.replace("darts_two_nodes", "staged") + "search:\n    stages = [stage(layers = 3)]\n")
    job = prepare(Request(space=str(space), params={"C": 4}, overrides={
        "device": "cpu", "epochs": 1, "batch": 32, "train_portion": 0.1, "torch_compile": True, "memory": "plain"}))
    run_search(job, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "config.json").read_text())["torch_compile"]
    assert record["cells"] == {f"cell{i}": "compiled" for i in range(3)}
    assert record["reason"].startswith("3 of 3 cells compiled and checked against float64")
