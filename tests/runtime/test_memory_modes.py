"""The optimised lowerings change memory and speed, never the maths.

For every relaxation, one training step of the supernet under `plain` (no
shared work), `recompute`, shared work and fused edge groups (alone and with
`recompute`), in NCHW and in channels-last tensors, gives the same loss, weight
gradients, α gradients and BN running statistics, from the same seed.
"""

import importlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nasc.catalog import BUILTIN_RELAXATIONS
from nasc.compiler.pipeline import compile_space
from nasc.runtime.relaxations.base import load_relaxation
from nasc.runtime.search import choose_memory
from nasc.runtime.supernet import build_supernet


def _available():
    names = []
    for name, module in BUILTIN_RELAXATIONS.items():
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        names.append(name)
    return names


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/runtime/conftest.py


def _step(ir, relax_name, phase, mode, share, fuse=False, channels_last=False, drop_path=0.0):
    torch.manual_seed(0)
    relax = load_relaxation(relax_name)
    net = build_supernet(ir, relax, generator=torch.Generator().manual_seed(0))
    relax.setup(ir, net)
    net.set_memory(mode, share=share, fuse=fuse)
    net.drop_path_prob = drop_path
    relax.set_phase(phase)
    torch.manual_seed(1)
    x = torch.randn(4, 1, 8, 8)
    if channels_last:  # as a search does by default: the network and its inputs in NHWC
        net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (4,))
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    grads = {n: (p.grad.clone() if p.grad is not None else None) for n, p in net.named_parameters()}
    stats = {n: b.clone() for n, b in net.named_buffers() if "running" in n}
    return float(loss.detach()), grads, stats


@pytest.mark.parametrize("relax_name", ["softmax", "gumbel"])
def test_search_drop_path_is_applied_and_the_same_in_every_lowering(relax_name):
    """Drop path on mixed edges (RobustDARTS) samples its masks outside the recomputed and fused parts,
    so every lowering drops the same samples of the same edges."""
    ir = compile_space("spaces/darts.nas", params={"C": 4, "layers": 3}, input_shape=(1, 8, 8))
    plain = _step(ir, relax_name, "weights", "plain", False, drop_path=0.4)
    assert plain[0] != pytest.approx(_step(ir, relax_name, "weights", "plain", False)[0], rel=1e-3)
    for mode, fuse in (("recompute", False), ("plain", True), ("recompute", True)):
        other = _step(ir, relax_name, "weights", mode, True, fuse, drop_path=0.4)
        assert other[0] == pytest.approx(plain[0], rel=1e-6, abs=1e-6), (mode, fuse)
        for name, g in plain[1].items():
            if g is not None:
                torch.testing.assert_close(other[1][name], g, rtol=1e-5, atol=1e-6, msg=f"{name} {mode} {fuse}")


@pytest.mark.parametrize("relax_name", _available())
@pytest.mark.parametrize("phase", ["weights", "arch"])
def test_recompute_and_shared_work_are_exact(relax_name, phase):
    space = "spaces/pcdarts.nas" if relax_name == "partial-channel" else "spaces/darts.nas"
    ir = compile_space(space, params={"C": 8 if relax_name == "partial-channel" else 4, "layers": 3},
                       input_shape=(1, 8, 8))
    plain = _step(ir, relax_name, phase, "plain", False)
    for mode, share, fuse, nhwc in (("recompute", True, False, False), ("plain", True, False, False),
                                    ("plain", True, True, False), ("recompute", True, True, False),
                                    ("plain", True, False, True), ("recompute", True, False, True),
                                    ("plain", True, True, True)):
        other = _step(ir, relax_name, phase, mode, share, fuse, nhwc)
        what = f"({mode}, share={share}, fuse={fuse}, channels_last={nhwc})"
        assert other[0] == pytest.approx(plain[0], rel=1e-6, abs=1e-6), what
        for name, g in plain[1].items():
            h = other[1][name]
            assert (g is None) == (h is None), name
            if g is None:
                continue
            if nhwc:  # other kernels, other summation order: rounding-level, relative to the tensor's scale
                torch.testing.assert_close(h, g, rtol=1e-4, atol=1e-5 * float(g.abs().max()), msg=f"{name} {what}")
            else:
                torch.testing.assert_close(h, g, rtol=1e-5, atol=1e-6, msg=f"{name} {what}")
        for name, s in plain[2].items():
            torch.testing.assert_close(other[2][name], s, rtol=1e-5, atol=1e-6, msg=f"{name} {what}")


