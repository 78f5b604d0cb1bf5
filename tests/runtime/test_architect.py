"""The DARTS α step: first order is ∇_α L_val; second order is the unrolled gradient of DARTS `cnn/architect.py`.

References are computed independently with `torch.func.functional_call`:

* exact second order: w' = w − ξ(μ·m + ∇_w L_train(w, α) + λ·w) is built with
  `create_graph=True`, so ∇_α L_val(w', α) is differentiated *through* the inner
  gradient. The library approximates that Hessian-vector product by central
  finite differences with ε = 0.01/‖∇_{w'} L_val‖ (DARTS' R = 0.01). On a ReLU
  network a step of that size crosses activation kinks, where ∇_α L_train jumps,
  and the finite difference then differs from autograd's (kink-free) second
  derivative by O(1) however small the tolerance (we measured 6x on NB201 at
  R = 0.01; it only converges below R ≈ 1e-5). So the exact comparison runs on
  a smooth copy of the NB201 cell (sigmoid instead of ReLU, no ReLU resblock),
  where the finite difference is O(ε²)-accurate.
* on the real NB201 space (ReLU) the library must equal the DARTS finite-difference
  formula itself, recomputed here with the same ε.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from nasc.compiler.pipeline import compile_space
from nasc.runtime.architect import first_order, second_order
from nasc.runtime.relaxations.base import load_relaxation
from nasc.runtime.supernet import build_supernet

XI = 0.05  # virtual-step learning rate ξ (larger than DARTS' 0.025 so the second-order term is clearly visible)
MOMENTUM = 0.9
DECAY = 3e-4
R = 0.01  # DARTS' finite-difference radius

SMOOTH = """
space smooth(C = 4, classes = 10)

op nor_conv_{k}x{k} = sigmoid > conv(k, stride, bias = searching) > bn
op avg_pool_3x3     = avg_pool(3, stride)
op skip_connect     = identity | on stride 2: factorized_reduce
op none             = zero(stride)

ops smooth_ops = [none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3]

cell cell(x0):
    nodes x1..x3 = sum
    edges dense: smooth_ops
    output x3

network:
    input 1 x 8 x 8
    stem conv(3, out = C) > bn
    stack 2 x cell, width C
    head bn > sigmoid > global_avg_pool > linear(classes)

alpha shared per cell
relax softmax
select argmax per edge
"""


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ir(space: str):
    if space == "smooth":
        return compile_space("smooth.nas", text=SMOOTH)
    return compile_space("nb201", params={"C": 4, "N": 1}, input_shape=(1, 8, 8))


def _setup(space: str = "nb201", seed: int = 0):
    """A float64 supernet, an SGD optimiser whose momentum buffers are filled, and a train and a val batch."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = build_supernet(_ir(space), load_relaxation("softmax"), generator=gen).double()
    with torch.no_grad():  # α away from uniform so the mixture is not symmetric
        for a in net.arch_parameters():
            a.copy_(0.5 * torch.randn(a.shape, generator=gen, dtype=torch.float64))
    weights, arch = net.weight_parameters(), net.arch_parameters()
    opt = torch.optim.SGD(weights, lr=XI, momentum=MOMENTUM, weight_decay=DECAY)
    batches = [(torch.randn(8, 1, 8, 8, generator=gen, dtype=torch.float64), torch.randint(0, 10, (8,), generator=gen))
               for _ in range(4)]
    for x, y in batches[:2]:  # two real steps: every weight gets a momentum buffer (μ·m enters the virtual step)
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    for p in weights + arch:
        p.grad = None
    net.train()
    return net, weights, arch, opt, batches[2], batches[3]


def _functional_loss(net, weights, arch):
    ids = {id(p): n for n, p in net.named_parameters()}
    w_names, a_names = [ids[id(p)] for p in weights], [ids[id(p)] for p in arch]
    buffers = {n: b.detach().clone() for n, b in net.named_buffers()}

    def loss(ws, as_, batch):
        params = {**dict(zip(w_names, ws)), **dict(zip(a_names, as_))}
        x, y = batch
        return F.cross_entropy(functional_call(net, (params, dict(buffers)), (x,)), y)

    return loss


def _virtual(net, weights, arch, opt, train, *, create_graph: bool):
    loss = _functional_loss(net, weights, arch)
    a = [p.detach().clone().requires_grad_(True) for p in arch]
    w = [p.detach().clone().requires_grad_(True) for p in weights]
    bufs = [opt.state[p]["momentum_buffer"].detach().clone() for p in weights]
    g = torch.autograd.grad(loss(w, a, train), w, create_graph=create_graph)
    w_virtual = [wi - XI * (MOMENTUM * m + gi + DECAY * wi) for wi, m, gi in zip(w, bufs, g)]
    return loss, a, w, w_virtual


