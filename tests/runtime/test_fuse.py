"""Fused edge groups (runtime/fuse.py) change how the supernet runs, never what it computes.

Each test runs the same seeded steps on a network whose edges run one by one
and on one whose edges of a source state run together, and compares losses,
gradients, running statistics and checkpoints.
"""

import contextlib
import copy
import io

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nasc.compiler.pipeline import compile_space
from nasc.runtime.fuse import EdgeGroup
from nasc.runtime.supernet import Cell

SMALL = {"C": 4, "layers": 3}
SHAPE = (1, 8, 8)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/runtime/conftest.py


def _groups(net):
    return [g for m in net.modules() if isinstance(m, Cell) for g in m.groups]


def test_the_darts_cell_fuses_each_shared_state_into_one_group(supernet):
    ir = compile_space("spaces/darts.nas", params=SMALL, input_shape=SHAPE)
    net = supernet(ir, fuse=True)
    cell = net.layers[next(lid for lid, kind, _, _ in net.schedule if kind == "cell")]
    # s0 and s1 feed 4 edges each, n0 feeds 3, n1 feeds 2; n2's single edge runs on its own
    assert sorted(g.k for g in cell.groups) == [2, 3, 4, 4]
    assert len(cell.group_of) == 13
    kinds = [kind for kind, _ in cell.groups[0].programs]
    assert kinds == ["zero"] + ["batched"] * 7  # none never runs; pools, skip and convs are batched
    assert _groups(supernet(ir, fuse=False)) == []


@pytest.mark.parametrize("mode", ["plain", "recompute"])
def test_fused_training_steps_equal_edge_by_edge_ones(mode, supernet, train_steps, assert_same_training):
    ir = compile_space("spaces/darts.nas", params=SMALL, input_shape=SHAPE)
    assert_same_training(train_steps(supernet(ir, fuse=False, mode=mode), SHAPE),
                         train_steps(supernet(ir, fuse=True, mode=mode), SHAPE))


def test_reduction_edges_with_factorized_reduce_run_each_edge_inside_the_group(supernet, train_steps,
                                                                              assert_same_training):
    ir = compile_space("spaces/darts.nas", params=SMALL, input_shape=SHAPE)
    net = supernet(ir, fuse=True)
    each = [g for g in _groups(net) if any(kind == "each" for kind, _ in g.programs)]
    assert each, "the stride-2 skip (factorized_reduce) should be called edge by edge"
    assert_same_training(train_steps(supernet(ir, fuse=False), SHAPE), train_steps(net, SHAPE))


def test_evaluation_uses_each_edges_own_running_statistics(supernet, train_steps):
    ir = compile_space("spaces/darts.nas", params=SMALL, input_shape=SHAPE)
    nets = [supernet(ir, fuse=f) for f in (False, True)]
    for net in nets:
        train_steps(net, SHAPE)
        net.eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(nets[1](x), nets[0](x), rtol=1e-5, atol=1e-6)


def test_checkpoints_are_interchangeable_with_the_unfused_network(supernet, train_steps, assert_same_training):
    ir = compile_space("spaces/darts.nas", params=SMALL, input_shape=SHAPE)
    fused = supernet(ir, fuse=True)
    train_steps(fused, SHAPE)
    plain = supernet(ir, fuse=False)
    assert fused.state_dict().keys() == plain.state_dict().keys()
    buf = io.BytesIO()
    torch.save(fused.state_dict(), buf)
    buf.seek(0)
    plain.load_state_dict(torch.load(buf))
    again = supernet(ir, fuse=True)
    again.load_state_dict(plain.state_dict())  # loading writes through the linked statistics
    assert_same_training(train_steps(plain, SHAPE), train_steps(again, SHAPE))


def test_moving_the_network_relinks_the_batched_statistics(supernet, train_steps, assert_same_training):
    """`.to()` replaces every buffer by a copy; the next pass must update the new ones, not stale copies."""
    ir = compile_space("spaces/darts.nas", params=SMALL, input_shape=SHAPE)
    plain, fused = supernet(ir, fuse=False), supernet(ir, fuse=True)
    train_steps(plain, SHAPE), train_steps(fused, SHAPE)
    for net in (plain, fused):
        net._apply(lambda t: t.clone())  # what a device move does to each tensor
    assert_same_training(train_steps(plain, SHAPE), train_steps(fused, SHAPE))
    assert_same_training(train_steps(copy.deepcopy(plain), SHAPE),
                         train_steps(copy.deepcopy(fused), SHAPE))


