"""The softmax (DARTS) relaxation: the edge is Σ softmax(α)_o·o(x), padding gets exact zeros, α's gradient is right."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nasc.errors import BuildError, RegistryError
from nasc.runtime.relaxations.base import MixedEdge, Relaxation, load_relaxation, masked_softmax
from nasc.runtime.relaxations.softmax import Softmax


def _convs(dtype=torch.float32) -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Conv2d(2, 2, k, padding=k // 2, bias=False).to(dtype) for k in (1, 3, 5)]


def test_mixed_edge_is_the_softmax_weighted_sum():
    relax = load_relaxation("softmax")
    cands = _convs()
    edge = relax.make_edge(cands, ["c1", "c3", "c5"], channels=2, stride=1)
    assert isinstance(edge, MixedEdge)
    alpha = torch.tensor([[0.3, -1.2, 2.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    w = relax.group_weights(alpha, mask, {}, [0])
    assert w.edges is None
    x = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(1))
    e = torch.exp(alpha[0])
    p = e / e.sum()  # softmax by hand
    expected = p[0] * cands[0](x) + p[1] * cands[1](x) + p[2] * cands[2](x)
    torch.testing.assert_close(edge(x, w.ops[0]), expected)


def test_masked_softmax_zeroes_padding_and_rows_sum_to_one():
    alpha = torch.randn(4, 6, generator=torch.Generator().manual_seed(0)) * 3
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]],
                        dtype=torch.bool)
    alpha[1, 4] = 100.0  # a huge value on a padded column must still give exactly 0
    p = masked_softmax(alpha, mask)
    assert p.shape == (4, 6)
    assert torch.all(p[~mask] == 0)
    assert torch.all(p[mask] > 0)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(4))
    assert p[2, 0] == 1.0
    torch.testing.assert_close(p[1, :3], torch.softmax(alpha[1, :3], dim=0))


def test_probabilities_match_group_weights_and_are_detached():
    relax = load_relaxation("softmax")
    alpha = torch.randn(3, 4, requires_grad=True)
    mask = torch.ones(3, 4, dtype=torch.bool)
    probs = relax.probabilities(alpha, mask, {}, [0, 0, 1])
    assert not probs.requires_grad
    torch.testing.assert_close(probs, relax.group_weights(alpha, mask, {}, [0, 0, 1]).ops.detach())


def test_alpha_gradient_matches_finite_differences():
    relax = load_relaxation("softmax")
    cands = _convs(torch.float64)
    edge = relax.make_edge(cands, ["c1", "c3", "c5"], channels=2, stride=1)
    mask = torch.tensor([[True, True, True, False]])  # one padded column, as in a group with uneven rows
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    alpha = torch.tensor([[0.1, -0.4, 0.7, 0.0]], dtype=torch.float64, requires_grad=True)

    def f(a: torch.Tensor) -> torch.Tensor:
        return edge(x, relax.group_weights(a, mask, {}, [0]).ops[0])

    assert torch.autograd.gradcheck(f, (alpha,), eps=1e-6, atol=1e-6)
    edge(x, relax.group_weights(alpha, mask, {}, [0]).ops[0]).sum().backward()
    assert alpha.grad[0, 3] == 0  # the padded column gets no gradient


def test_init_alpha_is_small_and_seeded():
    relax = load_relaxation("softmax")
    a = relax.init_alpha(14, 8, torch.Generator().manual_seed(0))
    b = relax.init_alpha(14, 8, torch.Generator().manual_seed(0))
    assert a.shape == (14, 8)
    assert torch.equal(a, b)
    assert 0 < float(a.abs().max()) < 1e-2  # DARTS: 1e-3·N(0, 1)


def test_darts_preset_is_the_softmax_relaxation():
    relax = load_relaxation("darts")
    assert isinstance(relax, Softmax)
    assert isinstance(relax, Relaxation)
    assert relax.name == "softmax"
    assert relax.options == load_relaxation("softmax").options  # the preset adds no option: plain DARTS
    assert type(load_relaxation("softmax")) is Softmax


def test_unknown_relaxation_names_the_closest():
    with pytest.raises(RegistryError) as info:
        load_relaxation("softmx")
    assert "softmx" in info.value.message
    assert "softmax" in info.value.message  # the registered names are listed
    assert info.value.hint == "did you mean 'softmax'?"


def test_unknown_option_is_a_build_error():
    with pytest.raises(BuildError) as info:
        load_relaxation("softmax", {"temperature": 1.0})
    assert "temperature" in info.value.message
    assert "softmax" in info.value.message
    with pytest.raises(BuildError):
        load_relaxation("darts", {"k": 4})


def test_max_w_weighting_follows_sharpdarts_formula():
    """sharpDARTS' Max-W: each op weighs 1 - max_k w_k + w_o, so the strongest op has weight 1."""
    import torch

    from nasc.runtime.relaxations.base import load_relaxation, masked_softmax, preset

    relax = load_relaxation("sharpdarts")
    assert relax.options["weighting"] == "max_w"
    assert preset("sharpdarts")[1]["schedule"] == "cosine_power"
    assert preset("sharpdarts")[1]["cutout"] == 16  # the README's search command has --cutout, as the space file
    alpha = torch.tensor([[0.5, -1.0, 2.0, 0.0], [0.1, 0.2, 0.3, 0.0]])
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    w = masked_softmax(alpha, mask)
    expected = (1 - w.max(dim=1, keepdim=True).values + w) * mask
    got = relax.group_weights(alpha, mask, {}, [0, 0]).ops
    torch.testing.assert_close(got, expected)
    assert got[0, 2] == 1 and got[1, 3] == 0
