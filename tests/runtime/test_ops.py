"""The runtime ops must agree with the compiler's primitive table on names, shapes, parameters and multiply-adds."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nasc.compiler.primitives import PRIMITIVES
from nasc.errors import BuildError, RegistryError
from nasc.runtime.ops import OPS, build_step

H = 8

# (name, c_in, c (channels asked by the edge), args): a handful of representative calls per primitive
CASES = [
    ("relu", 4, 4, {}),
    ("relu6", 4, 4, {}),
    ("sigmoid", 4, 4, {}),
    ("identity", 4, 4, {}),
    ("zero", 4, 4, {}),
    ("zero", 4, 4, {"stride": 2}),
    ("zero", 4, 6, {"stride": 2}),
    ("noise", 4, 4, {}),
    ("noise", 4, 4, {"stride": 2}),
    ("bn", 4, 4, {}),
    ("bn", 4, 4, {"affine": True}),
    ("bn", 4, 4, {"affine": False}),
    ("conv", 4, 6, {"k": 1}),
    ("conv", 4, 6, {"k": 3}),
    ("conv", 4, 6, {"k": 5, "stride": 2}),
    ("conv", 4, 6, {"k": 3, "dilation": 2}),
    ("conv", 4, 6, {"k": 5, "dilation": 2, "stride": 2}),
    ("conv", 4, 6, {"k": 3, "groups": 2, "bias": True}),
    ("conv", 4, 6, {"k": 3, "out": 8, "pad": 0}),
    ("dw_conv", 4, 4, {"k": 3}),
    ("dw_conv", 4, 4, {"k": 5, "stride": 2, "dilation": 2, "bias": True}),
    ("max_pool", 4, 4, {"k": 3}),
    ("max_pool", 4, 4, {"k": 3, "stride": 2}),
    ("avg_pool", 4, 4, {"k": 3}),
    ("avg_pool", 4, 4, {"k": 3, "stride": 2, "count_include_pad": True}),
    ("avg_pool", 4, 4, {"k": 2, "stride": 2}),
    ("factorized_reduce", 4, 6, {}),
    ("factorized_reduce", 4, 6, {"out": 8}),
    ("resblock", 4, 4, {}),
    ("resblock", 4, 6, {}),
    ("resblock", 4, 6, {"stride": 2}),
    ("resblock", 4, 4, {"stride": 2}),
    ("global_avg_pool", 4, 4, {}),
    ("dropout", 4, 4, {}),
    ("dropout", 4, 4, {"p": 0.5}),
    ("linear", 4, 10, {}),
    ("linear", 4, 10, {"out": 3, "bias": False}),
]
VECTOR_INPUT = {"linear"}


def _case_id(case: tuple) -> str:
    name, c_in, c, args = case
    return f"{name}-{c_in}-{c}-" + ",".join(f"{k}={v}" for k, v in args.items())


def test_registry_matches_primitive_table():
    assert set(OPS.names()) == set(PRIMITIVES)


def test_every_primitive_has_a_case():
    # flatten's output width depends on the input's size, which the table's channel rule does not see;
    # `place` handles it and test_flatten_matches_place covers it
    assert {case[0] for case in CASES} | {"flatten"} == set(PRIMITIVES)


def _madds_of(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of the convs and linears, per sample, counted by hooks (what the table counts)."""
    total = 0

    def hook(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        per_output = m.weight[0].numel()  # (C_in/groups)*k*k, or in_features
        total += per_output * out[0].numel()

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    module(x)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_op_matches_table(case: tuple, affine: bool):
    name, c_in, c, args = case
    prim = PRIMITIVES[name]
    c_out = prim.channels(c_in, c, args)
    m = build_step(name, c_in, c_out, args, affine=affine)

    assert sum(p.numel() for p in m.parameters()) == prim.n_params(c_in, c_out, args, affine)

    h = None if name in VECTOR_INPUT else H
    x = torch.randn(2, c_in) if h is None else torch.randn(2, c_in, H, H)
    x.requires_grad_(True)
    out = m(x)
    h_out = prim.spatial(h, args) if h is not None else None
    assert out.shape[:2] == (2, c_out)
    assert out.shape[2:] == (() if h_out is None else (h_out, h_out))

    assert _madds_of(m, x) == prim.madds(c_in, c_out, h_out, args)

    if out.requires_grad:
        out.sum().backward()
        assert all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_none_args_mean_defaults(case: tuple):
    name, c_in, c, args = case
    c_out = PRIMITIVES[name].channels(c_in, c, args)
    padded = {p.name: None for p in PRIMITIVES[name].params} | args
    a, b = build_step(name, c_in, c_out, args, affine=True), build_step(name, c_in, c_out, padded, affine=True)
    assert repr(a) == repr(b)


def test_zero_gives_exact_zeros_of_strided_shape():
    x = torch.randn(2, 4, 7, 7)
    same = build_step("zero", 4, 4, {"stride": 2}, affine=False)(x)
    assert same.shape == (2, 4, 4, 4) and torch.equal(same, torch.zeros_like(same))
    wider = build_step("zero", 4, 6, {"stride": 2}, affine=False)(x)
    assert wider.shape == (2, 6, 4, 4) and torch.equal(wider, torch.zeros_like(wider))


@pytest.mark.parametrize("size", [8, 7])
def test_factorized_reduce_on_even_and_odd_sizes(size: int):
    m = build_step("factorized_reduce", 4, 6, {}, affine=False).eval()  # fresh BN stats: y / sqrt(1 + eps)
    x = torch.randn(2, 4, size, size)
    out = m(x)
    half = (size + 1) // 2
    assert out.shape == (2, 6, half, half)
    # conv_1 sees the even pixels; conv_2 the odd ones, zero-padded to `half` when the size is odd
    relu = x.relu()
    w1, w2 = m.conv_1.weight[:, :, 0, 0], m.conv_2.weight[:, :, 0, 0]  # (3, 4)
    even = torch.einsum("oc,bchw->bohw", w1, relu[:, :, ::2, ::2])  # (2, 3, half, half)
    odd = torch.einsum("oc,bchw->bohw", w2, relu[:, :, 1::2, 1::2])  # (2, 3, size//2, size//2)
    odd = nn.functional.pad(odd, (0, half - size // 2, 0, half - size // 2))  # (2, 3, half, half)
    want = torch.cat([even, odd], 1) / (1 + m.bn.eps) ** 0.5
    torch.testing.assert_close(out, want)


def test_factorized_reduce_needs_even_channels():
    with pytest.raises(BuildError, match="even"):
        build_step("factorized_reduce", 4, 5, {}, affine=True)


def test_resblock_stride_2_on_odd_size_matches_table():
    m = build_step("resblock", 4, 6, {"stride": 2}, affine=True)
    h = PRIMITIVES["resblock"].spatial(7, {"stride": 2})
    assert m(torch.randn(2, 4, 7, 7)).shape == (2, 6, h, h)
    # the shortcut's ceil_mode pooling equals AutoDL's floor pooling on even sizes
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(m.downsample[0](x), nn.functional.avg_pool2d(x, 2, 2, 0))


def test_avg_pool_excludes_padding_by_default():
    x = torch.full((1, 2, 5, 5), 3.0)
    out = build_step("avg_pool", 2, 2, {"k": 3}, affine=False)(x)
    torch.testing.assert_close(out, x)  # borders too: padding is not averaged in
    counted = build_step("avg_pool", 2, 2, {"k": 3, "count_include_pad": True}, affine=False)(x)
    torch.testing.assert_close(counted[0, 0, 0, 0], torch.tensor(3.0 * 4 / 9))


def test_noise_ignores_input_values_and_follows_the_seed():
    m = build_step("noise", 3, 3, {"stride": 2}, affine=False)
    torch.manual_seed(0)
    a = m(torch.randn(2, 3, 8, 8))
    b = m(torch.zeros(2, 3, 8, 8))
    torch.manual_seed(0)
    _ = torch.randn(2, 3, 8, 8)  # keep the RNG stream aligned with the first call
    again = m(torch.ones(2, 3, 8, 8) * 100)
    assert a.shape == (2, 3, 4, 4)
    torch.testing.assert_close(again, a)
    assert not torch.equal(a, b)  # fresh noise each call


def test_bn_own_affine_overrides_context():
    assert build_step("bn", 4, 4, {"affine": True}, affine=False).affine
    assert not build_step("bn", 4, 4, {"affine": False}, affine=True).affine
    assert not build_step("bn", 4, 4, {"affine": None}, affine=False).affine


def test_unknown_primitive_has_hint():
    with pytest.raises(RegistryError) as info:
        build_step("conv3", 4, 4, {"k": 3}, affine=True)
    assert "unknown primitive 'conv3'" in info.value.message
    assert info.value.hint == "did you mean 'conv'?"


def test_flatten_matches_place():
    from nasc.compiler.instantiate import place
    from nasc.compiler.ir import Step

    placed = place((Step(prim="flatten"),), c_in=6, c=6, h=2, searching=False, affine=True)
    assert placed[0].c_out == 24 and placed[0].h_out is None and placed[0].params == 0
    m = build_step("flatten", 6, 24, {}, affine=True)
    assert m(torch.randn(3, 6, 2, 2)).shape == (3, 24)
