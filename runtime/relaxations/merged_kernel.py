"""MergeNAS (Wang et al., IJCAI 2020): the convolution candidates of an edge merged into one convolution.

What is verified (algorithms.md §5.7: the patent claim and the first author's
EASY code) and implemented here: the convolution candidates of an edge share
ONE kernel tensor W whose receptive field is the largest among them,
k_max = max((k−1)·d + 1) (9 for DARTS' dil_conv_5x5). Candidate c's kernel is
W restricted to its taps, Mask_c: the central k×k window for an undilated
conv, the taps of the dilation lattice for a dilated one (k taps spaced d
apart, centred). The edge runs one convolution with the merged kernel

    K = Σ_c a_c · (W ⊙ Mask_c)        (padding (k_max − 1)/2, the candidates' stride)

followed by the candidates' (shared) pointwise 1x1 conv and BN. One conv and
one set of weights replace four, so the supernet has fewer weights than under
`softmax`. The compiler's cost model (`compiler/compute_costs.py`) does not
know about merging: `nasc compile`'s supernet weight count is the unmerged one
and differs from what this relaxation builds. That is expected.

Which candidates merge is read off the built modules, not off op names, so any
space whose convolutions have one of these shapes works:

* separable / dilated block: ReLU → depthwise Conv2d (groups = channels, k, dilation d,
  stride s, centred 'same' padding) → 1x1 Conv2d → BatchNorm2d, optionally followed by further
  (ReLU → depthwise stride 1 → 1x1 → BN) stages (DARTS' sep_conv_*, dil_conv_*);
* dense block: ReLU → Conv2d (groups 1, k, d, s, centred padding) → BatchNorm2d (NB201's
  nor_conv_1x1 and nor_conv_3x3, whose merged kernel is a dense 3x3 one).

Candidates merge when their input/output channels, stride, bias flags and BN settings agree. A
merge needs at least two candidates; all other candidates (none, pools, skip, and lone
convolutions) stay separate weighted branches, as in EASY. Nothing else is folded into the
kernel: the survey's claim that skip and average pooling are merged as well is not supported by
any source, and it would not be exact (ReLU before the conv, count_include_pad=False, pooling BN).
A space in which no edge has two mergeable convolutions is rejected with a `BuildError`, in
`setup`, once the whole supernet is known (`prepare` calls it right after building).

Parameterisation (the paper's own is UNVERIFIED; this follows EASY's flat variant (b)):
α covers every candidate of the edge, so genotypes name the real ops (sep_conv_3x3, …) and
`probabilities` is the plain softmax over all of them. The merged convolution receives the
softmax weights of its candidates. By default (`renormalise = True`) the kernel uses them
renormalised, â_c = a_c / S with S = Σ_c a_c, and the branch output is multiplied by S after BN:

    out = S · BN(PW(conv(ReLU(x), Σ_c â_c · W ⊙ Mask_c)))

With BN in eval mode (or any fixed statistics) this is *exactly* Σ_c a_c · cand_c(x), the DARTS
mixture of the separate candidates whose kernels are W ⊙ Mask_c (the test checks it); in
training mode the one BN normalises the merged features with their own batch statistics, which
is inherent to merging. `renormalise = False` is EASY's `MergeSepConv` literally: raw weights in
the kernel and no factor after BN; there the BN (affine-free in search cells, batch statistics)
cancels S, so the convolutions' total weight does not reach the loss.

Deviations, all documented choices:
* stages: one merged separable stage, as EASY's default `single_sepConv=True`. DARTS' sep_conv is
  two stages; during search it is represented by its first stage only (its second stage's modules
  are dropped), so searched sep_conv_kxk and the derived one differ in depth. Dilated convs are
  single-stage anyway. EASY's optional second stage (`single_sepConv=False`) is not offered: it
  gives the dilated convs a second stage they do not have.
* the shared pointwise conv and BN are those of the first merged candidate (the others' are
  dropped); the shared kernel starts as the candidates' own initial kernels pasted onto their
  taps (largest span first, smaller windows overwrite the centre). Taps no mask covers (e.g. 40 of
  DARTS' 81 per channel) stay zero and get no gradient; they are kept so W has EASY's k_max×k_max
  shape and are counted among the supernet weights.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nasc.errors import BuildError
from nasc.runtime.ops import Zero
from nasc.runtime.relaxations.base import RELAXATIONS, MixedEdge, Relaxation

# -- recognising mergeable candidates ------------------------------------------------------------


def _square(v: Any) -> int | None:
    """The common value of a 2-tuple (or an int), None when the two sides differ."""
    if isinstance(v, int):
        return v
    if isinstance(v, tuple) and len(v) == 2 and v[0] == v[1] and isinstance(v[0], int):
        return v[0]
    return None


def _conv_geometry(conv: nn.Conv2d) -> tuple[int, int, int] | None:
    """(k, dilation, stride) of a square, centred-'same' conv with odd span; None otherwise."""
    k, d, s, p = (_square(conv.kernel_size), _square(conv.dilation), _square(conv.stride), _square(conv.padding))
    if None in (k, d, s, p) or conv.padding_mode != "zeros":
        return None
    span = (k - 1) * d + 1
    if span % 2 == 0 or p != (span - 1) // 2:
        return None
    return k, d, s


def _is_pointwise(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and _square(m.kernel_size) == 1 and _square(m.stride) == 1
            and _square(m.padding) == 0 and m.groups == 1)


def _bn_key(bn: nn.BatchNorm2d) -> tuple:
    return (bn.num_features, bn.affine, bn.eps, bn.momentum, bn.track_running_stats)


def _is_depthwise(m: nn.Module) -> bool:
    return type(m) is nn.Conv2d and m.groups == m.in_channels == m.out_channels


def conv_pattern(module: nn.Module) -> tuple[tuple, tuple[int, int]] | None:
    """(merge signature, (k, dilation)) of a mergeable candidate, None when it is not one.

    Candidates with equal signatures can share one kernel. The signature holds the family
    ("separable": ReLU → depthwise → 1x1 → BN [→ more such stages at stride 1]; "dense":
    ReLU → conv → BN), channels, stride, bias flags and the BN settings.
    """
    if not isinstance(module, nn.Sequential):
        return None
    m = list(module)
    if len(m) < 3 or not isinstance(m[0], nn.ReLU):  # SharedReLU (a mixed edge's cached ReLU) counts
        return None
    # separable: stages of (ReLU, depthwise, pointwise, BN); only the first is merged
    if len(m) >= 4 and len(m) % 4 == 0 and _is_depthwise(m[1]) and _is_pointwise(m[2]) \
            and type(m[3]) is nn.BatchNorm2d and m[2].in_channels == m[1].out_channels \
            and m[3].num_features == m[2].out_channels:
        geo = _conv_geometry(m[1])
        if geo is None:
            return None
        for i in range(4, len(m), 4):  # the later stages must be proper stride-1 stages
            rest = m[i:i + 4]
            if not (isinstance(rest[0], nn.ReLU) and _is_depthwise(rest[1]) and _is_pointwise(rest[2])
                    and type(rest[3]) is nn.BatchNorm2d):
                return None
            g = _conv_geometry(rest[1])
            if g is None or g[2] != 1:
                return None
        k, d, s = geo
        sig = ("separable", m[1].in_channels, m[2].out_channels, s, m[1].bias is not None,
               m[2].bias is not None, _bn_key(m[3]))
        return sig, (k, d)
    # dense: ReLU, conv, BN
    if len(m) == 3 and type(m[1]) is nn.Conv2d and m[1].groups == 1 and type(m[2]) is nn.BatchNorm2d \
            and m[2].num_features == m[1].out_channels:
        geo = _conv_geometry(m[1])
        if geo is None:
            return None
        k, d, s = geo
        sig = ("dense", m[1].in_channels, m[1].out_channels, s, m[1].bias is not None, False, _bn_key(m[2]))
        return sig, (k, d)
    return None


def lattice(k: int, dilation: int, k_max: int) -> list[int]:
    """Row (= column) indices of a (k, dilation) kernel's taps inside a centred k_max-wide kernel."""
    span = (k - 1) * dilation + 1
    if span > k_max or (k_max - span) % 2:
        raise ValueError(f"a {k}x{k} kernel with dilation {dilation} does not centre in {k_max}x{k_max}")
    off = (k_max - span) // 2
    return [off + dilation * i for i in range(k)]