def _exact_unrolled(net, weights, arch, opt, train, val) -> list[torch.Tensor]:
    """∇_α L_val(w − ξ(μ m + ∇_w L_train(w, α) + λ w), α), differentiating through ∇_w L_train."""
    loss, a, _, w_virtual = _virtual(net, weights, arch, opt, train, create_graph=True)
    return list(torch.autograd.grad(loss(w_virtual, a, val), a))


def _darts_finite_difference(net, weights, arch, opt, train, val) -> list[torch.Tensor]:
    """DARTS' formula: ∇_α L_val(w') − ξ [∇_α L_train(w⁺) − ∇_α L_train(w⁻)] / 2ε, w± = w ± ε ∇_{w'} L_val(w')."""
    loss, a, w, w_virtual = _virtual(net, weights, arch, opt, train, create_graph=False)
    w_virtual = [t.detach().requires_grad_(True) for t in w_virtual]
    grads = torch.autograd.grad(loss(w_virtual, a, val), a + w_virtual)
    d_alpha, v = grads[: len(a)], grads[len(a):]
    eps = R / float(torch.cat([t.reshape(-1) for t in v]).norm())
    w0 = [t.detach() for t in w]
    g_pos = torch.autograd.grad(loss([x + eps * t for x, t in zip(w0, v)], a, train), a)
    g_neg = torch.autograd.grad(loss([x - eps * t for x, t in zip(w0, v)], a, train), a)
    return [d - XI * (p - n) / (2 * eps) for d, p, n in zip(d_alpha, g_pos, g_neg)]


def _run_second_order(net, weights, arch, opt, train, val) -> list[torch.Tensor]:
    second_order(lambda x, y: F.cross_entropy(net(x), y), weights, arch, opt, XI, *train, *val)
    return [a.grad.detach().clone() for a in arch]


@pytest.mark.parametrize("space", ["nb201", "smooth"])
def test_second_order_leaves_weights_bit_for_bit_unchanged(space):
    net, weights, arch, opt, train, val = _setup(space)
    before = [p.detach().clone() for p in weights]
    buffers = [opt.state[p]["momentum_buffer"].clone() for p in weights]
    _run_second_order(net, weights, arch, opt, train, val)
    for p, b in zip(weights, before):
        assert torch.equal(p.detach(), b)
    for p, b in zip(weights, buffers):
        assert torch.equal(opt.state[p]["momentum_buffer"], b)
    assert all(p.grad is None for p in weights)  # only α receives a gradient
    assert all(a.grad is not None and a.grad.shape == a.shape for a in arch)


def test_second_order_matches_exact_unrolled_gradient_on_a_smooth_cell():
    net, weights, arch, opt, train, val = _setup("smooth")
    expected = _exact_unrolled(net, weights, arch, opt, train, val)
    got = _run_second_order(net, weights, arch, opt, train, val)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-2, atol=1e-2 * float(e.abs().max()))
    # The Hessian part alone (total minus ∇_α L_val(w')) must match too, not just vanish next to the first term.
    loss, a, _, w_virtual = _virtual(net, weights, arch, opt, train, create_graph=False)
    first = torch.autograd.grad(loss([t.detach() for t in w_virtual], a, val), a)
    for g, e, f in zip(got, expected, first):
        hessian_part = e - f
        assert float(hessian_part.abs().max()) > 1e-3 * float(f.abs().max())
        torch.testing.assert_close(g - f, hessian_part, rtol=1e-2, atol=1e-2 * float(hessian_part.abs().max()))


@pytest.mark.parametrize("space", ["nb201", "smooth"])
def test_second_order_is_the_darts_finite_difference_formula(space):
    net, weights, arch, opt, train, val = _setup(space)
    expected = _darts_finite_difference(net, weights, arch, opt, train, val)
    got = _run_second_order(net, weights, arch, opt, train, val)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-7, atol=1e-10)


def test_first_order_is_the_validation_gradient():
    net, weights, arch, opt, _, (xv, yv) = _setup("nb201")
    before = [p.detach().clone() for p in weights]
    loss_value = first_order(lambda x, y: F.cross_entropy(net(x), y), arch, xv, yv)
    got = [a.grad.clone() for a in arch]
    loss = F.cross_entropy(net(xv), yv)
    expected = torch.autograd.grad(loss, arch)
    assert loss_value == pytest.approx(float(loss.detach()), rel=1e-12)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
    for p, b in zip(weights, before):
        assert torch.equal(p.detach(), b)
    assert all(p.grad is None for p in weights)
