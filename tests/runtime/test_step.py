"""The search step, eager or replayed from a CUDA graph: when graphs are allowed, and that they change nothing.

The CPU tests pin down which searches may be captured (and why the others may
not). The CUDA tests run the same steps eagerly and from graphs and compare
weights, α, BN statistics and losses; they skip on machines without a GPU.
"""

import json

import attrs
import pytest
import torch
import torch.nn.functional as F

from nasc.compiler.pipeline import compile_space
from nasc.runtime.config import make_config
from nasc.runtime.relaxations.base import RELAXATIONS, load_relaxation
from nasc.runtime.relaxations.softmax import Softmax
from nasc.runtime.search import Request, prepare, run_search
from nasc.runtime.step import EvalForward, SearchStep, graph_blocker
from nasc.runtime.supernet import build_supernet

SMALL = {"C": 4, "layers": 3}
CUDA = torch.device("cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _net(relax_name="softmax", space="spaces/darts.nas", shape=(3, 16, 16), **options):
    ir = compile_space(space, params=SMALL, input_shape=shape)
    relax = load_relaxation(relax_name, options)
    net = build_supernet(ir, relax, generator=torch.Generator().manual_seed(0))
    relax.setup(ir, net)
    return net, relax


@pytest.mark.parametrize("name", ["softmax", "partial-channel", "merged-kernel"])
def test_static_relaxations_may_be_captured(name):
    space = "spaces/pcdarts.nas" if name == "partial-channel" else "spaces/darts.nas"
    net, relax = _net(name, space)
    assert graph_blocker(net, relax, make_config({}, {}), CUDA, 1) is None


@pytest.mark.parametrize("name", ["gumbel", "binary-gate", "dropout-group", "rome", "parsec"])
def test_sampling_relaxations_are_never_captured(name):
    net, relax = _net(name)
    reason = graph_blocker(net, relax, make_config({}, {}), CUDA, 1)
    assert reason and name in reason


def test_every_other_obstacle_has_its_reason():
    net, relax = _net()
    cfg = make_config({}, {})
    assert "CUDA device" in graph_blocker(net, relax, cfg, torch.device("cpu"), 1)
    assert "turned off" in graph_blocker(net, relax, attrs.evolve(cfg, cuda_graphs=False), CUDA, 1)
    assert "second-order" in graph_blocker(net, relax, attrs.evolve(cfg, order=2), CUDA, 1)
    assert "processes" in graph_blocker(net, relax, cfg, CUDA, 2)
    assert "drop-path" in graph_blocker(net, relax, attrs.evolve(cfg, drop_path=0.1), CUDA, 1)
    noisy, noisy_relax = _net(space="spaces/darts_s4.nas")
    assert "random" in graph_blocker(noisy, noisy_relax, cfg, CUDA, 1)


def test_cuda_graphs_must_be_a_boolean_and_the_cli_says_so(tmp_path):
    from typer.testing import CliRunner

    from nasc.cli import app

    result = CliRunner().invoke(app, ["search", "--opt", "cuda_graphs=maybe", "--dry-run"])
    assert result.exit_code != 0 and "cuda_graphs must be true or false" in result.output
    assert "Traceback" not in result.output


def test_a_subclass_must_declare_itself_graph_safe():
    class Sampled(Softmax):  # e.g. a plugin that adds noise to the weights every step
        name = "sampled-softmax-test"

    net, _ = _net()
    assert "changes the network" in graph_blocker(net, Sampled(), make_config({}, {}), CUDA, 1)
    assert "sampled-softmax-test" not in RELAXATIONS


def test_without_cuda_the_step_is_eager_and_says_why():
    net, relax = _net()
    cfg = make_config({}, {"batch": 4})
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=3e-4)
    step = SearchStep(net, relax, cfg, w_opt, a_opt, device=torch.device("cpu"))
    assert not step.uses_graphs and "CUDA" in step.blocker
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    out = step(x, y, x, y, lr=0.1, arch_step=True)
    assert out.loss.dim() == 0 and out.logits.shape == (4, 10) and out.arch_loss is not None
    assert step.replays == 0