def kernel_mask(k: int, dilation: int, k_max: int) -> torch.Tensor:
    """(k_max, k_max) 0/1 mask of the taps a (k, dilation) kernel uses inside the shared kernel."""
    idx = torch.tensor(lattice(k, dilation, k_max))
    mask = torch.zeros(k_max, k_max)
    mask[idx[:, None], idx[None, :]] = 1.0
    return mask


# -- the merged convolution ------------------------------------------------------------------------


class MergedConv(nn.Module):
    """One convolution standing for several candidates: a shared k_max kernel masked per candidate.

    `forward(x, a)` takes the weights `a` of its candidates (in `self.names` order, or of the
    subset `members`) and returns, with `renormalise`, S·BN(PW(conv(ReLU(x), Σ â_c W⊙Mask_c)));
    `separate()` materialises the equivalent stand-alone candidates.
    """

    def __init__(self, family: str, names: list[str], geometry: list[tuple[int, int]], stride: int,
                 convs: list[nn.Conv2d], pointwise: nn.Conv2d | None, bn: nn.BatchNorm2d, renormalise: bool = True):
        super().__init__()
        self.family = family
        self.names = list(names)
        self.geometry = list(geometry)  # (k, dilation) per candidate
        self.stride = stride
        self.renormalise = renormalise
        self.k_max = max((k - 1) * d + 1 for k, d in geometry)
        first = convs[0]
        self.groups = first.groups
        self.relu = nn.ReLU(inplace=False)
        weight = torch.zeros(first.out_channels, first.in_channels // first.groups, self.k_max, self.k_max)
        order = sorted(range(len(convs)), key=lambda i: -((geometry[i][0] - 1) * geometry[i][1] + 1))
        with torch.no_grad():
            for i in order:  # paste the candidates' own initial kernels; smaller windows overwrite the centre
                idx = torch.tensor(lattice(*geometry[i], self.k_max))
                weight[:, :, idx[:, None], idx[None, :]] = convs[i].weight.detach()
        self.weight = nn.Parameter(weight)  # (C_out, C_in / groups, k_max, k_max)
        self.bias = nn.Parameter(first.bias.detach().clone()) if first.bias is not None else None
        self.pointwise = pointwise
        self.bn = bn
        masks = torch.stack([kernel_mask(k, d, self.k_max) for k, d in geometry])  # (n, k_max, k_max)
        self.register_buffer("masks", masks, persistent=False)

    def kernel(self, a: torch.Tensor, members: list[int] | None = None) -> torch.Tensor:
        """Σ_c a_c · (W ⊙ Mask_c), (C_out, C_in/groups, k_max, k_max)."""
        masks = self.masks if members is None else self.masks[members]
        mix = torch.einsum("n,nhw->hw", a.to(self.weight.dtype), masks)  # (k_max, k_max)
        return self.weight * mix

    def features(self, x: torch.Tensor, a: torch.Tensor, members: list[int] | None = None) -> torch.Tensor:
        """Before BN: PW(conv(ReLU(x), kernel(a))); for weights summing to 1, Σ_c a_c · (candidate c before BN)."""
        y = F.conv2d(self.relu(x), self.kernel(a, members), self.bias, stride=self.stride,
                     padding=(self.k_max - 1) // 2, groups=self.groups)  # (B, C_out, H/s, W/s)
        return self.pointwise(y) if self.pointwise is not None else y

    def forward(self, x: torch.Tensor, a: torch.Tensor, members: list[int] | None = None) -> torch.Tensor:
        if not self.renormalise:
            return self.bn(self.features(x, a, members))
        s = a.sum()
        a_hat = a / s.clamp_min(torch.finfo(a.dtype).tiny)  # all-zero weights give a zero branch, not NaN
        return s * self.bn(self.features(x, a_hat, members))

    def separate(self) -> list[nn.Sequential]:
        """The stand-alone candidates this module stands for: kernel W⊙Mask_c cropped to its taps.

        Each is ReLU → conv(k_c, dilation d_c, stride s, 'same') → copies of the shared pointwise conv
        and BN (running statistics included), with copied weights: Σ_c a_c · sep_c(x) equals
        `forward(x, a)` with BN in eval mode (renormalise = True).
        """
        out = []
        w = self.weight.detach()
        for k, d in self.geometry:
            idx = torch.tensor(lattice(k, d, self.k_max))
            conv = nn.Conv2d(w.shape[1] * self.groups, w.shape[0], k, stride=self.stride, padding=(k - 1) * d // 2,
                             dilation=d, groups=self.groups, bias=self.bias is not None).to(w)
            with torch.no_grad():
                conv.weight.copy_(w[:, :, idx[:, None], idx[None, :]])
                if self.bias is not None:
                    conv.bias.copy_(self.bias.detach())
            mods: list[nn.Module] = [nn.ReLU(inplace=False), conv]
            if self.pointwise is not None:
                mods.append(copy.deepcopy(self.pointwise))
            mods.append(copy.deepcopy(self.bn))
            out.append(nn.Sequential(*mods))
        return out

    def extra_repr(self) -> str:
        taps = ", ".join(f"{n}(k={k}, d={d})" for n, (k, d) in zip(self.names, self.geometry))
        return f"{self.family}, k_max={self.k_max}, stride={self.stride}, renormalise={self.renormalise}: {taps}"


class MergedEdge(nn.Module):
    """A mixed edge whose convolution candidates run as merged convolutions, the rest as DARTS branches."""

    def __init__(self, candidates: list[nn.Module], names: list[str], groups: list[list[int]],
                 merged: list[MergedConv]):
        super().__init__()
        self.names = list(names)
        grouped = {i for g in groups for i in g}
        self.separate_ids = [i for i in range(len(candidates)) if i not in grouped]
        self.others = nn.ModuleDict({str(i): candidates[i] for i in self.separate_ids})
        self.merged = nn.ModuleList(merged)
        self.merge_ids = [list(g) for g in groups]  # candidate indices of each merged conv, in its order
        # the same indices as device tensors (they follow .to()): indexing w with a Python list copies it from
        # the host in every pass, which a CUDA graph cannot capture (the relaxation is graph_safe)
        for k, ids in enumerate(self.merge_ids):
            self.register_buffer(f"ids_{k}", torch.tensor(ids, dtype=torch.long), persistent=False)
        # as MixedEdge: a `none` candidate adds exactly zero, so it is not computed (`share = False` computes it)
        self.share = True
        self.zero_ids = {i for i in self.separate_ids if isinstance(candidates[i], Zero)}

    def forward(self, x: torch.Tensor, w: torch.Tensor, active: list[int] | None = None) -> torch.Tensor:
        parts = []
        for i in self.separate_ids:
            if (active is None or i in active) and not (self.share and i in self.zero_ids):
                parts.append(w[i] * self.others[str(i)](x))
        for k, (conv, ids) in enumerate(zip(self.merged, self.merge_ids)):
            if active is None:
                parts.append(conv(x, w.index_select(0, getattr(self, f"ids_{k}"))))
                continue
            local = [j for j, i in enumerate(ids) if i in active]
            if local:
                parts.append(conv(x, w[[ids[j] for j in local]], local))
        if not parts:  # only zero candidates are active: compute one for the output's shape
            i = next(i for i in self.separate_ids if active is None or i in active)
            parts.append(w[i] * self.others[str(i)](x))
        return sum(parts)

    def candidate_modules(self) -> list[nn.Module]:
        """One stand-alone module per candidate (merged convs materialised by `MergedConv.separate`)."""
        mods: list[nn.Module | None] = [None] * len(self.names)
        for i in self.separate_ids:
            mods[i] = self.others[str(i)]
        for conv, ids in zip(self.merged, self.merge_ids):
            for i, m in zip(ids, conv.separate()):
                mods[i] = m
        return mods  # type: ignore[return-value]


def merge_candidates(candidates: list[nn.Module], names: list[str], *, renormalise: bool = True) -> MergedEdge | None:
    """The merged edge of these candidates, or None when no two of them can share a kernel."""
    by_sig: dict[tuple, list[int]] = {}
    geometry: dict[int, tuple[int, int]] = {}
    for i, cand in enumerate(candidates):
        found = conv_pattern(cand)
        if found is not None:
            by_sig.setdefault(found[0], []).append(i)
            geometry[i] = found[1]
    groups = [ids for ids in by_sig.values() if len(ids) >= 2]
    if not groups:
        return None
    merged = []
    for ids in groups:
        seqs = [list(candidates[i]) for i in ids]
        sig = conv_pattern(candidates[ids[0]])[0]
        family, stride = sig[0], sig[3]
        pointwise = seqs[0][2] if family == "separable" else None
        bn = seqs[0][3] if family == "separable" else seqs[0][2]
        merged.append(MergedConv(family, [names[i] for i in ids], [geometry[i] for i in ids], stride,
                                 [s[1] for s in seqs], pointwise, bn, renormalise=renormalise))
    return MergedEdge(candidates, names, groups, merged)


# -- the relaxation ------------------------------------------------------------------------------


@RELAXATIONS.register("merged-kernel")
class MergedKernel(Relaxation):
    """MergeNAS: softmax(α) over every candidate; convolution candidates share one masked kernel.

    Option `renormalise` (default True): see the module docstring; False is EASY's literal form.
    """

    name = "merged-kernel"
    graph_safe = True  # nothing is drawn per step: runtime/step.py may capture the step as a CUDA graph
    defaults: dict[str, Any] = {"renormalise": True}
    # EASY's MergeNAS config equals the DARTS defaults (algorithms.md §5.7, §6): nothing to override
    presets = {"mergenas": ({}, {})}

    def __init__(self, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        if not isinstance(self.options["renormalise"], bool):
            raise BuildError(f"relaxation {self.name!r}: renormalise must be true or false, "
                             f"got {self.options['renormalise']!r}")

    def make_edge(self, candidates: list[nn.Module], names: list[str], *, channels: int, stride: int) -> nn.Module:
        edge = merge_candidates(candidates, names, renormalise=self.options["renormalise"])
        return edge if edge is not None else MixedEdge(candidates, names)

    def setup(self, ir: Any, net: nn.Module) -> None:
        if not any(isinstance(m, MergedEdge) for m in net.modules()):
            raise BuildError(
                f"relaxation {self.name!r} does not fit space {getattr(ir, 'name', '?')!r}: no edge has two "
                "convolution candidates it can merge",
                hint="merged-kernel merges candidates shaped relu > dw_conv(k, dilation) > conv(1) > bn "
                     "(separable/dilated) or relu > conv(k) > bn (dense) with equal channels and stride; "
                     "use softmax (darts) for this space")