@pytest.mark.parametrize("relax", ["gdas", "snas", "partial-channel", "merged-kernel"])
def test_other_relaxations_are_unchanged_by_fusion(relax, supernet, train_steps, assert_same_training):
    """Sampled edges (GDAS) fall back to edge by edge per pass; subclassed edges are never grouped."""
    space = "spaces/pcdarts.nas" if relax == "partial-channel" else "spaces/darts.nas"
    params = {"C": 8, "layers": 3} if relax == "partial-channel" else SMALL
    ir = compile_space(space, params=params, input_shape=SHAPE)
    a, b = supernet(ir, fuse=False, relax=relax), supernet(ir, fuse=True, relax=relax)
    if relax in ("gdas", "snas"):
        assert _groups(b)
    assert_same_training(train_steps(a, SHAPE), train_steps(b, SHAPE))


OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
       "dil_conv_3x3", "dil_conv_5x5", "conv_3x3", "conv_1x1"]


# The property compares in float64. In float32 two exact programs that sum in different orders can put a
# BN output on opposite sides of 0 when it lies within rounding of it, and the ReLU after it then passes or
# blocks that element's gradient: on these tiny networks (batch 4, 4×4 maps) one such element once moved a
# conv weight's gradient by 6% (max and avg pooling, sep and dil convs, none; 3 nodes). In float64 both
# lowerings agreed to 1e-15, and fused float32 was the closer of the two to float64.
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.sampled_from(OPS), min_size=2, max_size=5, unique=True),
       nodes=st.integers(2, 3), affine=st.booleans(), recompute=st.booleans())
def test_any_candidate_set_gives_the_same_steps_fused_or_not(ops, nodes, affine, recompute, supernet, train_steps,
                                                             assert_same_training):
    """Property: whatever the candidates (dense convs, affine BNs, pools, zero), fusion is exact."""
    with _float64():
        _same_steps_fused_or_not(ops, nodes, affine, recompute, supernet, train_steps, _assert_same_in_float64)