def _same_in_both_layouts(ir):
    """One seeded step in NCHW and in channels-last: same loss, same gradients (rounding-level)."""
    nchw = _step(ir, "softmax", "weights", "plain", True)
    nhwc = _step(ir, "softmax", "weights", "plain", True, channels_last=True)
    assert nhwc[0] == pytest.approx(nchw[0], rel=1e-6, abs=1e-6)
    for name, g in nchw[1].items():
        torch.testing.assert_close(nhwc[1][name], g, rtol=1e-4, atol=1e-5 * float(g.abs().max()), msg=name)


def test_noise_candidates_draw_the_same_noise_in_channels_last():
    """RobustDARTS S4's noise op draws from the global RNG: the layout must not decide which element gets which draw."""
    ir = compile_space("spaces/darts_s4.nas", params={"C": 4, "layers": 3}, input_shape=(1, 8, 8))
    _same_in_both_layouts(ir)


def test_dropout_candidates_drop_the_same_elements_in_channels_last():
    """A user op with dropout on a feature map: the seeded mask must not depend on the layout either."""
    text = Path("spaces/darts.nas").read_text().replace(
        "op none             = zero(stride)", "op none             = zero(stride)\n"
        "op drop_conv_3x3 = relu > conv(3, stride) > bn > dropout(p = 0.3)").replace(
        "ops darts_ops = [none,", "ops darts_ops = [none, drop_conv_3x3,")
    ir = compile_space("drop.nas", text=text, params={"C": 4, "layers": 3}, input_shape=(1, 8, 8))
    _same_in_both_layouts(ir)


def test_recompute_keeps_far_less_for_backward():
    ir = compile_space("spaces/darts.nas", params={"C": 8, "layers": 5}, input_shape=(3, 16, 16))

    def saved_bytes(mode, fuse=False):
        net = build_supernet(ir, load_relaxation("darts"))
        net.set_memory(mode, fuse=fuse)
        storages = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            net(torch.randn(8, 3, 16, 16)).sum()
        return sum(storages.values())

    plain = saved_bytes("plain")
    assert saved_bytes("recompute") * 4 <= plain
    assert saved_bytes("recompute", fuse=True) * 4 <= plain  # fused groups keep only the shared input too
    assert saved_bytes("plain", fuse=True) < plain  # shared ReLU, pooling and BN outputs are stored once


def test_auto_picks_plain_when_it_fits_and_recompute_when_not(monkeypatch):
    ir = compile_space("spaces/darts.nas", params={"C": 8, "layers": 5}, input_shape=(3, 16, 16))
    cpu = torch.device("cpu")
    need = ir.meta["costs"]["total_without_aux"]["act"] * 64
    monkeypatch.setattr("nasc.runtime.search.available_memory", lambda device: need * 10)
    assert choose_memory("auto", ir, 64, cpu)[0] == "plain"
    monkeypatch.setattr("nasc.runtime.search.available_memory", lambda device: need)
    mode, reason = choose_memory("auto", ir, 64, cpu)
    assert mode == "recompute" and "GiB" in reason
    assert choose_memory("plain", ir, 64, cpu)[0] == "plain"


def test_bf16_search_keeps_alpha_in_fp32(tmp_path):
    from nasc.runtime.search import Request, prepare, run_search

    job = prepare(Request(space="spaces/nb201.nas", params={"C": 4, "N": 1},
                          overrides={"epochs": 1, "batch": 32, "train_portion": 0.1, "precision": "bf16"}))
    weights = job.net.group_weights()
    assert all(w.ops.dtype == torch.float32 for w in weights.values())
    result = run_search(job, tmp_path / "run")
    assert all(a.dtype == torch.float32 and torch.isfinite(a).all() for a in job.net.alphas.values())
    assert result.genotype.cells


def test_channels_last_is_the_default_a_space_can_turn_it_off_and_it_must_be_a_boolean():
    from pathlib import Path

    from typer.testing import CliRunner

    from nasc.cli import app
    from nasc.runtime.config import make_config

    assert make_config({}, {}).channels_last is True
    text = Path("spaces/darts.nas").read_text().replace("    order = 1\n", "    order = 1\n    channels_last = false\n")
    ir = compile_space("nchw.nas", text=text, params={"C": 2, "layers": 3}, input_shape=(1, 8, 8))
    assert make_config(ir.search, {}).channels_last is False
    result = CliRunner().invoke(app, ["search", "--opt", "channels_last=maybe", "--dry-run"])
    assert result.exit_code != 0 and "channels_last must be true or false" in result.output
    assert "Traceback" not in result.output
