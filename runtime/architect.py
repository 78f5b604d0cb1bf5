"""The architecture step: first-order, or second-order (unrolled) DARTS.

Second order follows the official code (quark0/darts cnn/architect.py) rather
than the paper's shorthand: the virtual step w' = w − ξ(μ·m + ∇_w L_train + λ·w)
includes the momentum buffer and weight decay, and the Hessian-vector product
uses finite differences w± = w ± ε·∇_{w'} L_val(w') with ε = 0.01 / ‖∇_{w'} L_val‖,
evaluated around the original weights. It is done in place (weights saved and
restored) instead of cloning the network.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def first_order(loss_fn: LossFn, arch: list[nn.Parameter], x_val: torch.Tensor,
                y_val: torch.Tensor) -> torch.Tensor:
    """∇_α L_val(w, α) into α.grad; returns the validation loss (detached, never read on the host here,
    so the step can be captured as a CUDA graph)."""
    for p in arch:
        p.grad = None
    loss = loss_fn(x_val, y_val)
    grads = torch.autograd.grad(loss, arch, allow_unused=True)
    for p, g in zip(arch, grads):
        p.grad = torch.zeros_like(p) if g is None else g
    return loss.detach()


@torch.no_grad()
def _copy_into(params: list[nn.Parameter], values: list[torch.Tensor]) -> None:
    for p, v in zip(params, values):
        p.copy_(v)


def second_order(loss_fn: LossFn, weights: list[nn.Parameter], arch: list[nn.Parameter],
                 optimizer: torch.optim.Optimizer, lr: float, x_train: torch.Tensor, y_train: torch.Tensor,
                 x_val: torch.Tensor, y_val: torch.Tensor,
                 buffers: Callable[[], list[torch.Tensor]] | None = None) -> torch.Tensor:
    """The unrolled DARTS gradient into α.grad; weights are left exactly as they were.

    `buffers()` (BN running statistics) are restored after the forward at the virtual
    weights w', which the official code runs on a throw-away copy of the network.
    They are looked up only after the first forward: fused edge groups (runtime/fuse.py)
    replace their BNs' buffers by views of one tensor during a pass, so a list taken
    before it would restore tensors the network no longer uses.
    """
    group = optimizer.param_groups[0]
    momentum, decay = group.get("momentum", 0.0), group.get("weight_decay", 0.0)
    original = [w.detach().clone() for w in weights]

    # virtual step w' = w - ξ (μ m + ∇L_train + λ w)
    loss = loss_fn(x_train, y_train)
    grads = torch.autograd.grad(loss, weights, allow_unused=True)
    with torch.no_grad():
        for w, g, w0 in zip(weights, grads, original):
            d = (torch.zeros_like(w0) if g is None else g) + decay * w0
            buf = optimizer.state.get(w, {}).get("momentum_buffer")
            if buf is not None and momentum:
                d = d + momentum * buf
            w.copy_(w0 - lr * d)

    # ∇_α L_val(w') and v = ∇_{w'} L_val(w')
    live = buffers() if buffers is not None else []
    kept = [b.detach().clone() for b in live]
    val_loss = loss_fn(x_val, y_val)
    g_all = torch.autograd.grad(val_loss, arch + weights, allow_unused=True)
    with torch.no_grad():  # after the backward: autograd checks the versions of the buffers BN saved
        for b, k in zip(live, kept):
            b.copy_(k)
    d_alpha = [torch.zeros_like(a) if g is None else g for a, g in zip(arch, g_all[: len(arch)])]
    vector = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, g_all[len(arch):])]

    # Hessian-vector product by central differences around the original w
    norm = torch.cat([v.reshape(-1) for v in vector]).norm()
    eps = 0.01 / float(norm) if float(norm) > 0 else 0.0
    hvp = [torch.zeros_like(a) for a in arch]
    if eps:
        _copy_into(weights, [w0 + eps * v for w0, v in zip(original, vector)])
        g_pos = torch.autograd.grad(loss_fn(x_train, y_train), arch, allow_unused=True)
        _copy_into(weights, [w0 - eps * v for w0, v in zip(original, vector)])
        g_neg = torch.autograd.grad(loss_fn(x_train, y_train), arch, allow_unused=True)
        hvp = [((gp if gp is not None else 0) - (gn if gn is not None else 0)) / (2 * eps) + torch.zeros_like(a)
               for a, gp, gn in zip(arch, g_pos, g_neg)]
    _copy_into(weights, original)
    for a, da, h in zip(arch, d_alpha, hvp):
        a.grad = da - lr * h
    return val_loss.detach()
