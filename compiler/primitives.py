"""The closed set of primitives an op body can call, with their shape and cost rules.

This table is the contract between the compiler and the runtime: the compiler
checks calls and computes parameters, multiply-adds and output sizes from it
without importing torch; the runtime registers one module builder per name
and a test asserts that both sides agree on names and parameter counts.

Every primitive receives, besides its own arguments, the channel count of its
input (`c_in`) and the channel count the surrounding edge asks for (`c`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

Args = dict[str, Any]


@attrs.frozen(kw_only=True)
class Param:
    name: str
    kind: type  # int, float or bool
    default: Any = None  # None: computed from context (or optional)
    required: bool = False


@attrs.frozen(kw_only=True)
class Primitive:
    name: str
    doc: str
    params: tuple[Param, ...] = ()
    # (c_in, c, args) -> output channels
    channels: Callable[[int, int, Args], int] = lambda c_in, c, a: c_in
    # (h, args) -> output height (square feature maps); None means flattened to a vector
    spatial: Callable[[int, Args], int | None] = lambda h, a: h
    # (c_in, c_out, args, affine) -> parameter count
    n_params: Callable[[int, int, Args, bool], int] = lambda c_in, c_out, a, affine: 0
    # (c_in, c_out, h_out, args) -> multiply-adds for one sample
    madds: Callable[[int, int, int | None, Args], int] = lambda c_in, c_out, h, a: 0
    # stride the primitive applies (for checks): (args) -> stride
    stride: Callable[[Args], int] = lambda a: 1
    # (known args) -> (problem, hint) when values of the right type still cannot work, e.g. dropout(p = 2);
    # called with the arguments known so far (symbolic ones left out) and again once the op is placed
    check: Callable[[Args], tuple[str, str] | None] = lambda a: None

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


def same_pad(k: int, dilation: int = 1) -> int:
    """Padding that keeps the size at stride 1 (DARTS' choice for every conv and pool)."""
    return dilation * (k - 1) // 2


def conv_out(h: int, k: int, stride: int, pad: int, dilation: int = 1) -> int:
    return math.floor((h + 2 * pad - dilation * (k - 1) - 1) / stride) + 1


def _pad(a: Args) -> int:
    return a["pad"] if a.get("pad") is not None else same_pad(a["k"], a.get("dilation", 1))


def _conv_spatial(h: int, a: Args) -> int:
    return conv_out(h, a["k"], a.get("stride", 1), _pad(a), a.get("dilation", 1))


def _strided(h: int, a: Args) -> int:
    s = a.get("stride", 1)
    return (h + s - 1) // s  # x[:, :, ::s, ::s]


def _bn_params(c: int, affine: bool) -> int:
    return 2 * c if affine else 0


def _conv_params(c_in: int, c_out: int, a: Args, affine: bool) -> int:
    groups = a.get("groups", 1)
    return c_out * (c_in // groups) * a["k"] ** 2 + (c_out if a.get("bias") else 0)


def _conv_madds(c_in: int, c_out: int, h: int | None, a: Args) -> int:
    groups = a.get("groups", 1)
    return c_out * (c_in // groups) * a["k"] ** 2 * (h or 1) ** 2


def _check_groups(c_in: int, c: int, a: Args) -> int:
    out = a["out"] if a.get("out") is not None else c
    return out


def _fr_params(c_in: int, c_out: int, a: Args, affine: bool) -> int:
    return 2 * c_in * (c_out // 2) + _bn_params(c_out, affine)


def _fr_madds(c_in: int, c_out: int, h: int | None, a: Args) -> int:
    return 2 * c_in * (c_out // 2) * (h or 1) ** 2


def _resblock_params(c_in: int, c_out: int, a: Args, affine: bool) -> int:
    n = 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + 2 * c_out
    if a.get("stride", 1) == 2:
        n += c_in * c_out  # avg-pool 2x2 then 1x1 conv, no BN
    elif c_in != c_out:
        n += c_in * c_out + 2 * c_out  # ReLU-conv1x1-BN
    return n


def _resblock_madds(c_in: int, c_out: int, h: int | None, a: Args) -> int:
    hw = (h or 1) ** 2
    n = 9 * c_in * c_out * hw + 9 * c_out * c_out * hw
    if a.get("stride", 1) == 2 or c_in != c_out:
        n += c_in * c_out * hw
    return n


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_pool(a: Args) -> tuple[str, str] | None:
    k, pad = a.get("k"), a.get("pad")
    if _is_int(k) and _is_int(pad) and pad > k // 2:  # torch refuses it at the first forward
        return f"pad = {pad} is more than half the kernel (k = {k})", f"a pooling window pads at most k // 2 = {k // 2}"
    return None


def _check_dropout(a: Args) -> tuple[str, str] | None:
    p = a.get("p")
    if isinstance(p, (int, float)) and not isinstance(p, bool) and not 0 <= p <= 1:
        return f"p = {p} is not a probability", "dropout's p is between 0 and 1, e.g. dropout(p = 0.2)"
    return None


_K = Param(name="k", kind=int, required=True)
_STRIDE = Param(name="stride", kind=int, default=1)
_DIL = Param(name="dilation", kind=int, default=1)
_PAD = Param(name="pad", kind=int, default=None)
_OUT = Param(name="out", kind=int, default=None)
_BIAS = Param(name="bias", kind=bool, default=False)

PRIMITIVES: dict[str, Primitive] = {
    p.name: p
    for p in [
        Primitive(name="relu", doc="ReLU"),
        Primitive(name="relu6", doc="ReLU6 (MobileNetV2 blocks)"),
        Primitive(name="sigmoid", doc="logistic sigmoid"),
        Primitive(name="identity", doc="returns its input"),
        Primitive(
            name="zero",
            doc="zeros of the (strided) output shape; DARTS' `none`",
            params=(_STRIDE,),
            channels=lambda c_in, c, a: c,
            spatial=_strided,
            stride=lambda a: a.get("stride", 1),
        ),
        Primitive(
            name="noise",
            doc="N(0,1) noise of the (strided) input's shape, ignoring its values (RobustDARTS S4)",
            params=(_STRIDE,),
            spatial=_strided,
            stride=lambda a: a.get("stride", 1),
        ),
        Primitive(
            name="bn",
            doc="BatchNorm2d; affine except inside cells during search",
            params=(Param(name="affine", kind=bool, default=None),),
            n_params=lambda c_in, c_out, a, affine: _bn_params(c_in, a["affine"] if a.get("affine") is not None else affine),
        ),
        Primitive(
            name="conv",
            doc="2-d convolution, 'same' padding by default, no bias by default",
            params=(_K, _STRIDE, _DIL, Param(name="groups", kind=int, default=1), _OUT, _PAD, _BIAS),
            channels=_check_groups,
            spatial=_conv_spatial,
            n_params=_conv_params,
            madds=_conv_madds,
            stride=lambda a: a.get("stride", 1),
        ),
        Primitive(
            name="dw_conv",
            doc="depthwise 2-d convolution (groups = channels)",
            params=(_K, _STRIDE, _DIL, _PAD, _BIAS),
            spatial=_conv_spatial,
            n_params=lambda c_in, c_out, a, affine: c_in * a["k"] ** 2 + (c_in if a.get("bias") else 0),
            madds=lambda c_in, c_out, h, a: c_in * a["k"] ** 2 * (h or 1) ** 2,
            stride=lambda a: a.get("stride", 1),
        ),
        Primitive(
            name="max_pool",
            doc="max pooling, 'same' padding by default",
            params=(_K, _STRIDE, _PAD),
            spatial=_conv_spatial,
            stride=lambda a: a.get("stride", 1),
            check=_check_pool,
        ),
        Primitive(
            name="avg_pool",
            doc="average pooling, 'same' padding, padding not counted by default",
            params=(_K, _STRIDE, _PAD, Param(name="count_include_pad", kind=bool, default=False)),
            spatial=_conv_spatial,
            stride=lambda a: a.get("stride", 1),
            check=_check_pool,
        ),
        Primitive(
            name="factorized_reduce",
            doc="ReLU, two shifted stride-2 1x1 convs concatenated, BN: halves the resolution",
            params=(_OUT,),
            channels=_check_groups,
            spatial=lambda h, a: (h + 1) // 2,
            n_params=_fr_params,
            madds=_fr_madds,
            stride=lambda a: 2,
        ),
        Primitive(
            name="resblock",
            doc="ResNet basic block of NAS-Bench-201 (ReLU-conv-BN x2 plus a pooled 1x1 shortcut)",
            params=(_OUT, _STRIDE),
            channels=_check_groups,
            spatial=lambda h, a: conv_out(h, 3, a.get("stride", 1), 1),
            n_params=_resblock_params,
            madds=_resblock_madds,
            stride=lambda a: a.get("stride", 1),
        ),
        Primitive(
            name="global_avg_pool",
            doc="global average pooling to a vector",
            spatial=lambda h, a: None,
        ),
        Primitive(
            name="flatten",
            doc="flattens a feature map to a vector (C*H*W)",
            channels=lambda c_in, c, a: c_in,
            spatial=lambda h, a: None,
        ),
        Primitive(
            name="dropout",
            doc="dropout with probability p",
            params=(Param(name="p", kind=float, default=0.0),),
            check=_check_dropout,
        ),
        Primitive(
            name="linear",
            doc="fully connected layer on a vector",
            params=(_OUT, Param(name="bias", kind=bool, default=True)),
            channels=_check_groups,
            n_params=lambda c_in, c_out, a, affine: c_in * c_out + (c_out if a.get("bias", True) else 0),
            madds=lambda c_in, c_out, h, a: c_in * c_out,
        ),
    ]
}

# Primitives with no learnable weights of their own; the relaxations and the
# optimised lowering treat candidates made only of these specially.
PARAMETER_FREE = frozenset({"relu", "relu6", "sigmoid", "identity", "zero", "noise", "max_pool", "avg_pool",
                            "global_avg_pool", "flatten", "dropout"})
