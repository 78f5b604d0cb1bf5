"""Fixtures shared by the runtime tests: one thread, and seeded supernets trained a few steps.

Equivalence tests (fused or not, compiled or not, recomputed or not) all ask
the same question, "do these two lowerings train identically?", so they
build, train and compare networks the same way.
"""

import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nasc.runtime.relaxations.base import load_relaxation
from nasc.runtime.supernet import build_supernet


@pytest.fixture
def one_thread():
    """One torch thread: exact-equality tests compare sums whose order must not depend on threading."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def mini_mnist():
    """`mini_mnist(folder, seed)` writes four 8x8 MNIST-format IDX files (64 training, 16 test images) drawn
    from `seed` and returns the folder: a real on-disk dataset a test can change under a run."""
    def write(folder, seed: int):
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.RandomState(seed)
        for prefix, n in (("train", 64), ("t10k", 16)):
            for kind, arr in (("images-idx3", rng.randint(0, 256, (n, 8, 8))), ("labels-idx1", rng.randint(0, 10, n))):
                head = bytes((0, 0, 8, arr.ndim)) + struct.pack(f">{arr.ndim}I", *arr.shape)
                (folder / f"{prefix}-{kind}-ubyte").write_bytes(head + arr.astype(np.uint8).tobytes())
        return folder
    return write


@pytest.fixture
def bound_redraws(monkeypatch):
    """`bound_redraws(module)` makes `module.gumbel_noise` fail after 10,000 draws: a redraw loop with no
    end then fails its test instead of hanging the suite."""
    def bound(module) -> None:
        real, calls = module.gumbel_noise, []

        def bounded(like):
            calls.append(1)
            assert len(calls) < 10_000, "redrawn forever"
            return real(like)

        monkeypatch.setattr(module, "gumbel_noise", bounded)
    return bound


def _seeded_supernet(ir, *, fuse=False, mode="plain", relax="softmax"):
    """The same weights and α every call, lowered as asked, in the weight phase (`net.relax` is set up)."""
    torch.manual_seed(0)
    relaxation = load_relaxation(relax)
    net = build_supernet(ir, relaxation, generator=torch.Generator().manual_seed(0))
    relaxation.setup(ir, net)
    net.set_memory(mode, share=True, fuse=fuse)
    relaxation.set_phase("weights")
    return net


def _train_steps(net, shape, *, steps=2, batch=4):
    """SGD steps (α included) on data from a fixed seed; the losses, last gradients and every buffer."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(1)
    losses = []
    for _ in range(steps):
        x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    return losses, grads, {n: b.clone() for n, b in net.named_buffers()}


def _assert_same_training(a, b, *, grad_atol=1e-5, buffer_rtol=1e-5):
    """Two `_train_steps` results agree: losses, the same gradients, the same buffers."""
    assert a[0] == pytest.approx(b[0], rel=1e-5, abs=1e-6)
    assert a[1].keys() == b[1].keys()
    for name, g in a[1].items():
        torch.testing.assert_close(b[1][name], g, rtol=1e-4, atol=grad_atol, msg=name)
    assert a[2].keys() == b[2].keys()
    for name, s in a[2].items():
        torch.testing.assert_close(b[2][name].float(), s.float(), rtol=buffer_rtol, atol=1e-6, msg=name)


@pytest.fixture(scope="session")
def supernet():
    return _seeded_supernet


@pytest.fixture(scope="session")
def train_steps():
    return _train_steps


@pytest.fixture(scope="session")
def assert_same_training():
    return _assert_same_training
