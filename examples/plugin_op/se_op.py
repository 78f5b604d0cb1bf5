"""A squeeze-and-excitation primitive (Hu et al., CVPR 2018) as a nasc plugin.

Load it with `nasc --plugin examples/plugin_op/se_op.py ...` (or
`nasc.load_plugins(["examples/plugin_op/se_op.py"])`); `.nas` op bodies may
then call `se` or `se(reduction = 8)` like any built-in primitive:

    op sep_se_3x3 = relu > dw_conv(3, stride) > conv(1) > bn > se

SE rescales each channel by a gate computed from the whole feature map:
global average pool → 1x1 conv to C/r channels (+ bias) → ReLU → 1x1 conv
back to C (+ bias) → sigmoid → multiply. The compile-time rules below give
nasc its shape, parameter and multiply-add counts without torch; the builder
must agree with them (`nasc.plugins.register_op`, tested in tests/test_plugins.py).
"""

from __future__ import annotations

import torch
from torch import nn

from nasc.errors import NascError
from nasc.plugins import register_op


def hidden(c: int, reduction: int) -> int:
    """Channels of the squeeze: C / r, at least 1."""
    if reduction < 1:
        raise NascError(f"se: reduction must be at least 1, got {reduction}")
    return max(1, c // reduction)


def se_params(c_in: int, c_out: int, args: dict, affine: bool) -> int:
    r = hidden(c_in, args["reduction"])
    return c_in * r + r + r * c_in + c_in  # two 1x1 convs with bias


def se_madds(c_in: int, c_out: int, h: int | None, args: dict) -> int:
    return 2 * c_in * hidden(c_in, args["reduction"])  # on the pooled 1x1 map; the rescale is not a multiply-add


class SqueezeExcite(nn.Module):
    """x · σ(W2 ReLU(W1 avgpool(x) + b1) + b2), channel-wise."""

    def __init__(self, c: int, reduction: int):
        super().__init__()
        r = hidden(c, reduction)
        self.squeeze = nn.Conv2d(c, r, 1)
        self.excite = nn.Conv2d(r, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(s))))  # (B, C, 1, 1)
        return x * gate  # (B, C, H, W)


@register_op("se", params={"reduction": 4}, n_params=se_params, madds=se_madds,
             doc="squeeze-and-excitation: channels rescaled by a gate from the pooled map (plugin)")
def build_se(c_in: int, c_out: int, args: dict, *, affine: bool) -> nn.Module:
    """Squeeze-and-excitation with reduction r (default 4); keeps channels and size."""
    return SqueezeExcite(c_in, int(args.get("reduction") or 4))