def test_the_draw_that_flipped_a_relu_in_float32_is_exact_in_float64(supernet, train_steps):
    with _float64():
        _same_steps_fused_or_not(["max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "none", "dil_conv_3x3"], 3,
                                 False, False, supernet, train_steps, _assert_same_in_float64)


@contextlib.contextmanager
def _float64():
    """Networks built and data drawn in float64 (the default dtype), restored afterwards."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _assert_same_in_float64(a, b):
    """Losses, gradients and buffers equal to 1e-9: far tighter than float32 could hold, far looser than 1e-15."""
    assert all(g.dtype == torch.float64 for g in a[1].values())
    assert a[0] == pytest.approx(b[0], rel=1e-9, abs=1e-12)
    assert a[1].keys() == b[1].keys() and a[2].keys() == b[2].keys()
    for name, g in a[1].items():
        torch.testing.assert_close(b[1][name], g, rtol=1e-9, atol=1e-12, msg=name)
    for name, s in a[2].items():
        torch.testing.assert_close(b[2][name], s, rtol=1e-9, atol=1e-12, msg=name)


def _same_steps_fused_or_not(ops, nodes, affine, recompute, supernet, train_steps, assert_same_training):
    text = f"""
space prop(C = 4, layers = 3)
op sep_conv_{{k}}x{{k}} = relu > dw_conv(k, stride) > conv(1) > bn > relu > dw_conv(k) > conv(1) > bn
op dil_conv_{{k}}x{{k}} = relu > dw_conv(k, stride, dilation = 2) > conv(1) > bn
op conv_{{k}}x{{k}}     = relu > conv(k, stride) > bn
op skip_connect     = identity | on stride 2: factorized_reduce
op max_pool_3x3     = max_pool(3, stride) > bn if searching
op avg_pool_3x3     = avg_pool(3, stride) > bn if searching
op none             = zero(stride)
cell normal(s0, s1):
    nodes n0..n{nodes - 1} = sum
    edges dense: [{", ".join(ops)}]
    output concat(n0..n{nodes - 1})
cell reduce = normal with stride 2 on inputs
network:
    input 1 x 8 x 8
    stem conv(3, out = 3 * C) > bn
    preprocess relu > conv(1) > bn | on stride 2: factorized_reduce
    stack layers x normal, reduce at [1], widen 2 at reduce
    head global_avg_pool > linear(10)
alpha shared per cell
relax softmax
search:
    affine = {"true" if affine else "false"}
"""
    ir = compile_space("prop.nas", text=text, input_shape=SHAPE)
    mode = "recompute" if recompute else "plain"
    a, b = supernet(ir, fuse=False, mode=mode), supernet(ir, fuse=True, mode=mode)
    assert _groups(b)
    assert_same_training(train_steps(a, SHAPE), train_steps(b, SHAPE))


def test_a_group_of_one_edge_computes_that_edge(supernet):
    ir = compile_space("spaces/darts.nas", params=SMALL, input_shape=SHAPE)
    net = supernet(ir, fuse=False)
    cell = net.layers[next(lid for lid, kind, _, _ in net.schedule if kind == "cell")]
    key, edge = next((k, e) for k, e in cell.edges.items())
    x, w = torch.randn(2, 4, 8, 8), torch.softmax(torch.randn(1, 8), -1)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(EdgeGroup([edge], [0])(x, w)[:, 0], edge(x, w[0]), rtol=1e-6, atol=1e-6)


def test_fuse_edges_must_be_a_boolean_and_the_cli_says_so():
    from typer.testing import CliRunner

    from nasc.cli import app

    result = CliRunner().invoke(app, ["search", "--opt", "fuse_edges=sometimes", "--dry-run"])
    assert result.exit_code != 0 and "fuse_edges must be true or false" in result.output
    assert "Traceback" not in result.output


def test_auto_fuses_on_a_gpu_and_not_on_a_cpu_and_says_why():
    from nasc.runtime.config import make_config
    from nasc.runtime.search import choose_fusion

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert choose_fusion(make_config({}, {}), cuda)[0] is True
    used, reason = choose_fusion(make_config({}, {}), cpu)
    assert used is False and "CPU" in reason
    assert choose_fusion(make_config({}, {"fuse_edges": True}), cpu) == (True, "asked for (true)")
    assert choose_fusion(make_config({}, {"fuse_edges": True, "share_work": False}), cuda)[0] is False


def test_a_search_asked_to_fuse_runs_fused_and_records_it(tmp_path):
    import json

    from nasc.runtime.search import Request, prepare, run_search

    job = prepare(Request(space="darts", params=SMALL,
                          overrides={"epochs": 1, "batch": 32, "train_portion": 0.2, "fuse_edges": True}))
    assert _groups(job.net)
    run_search(job, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["fuse_edges"] == {"used": True, "reason": "asked for (true)"}


def test_a_second_order_step_restores_the_fused_statistics_from_the_first_step(supernet, assert_same_training):
    """The unrolled step puts back the BN statistics its forward at w' moved. Fused groups link their BNs'
    buffers to one tensor during their first pass, so the buffers to restore are read after that pass."""
    from nasc.runtime.config import make_config
    from nasc.runtime.step import SearchStep

    ir = compile_space("spaces/darts.nas", params=SMALL, input_shape=SHAPE)
    cfg = make_config({}, {"order": 2, "batch": 4, "cuda_graphs": False})
    results = []
    for fuse in (False, True):
        net = supernet(ir, fuse=fuse)
        w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9)
        a_opt = torch.optim.Adam(net.arch_parameters(), lr=3e-4)
        step = SearchStep(net, net.relax, cfg, w_opt, a_opt, device=torch.device("cpu"))
        torch.manual_seed(1)
        x, xv = torch.randn(4, *SHAPE), torch.randn(4, *SHAPE)
        y, yv = torch.randint(0, 10, (4,)), torch.randint(0, 10, (4,))
        out = step(x, y, xv, yv, lr=0.1, arch_step=True)
        grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
        results.append(([float(out.loss), float(out.arch_loss)], grads, {n: b.clone() for n, b in net.named_buffers()}))
    assert_same_training(*results)
