"""One torch module builder per primitive of `nasc.compiler.primitives.PRIMITIVES`.

The compiler counts parameters and multiply-adds from the table without torch;
these builders must produce exactly those counts, so every module mirrors the
reference code it comes from (DARTS `cnn/operations.py`, AutoDL-Projects
`xautodl/models/cell_operations.py`) down to bias and BN flags. A test checks
names and counts against the table so the two sides cannot drift.

Every builder has the signature `(c_in, c_out, args, *, affine) -> nn.Module`:
`args` holds the call's resolved arguments (missing or None means the table's
default), `c_out` is what the table's `channels` rule gave, and `affine` is the
BN flag of the context (False inside search cells, as in DARTS).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasc.compiler.primitives import PRIMITIVES, same_pad
from nasc.errors import BuildError
from nasc.runtime.registry import Registry, call_problem, is_builtin, origin_text

Args = dict[str, Any]
Builder = Any  # (c_in, c_out, args, *, affine) -> nn.Module

OPS: Registry[Builder] = Registry(
    "primitive", accepts=(callable, "a builder function (c_in, c_out, args, *, affine) -> nn.Module"),
    calls=lambda b: call_problem(b, 1, 1, {}, affine=True))


def resolve(name: str, args: Args | None) -> Args:
    """`args` with every table parameter present, None and missing ones replaced by the table default."""
    given = {k: v for k, v in (args or {}).items() if v is not None}
    return {p.name: given.get(p.name, p.default) for p in PRIMITIVES[name].params} | given


def build_step(name: str, c_in: int, c_out: int, args: Args | None, *, affine: bool,
               counted: int | None = None) -> nn.Module:
    """Build the module of one primitive call; unknown names raise `RegistryError` with a hint.

    A plugin builder that returns something other than a module is named here, where it happened,
    instead of failing later inside the supernet as a TypeError that looks like a bug in nasc. So is
    one whose module has another number of weights than its `n_params` rule gave (`counted`): every
    size, cost and memory estimate of `nasc compile` comes from the rule, and would be silently wrong.
    """
    entry = OPS.entry(name)
    module = entry.value(c_in, c_out, dict(args or {}), affine=affine)
    if not isinstance(module, nn.Module):
        raise BuildError(f"the builder of primitive {name!r} ({origin_text(entry.origin)}) returned "
                         f"{type(module).__name__}, not a torch.nn.Module",
                         hint="an op builder (c_in, c_out, args, *, affine) must return an nn.Module")
    if counted is not None and not is_builtin(entry.origin):
        built = sum(p.numel() for p in module.parameters())
        if built != counted:
            shown = ", ".join(f"{k}={v!r}" for k, v in sorted((args or {}).items()))
            raise BuildError(f"primitive {name!r} ({origin_text(entry.origin)}) built {built:,} weights where its "
                             f"n_params rule counts {counted:,} (c_in={c_in}, c_out={c_out}, affine={affine}"
                             + (f", {shown}" if shown else "") + ")",
                             hint="make n_params count what the builder builds: nasc compile's sizes, costs and "
                                  "memory estimates come from the rule")
    return module


def _pad(a: Args) -> int:
    # None means 'same' at stride 1, DARTS' choice for every conv and pool
    return a["pad"] if a["pad"] is not None else same_pad(a["k"], a.get("dilation", 1))


# -- modules that torch does not have --------------------------------------------------------------


class Zero(nn.Module):
    """DARTS `Zero` (`none`), with AutoDL's channel change; output shape is the strided input's."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.c_in, self.c_out, self.stride = c_in, c_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        if self.c_in == self.c_out:
            return x[:, :, ::s, ::s].mul(0.0)  # (B, C, ceil(H/s), ceil(W/s)); keeps the graph like DARTS
        b, _, h, w = x.shape
        return x.new_zeros(b, self.c_out, -(-h // s), -(-w // s))  # (B, C_out, ceil(H/s), ceil(W/s))

    def extra_repr(self) -> str:
        return f"{self.c_in}, {self.c_out}, stride={self.stride}"


class Noise(nn.Module):
    """RobustDARTS `NoiseOp`: N(0, 1) noise shaped like the strided input, from the global RNG.

    The noise is drawn in NCHW order whatever the input's layout (`randn_like` would follow a
    channels-last input's strides and give each element another draw), so a seeded search
    sees the same noise with `channels_last` on or off.
    """

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        like = x[:, :, ::s, ::s]  # (B, C, ceil(H/s), ceil(W/s))
        # drawn in NCHW order, returned in the input's layout; no gradient, by design
        return torch.empty_like(like).copy_(torch.randn(like.shape, dtype=x.dtype, device=x.device))

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


class Dropout(nn.Dropout):
    """nn.Dropout whose mask is drawn in NCHW order whatever the input's layout.

    Dropout draws in memory order, so on channels-last maps (a search's default) each element
    would get another draw than in NCHW and a seeded run would depend on `channels_last`. Still
    an nn.Dropout, so fused groups, CUDA graphs and torch.compile see the random op it is.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.is_contiguous():
            return super().forward(x)
        out = F.dropout(x.contiguous(), self.p, True)
        return torch.empty_like(x).copy_(out)  # back in the input's layout


class FactorizedReduce(nn.Module):
    """DARTS `FactorizedReduce`: two stride-2 1x1 convs, one shifted by a pixel, concatenated, then BN."""

    def __init__(self, c_in: int, c_out: int, affine: bool):
        super().__init__()
        if c_out % 2:
            raise BuildError(f"factorized_reduce needs an even number of output channels, got {c_out}")
        # attribute names as in DARTS so state dicts line up
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)  # (B, C_in, H, W)
        # pad right/bottom so odd sizes give ceil(H/2) on both paths; a no-op on even sizes (the DARTS case)
        shifted = F.pad(x[:, :, 1:, 1:], (0, x.shape[3] % 2, 0, x.shape[2] % 2))  # (B, C_in, H-1+H%2, W-1+W%2)
        out = torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1)  # (B, C_out, ceil(H/2), ceil(W/2))
        return self.bn(out)


def _relu_conv_bn(c_in: int, c_out: int, k: int, stride: int, pad: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ReLU(inplace=False),
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, bias=False),
        nn.BatchNorm2d(c_out, affine=True),
    )


class ResBlock(nn.Module):
    """NAS-Bench-201 `ResNetBasicblock` (AutoDL): two ReLU-conv3x3-BN plus a pooled or 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        if stride not in (1, 2):
            raise BuildError(f"resblock stride must be 1 or 2, got {stride}")
        # BNs are affine whatever the context, as in AutoDL's TinyNetwork
        self.conv_a = _relu_conv_bn(c_in, c_out, 3, stride, 1)
        self.conv_b = _relu_conv_bn(c_out, c_out, 3, 1, 1)
        if stride == 2:
            # ceil_mode only matters for odd sizes, where it matches conv_a's ceil(H/2); even sizes are as in AutoDL
            self.downsample: nn.Module = nn.Sequential(
                nn.AvgPool2d(2, stride=2, padding=0, ceil_mode=True),
                nn.Conv2d(c_in, c_out, 1, stride=1, padding=0, bias=False),
            )
        elif c_in != c_out:
            self.downsample = _relu_conv_bn(c_in, c_out, 1, 1, 0)
        else:
            self.downsample = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.downsample(x)  # (B, C_out, H', W')


class GlobalAvgPool(nn.Module):
    """Adaptive average pooling to 1x1, flattened: the classifier head's input in DARTS and NB201."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, C, H, W) -> (B, C)


# -- builders ----------------------------------------------------------------------------------------


@OPS.register("relu")
def build_relu(c_in: int, c_out: int, args: Args, *, affine: bool) -> nn.Module:
    """ReLU, never in place: relaxations feed one input to several candidates."""
    return nn.ReLU(inplace=False)


@OPS.register("relu6")
def build_relu6(c_in: int, c_out: int, args: Args, *, affine: bool) -> nn.Module:
    """ReLU6, never in place (MobileNetV2 blocks)."""
    return nn.ReLU6(inplace=False)


@OPS.register("sigmoid")
def build_sigmoid(c_in: int, c_out: int, args: Args, *, affine: bool) -> nn.Module:
    """Logistic sigmoid."""
    return nn.Sigmoid()


@OPS.register("identity")
def build_identity(c_in: int, c_out: int, args: Args, *, affine: bool) -> nn.Module:
    """Returns its input (DARTS `skip_connect` at stride 1)."""
    return nn.Identity()


@OPS.register("zero")
def build_zero(c_in: int, c_out: int, args: Args, *, affine: bool) -> nn.Module:
    """Zeros of the strided output shape (DARTS `none`)."""
    return Zero(c_in, c_out, resolve("zero", args)["stride"])


@OPS.register("noise")
def build_noise(c_in: int, c_out: int, args: Args, *, affine: bool) -> nn.Module:
    """Gaussian noise of the strided input's shape (RobustDARTS S4)."""
    return Noise(resolve("noise", args)["stride"])


@OPS.register("bn")
def build_bn(c_in: int, c_out: int, args: Args, *, affine: bool) -> nn.Module:
    """BatchNorm2d on 4-d input; the call's own `affine` overrides the context's."""
    a = resolve("bn", args)
    return nn.BatchNorm2d(c_in, affine=a["affine"] if a["affine"] is not None else affine)


@OPS.register("conv")
def build_conv(c_in: int, c_out: int, args: Args, *, affine: bool) -> nn.Module:
    """2-d convolution, 'same' padding and no bias unless asked."""
    a = resolve("conv", args)
    g = a["groups"]
    if c_in % g or c_out % g:
        raise BuildError(f"conv groups={g} must divide both c_in={c_in} and c_out={c_out}")
    return nn.Conv2d(c_in, c_out, a["k"], stride=a["stride"], padding=_pad(a), dilation=a["dilation"],
                     groups=g, bias=a["bias"])


@OPS.register("dw_conv")
def build_dw_conv(c_in: int, c_out: int, args: Args, *, affine: bool) -> nn.Module:
    """Depthwise 2-d convolution (groups = channels), the first half of DARTS' separable convs."""
    a = resolve("dw_conv", args)
    return nn.Conv2d(c_in, c_in, a["k"], stride=a["stride"], padding=_pad(a), dilation=a["dilation"],
                     groups=c_in, bias=a["bias"])


@OPS.register("max_pool")
def build_max_pool(c_in: int, c_out: int, args: Args, *, affine: bool) -> nn.Module:
    """Max pooling, 'same' padding by default."""
    a = resolve("max_pool", args)
    return nn.MaxPool2d(a["k"], stride=a["stride"], padding=_pad(a))


@OPS.register("avg_pool")
def build_avg_pool(c_in: int, c_out: int, args: Args, *, affine: bool) -> nn.Module:
    """Average pooling, 'same' padding, padding not counted by default (as in DARTS)."""
    a = resolve("avg_pool", args)
    return nn.AvgPool2d(a["k"], stride=a["stride"], padding=_pad(a), count_include_pad=a["count_include_pad"])


@OPS.register("factorized_reduce")
def build_factorized_reduce(c_in: int, c_out: int, args: Args, *, affine: bool) -> nn.Module:
    """DARTS FactorizedReduce: halves the resolution without losing pixels."""
    return FactorizedReduce(c_in, c_out, affine)


@OPS.register("resblock")
def build_resblock(c_in: int, c_out: int, args: Args, *, affine: bool) -> nn.Module:
    """NAS-Bench-201 ResNet basic block; its BNs are always affine."""
    return ResBlock(c_in, c_out, resolve("resblock", args)["stride"])


@OPS.register("global_avg_pool")
def build_global_avg_pool(c_in: int, c_out: int, args: Args, *, affine: bool) -> nn.Module:
    """Global average pooling to a (B, C) vector."""
    return GlobalAvgPool()


@OPS.register("flatten")
def build_flatten(c_in: int, c_out: int, args: Args, *, affine: bool) -> nn.Module:
    """Flatten (B, C, H, W) to (B, C*H*W); the aux heads end with a 1x1 map."""
    return nn.Flatten(1)


@OPS.register("dropout")
def build_dropout(c_in: int, c_out: int, args: Args, *, affine: bool) -> nn.Module:
    """Dropout with probability p, the same elements dropped in NCHW and channels-last tensors."""
    return Dropout(resolve("dropout", args)["p"])


@OPS.register("linear")
def build_linear(c_in: int, c_out: int, args: Args, *, affine: bool) -> nn.Module:
    """Fully connected layer on a (B, C) vector, bias by default."""
    return nn.Linear(c_in, c_out, bias=resolve("linear", args)["bias"])