def test_the_run_records_whether_graphs_were_used(tmp_path):
    job = prepare(Request(space="darts", params=SMALL | {"C": 2, "layers": 2},
                          overrides={"epochs": 1, "batch": 64, "train_portion": 0.1, "cuda_graphs": False}))
    assert job.ir.meta["cuda_graphs"] == {"used": False, "reason": "turned off (cuda_graphs = false)"}
    run_search(job, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["cuda_graphs"]["used"] is False
    assert config["search"]["cuda_graphs"] is False
    timing = json.loads((tmp_path / "run" / "timing.jsonl").read_text().splitlines()[0])
    assert timing["graph_replays"] == 0


# ---- CUDA: graphs change nothing ---------------------------------------------------------------------------


def _steps(graphs, memory, batches, lrs, fuse=False):
    torch.manual_seed(0)
    net, relax = _net()
    net = net.to(CUDA)
    net.set_memory(memory, fuse=fuse)
    cfg = make_config({}, {"batch": 8, "cuda_graphs": graphs})
    w_opt = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=3e-3, betas=(0.5, 0.999), weight_decay=1e-3,
                             capturable=True)
    step = SearchStep(net, relax, cfg, w_opt, a_opt, device=CUDA)
    losses = []
    for (x, y, xv, yv), lr in zip(batches, lrs):
        out = step(x, y, xv, yv, lr=lr, arch_step=True)
        losses.append((float(out.loss), float(out.arch_loss)))
    return net, step, losses


@needs_cuda
@pytest.mark.parametrize("fuse", [False, True])
@pytest.mark.parametrize("memory", ["plain", "recompute"])
def test_graph_replay_equals_eager_steps(memory, fuse):
    torch.backends.cudnn.benchmark = False
    gen = torch.Generator(device="cpu").manual_seed(1)

    def batch(n):
        x = torch.randn(n, 3, 16, 16, generator=gen).to(CUDA)
        return x, torch.randint(0, 10, (n,), generator=gen).to(CUDA)

    # warm-up steps, captures at two learning rates, and a partial batch in between (eager)
    batches = [(*batch(8), *batch(8)) for _ in range(7)] + [(*batch(5), *batch(8))] + \
              [(*batch(8), *batch(8)) for _ in range(3)]
    lrs = [0.1] * 8 + [0.05] * 3
    eager, _, eager_losses = _steps(False, memory, batches, lrs, fuse)
    graphed, step, graph_losses = _steps(None, memory, batches, lrs, fuse)
    assert step.uses_graphs and step.replays >= 5, step.blocker
    for (a, b), (c, d) in zip(eager_losses, graph_losses):
        assert a == pytest.approx(c, rel=1e-4, abs=1e-5) and b == pytest.approx(d, rel=1e-4, abs=1e-5)
    for (name, p), q in zip(eager.state_dict().items(), graphed.state_dict().values()):
        torch.testing.assert_close(p.float(), q.float(), rtol=1e-4, atol=1e-5, msg=name)


@needs_cuda
def test_fused_groups_on_cuda_in_channels_last_equal_edge_by_edge():
    x = torch.randn(8, 3, 16, 16, device=CUDA).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,), device=CUDA)
    results = []
    for fuse in (False, True):
        torch.manual_seed(0)
        net, _ = _net()
        net = net.to(CUDA).to(memory_format=torch.channels_last)
        net.set_memory("plain", fuse=fuse)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        results.append((float(loss), {n: p.grad for n, p in net.named_parameters() if p.grad is not None},
                        {n: b for n, b in net.named_buffers()}))
    (la, ga, ba), (lb, gb, bb) = results
    assert la == pytest.approx(lb, rel=1e-5)
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], rtol=1e-4, atol=1e-5, msg=name)
    for name in ba:
        torch.testing.assert_close(bb[name], ba[name], rtol=1e-5, atol=1e-6, msg=name)


@needs_cuda
@pytest.mark.parametrize("fuse", [False, True])
def test_eval_forward_from_a_graph_equals_eager(fuse):
    net, _ = _net()
    net.set_memory("plain", fuse=fuse)
    net = net.to(CUDA).eval()
    forward = EvalForward(net, lambda: torch.autocast("cuda", enabled=False), enabled=True)
    for _ in range(3):
        x = torch.randn(16, 3, 16, 16, device=CUDA)
        with torch.no_grad():
            expected = net(x)
        torch.testing.assert_close(forward(x).clone(), expected, rtol=1e-5, atol=1e-5)
    assert forward.enabled and len(forward._graphs) == 1


@needs_cuda
def test_a_cuda_search_replays_graphs_and_records_it(tmp_path):
    job = prepare(Request(space="darts", params={"C": 4, "layers": 3},
                          overrides={"epochs": 2, "batch": 32, "train_portion": 0.5, "device": "cuda"}))
    assert job.ir.meta["cuda_graphs"]["used"], job.ir.meta["cuda_graphs"]
    result = run_search(job, tmp_path / "run")
    timing = [json.loads(line) for line in (tmp_path / "run" / "timing.jsonl").read_text().splitlines()]
    assert timing[-1]["graph_replays"] > 0
    assert result.final["val_acc"] > 0.2  # digits: the graphed search still learns (chance is 0.1)
