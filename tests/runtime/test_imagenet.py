"""DARTS' ImageNet evaluation network (spaces/darts_imagenet.nas) against an independent reference.

`_Reference` below is a small re-implementation, written for this test from the description of
quark0/darts cnn/model.py `NetworkImageNet` (stem0 224→56, stem1 56→28, the first cell's s0 at twice
its s1's resolution, reductions at layers // 3 and 2 * layers // 3, AvgPool(7) > linear, the ImageNet
auxiliary head without its BN after the 2x2 conv). It shares no code with nasc: genotypes are the
official tuples, written out here. Parameters are counted as `utils.count_parameters_in_MB` does
(everything but the auxiliary head); multiply-adds are counted on the reference with forward hooks:
every conv and linear weight times the positions it is applied at (BN, pooling, ReLU, additions and
biases are not counted).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from nasc.compiler.pipeline import compile_space

ROOT = Path(__file__).resolve().parents[2]
GENOTYPES = ROOT / "examples" / "genotypes"

# the official genotypes (DARTS cnn/genotypes.py, PC-DARTS and P-DARTS genotypes.py): (op, input) pairs
OFFICIAL = {
    "darts_v2": (
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]),
    "pcdarts_imagenet": (
        [("skip_connect", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 0), ("skip_connect", 1),
         ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("dil_conv_5x5", 4)],
        [("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 2), ("max_pool_3x3", 1),
         ("sep_conv_3x3", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_3x3", 3)]),
    "pdarts": (
        [("skip_connect", 0), ("dil_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 0), ("dil_conv_5x5", 4)],
        [("avg_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("dil_conv_5x5", 2),
         ("max_pool_3x3", 0), ("dil_conv_3x3", 1), ("dil_conv_3x3", 1), ("dil_conv_5x5", 3)]),
}


# ---- the reference network ----------------------------------------------------------------------

def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, pad: int = 0, relu_first: bool = True) -> nn.Sequential:
    layers = [nn.ReLU()] if relu_first else []
    return nn.Sequential(*layers, nn.Conv2d(c_in, c_out, k, stride, pad, bias=False), nn.BatchNorm2d(c_out))


class _Reduce2(nn.Module):
    """Two stride-2 1x1 convs, the second on the map shifted by one pixel, concatenated, then BN."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.a = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.b = nn.Conv2d(c_in, c_out // 2, 1, 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        x = torch.relu(x)
        return self.bn(torch.cat([self.a(x), self.b(x[:, :, 1:, 1:])], dim=1))


def _dw_pw(c: int, k: int, stride: int, dilation: int) -> list[nn.Module]:
    pad = dilation * (k - 1) // 2
    return [nn.ReLU(), nn.Conv2d(c, c, k, stride, pad, dilation, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)]


def _op(name: str, c: int, stride: int) -> nn.Module:
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else _Reduce2(c, c)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride, 1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride, 1, count_include_pad=False)
    kind, k = name[:3], int(name[-1])
    if kind == "sep":  # two depthwise-separable blocks, only the first strided
        return nn.Sequential(*_dw_pw(c, k, stride, 1), *_dw_pw(c, k, 1, 1))
    return nn.Sequential(*_dw_pw(c, k, stride, 2))  # dil


class _Cell(nn.Module):
    def __init__(self, pairs, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.pre0 = _Reduce2(c_pp, c) if reduction_prev else _conv_bn(c_pp, c, 1)
        self.pre1 = _conv_bn(c_p, c, 1)
        self.inputs = [i for _, i in pairs]
        self.ops = nn.ModuleList(_op(name, c, 2 if reduction and i < 2 else 1) for name, i in pairs)

    def forward(self, s0, s1):
        states = [self.pre0(s0), self.pre1(s1)]
        for n in range(len(self.ops) // 2):
            a, b = 2 * n, 2 * n + 1
            states.append(self.ops[a](states[self.inputs[a]]) + self.ops[b](states[self.inputs[b]]))
        return torch.cat(states[2:], dim=1)


class _Reference(nn.Module):
    def __init__(self, genotype, c: int = 48, classes: int = 1000, layers: int = 14):
        super().__init__()
        normal, reduce = genotype
        self.stem0 = nn.Sequential(_conv_bn(3, c // 2, 3, 2, 1, relu_first=False), _conv_bn(c // 2, c, 3, 2, 1))
        self.stem1 = _conv_bn(c, c, 3, 2, 1)
        c_pp, c_p, c_cur, reduction_prev = c, c, c, True
        self.cells = nn.ModuleList()
        self.aux_after = 2 * layers // 3
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            c_cur *= 2 if reduction else 1
            self.cells.append(_Cell(reduce if reduction else normal, c_pp, c_p, c_cur, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, 4 * c_cur
            if i == self.aux_after:
                c_aux = c_p
        self.auxiliary = nn.Sequential(
            nn.ReLU(), nn.AvgPool2d(5, 2, 0, count_include_pad=False), nn.Conv2d(c_aux, 128, 1, bias=False),
            nn.BatchNorm2d(128), nn.ReLU(), nn.Conv2d(128, 768, 2, bias=False), nn.ReLU(), nn.Flatten(),
            nn.Linear(768, classes))
        self.classifier = nn.Linear(c_p, classes)

    def forward(self, x):  # (B, 3, 224, 224)
        s0 = self.stem0(x)  # (B, C, 56, 56)
        s1 = self.stem1(s0)  # (B, C, 28, 28)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == self.aux_after:
                aux = self.auxiliary(s1)  # on the 7x7 maps of the second reduction cell
        return self.classifier(s1.mean((2, 3))), aux  # AvgPool(7) on 7x7 == the global mean


def _reference_counts(name: str) -> tuple[int, int, int]:
    """(parameters without the auxiliary head, with it, multiply-adds without it) of the reference."""
    net = _Reference(OFFICIAL[name]).eval()
    params = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("auxiliary"))
    total = sum(p.numel() for p in net.parameters())
    madds = [0]

    def count(module, _inp, out):
        per_position = module.weight[0].numel()  # (c_in / groups) * k * k, or in_features
        madds[0] += per_position * out.numel()

    for n, m in net.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not n.startswith("auxiliary"):
            m.register_forward_hook(count)
    with torch.no_grad():
        net(torch.zeros(1, 3, 224, 224))
    return params, total, madds[0]


# ---- nasc against the reference --------------------------------------------------------------------

# published mobile-setting figures: (parameters in millions, multiply-adds in millions), from the papers'
# ImageNet tables (DARTS Table 3; PC-DARTS Table 4, its ImageNet-searched cell; P-DARTS Table 3, CIFAR-10 cell)
PUBLISHED = {"darts_v2": (4.7, 574), "pcdarts_imagenet": (5.3, 597), "pdarts": (4.9, 557)}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a loaded 2-core machine: one intra-op thread is faster
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_dry_run_counts_equal_the_official_network(name):
    from typer.testing import CliRunner

    from nasc.cli import app

    params, with_aux, madds = _reference_counts(name)
    result = CliRunner().invoke(app, ["train", str(GENOTYPES / f"{name}.json"), "--space", "darts_imagenet",
                                      "--dry-run", "--input", "3x224x224"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert f"{params:,} parameters" in out and f"{with_aux:,} with the auxiliary head" in out
    assert f"{madds:,} multiply-adds" in out
    for setting in ("epochs = 250", "batch = 128", "lr = 0.1", "momentum = 0.9", "weight_decay = 3e-05",
                    "schedule = step", "schedule_gamma = 0.97", "schedule_every = 1", "clip = 5", "drop_path = 0.0",
                    "cutout = 0", "aux_weight = 0.4", "label_smoothing = 0.1"):
        assert f" {setting} " in f"{out} ", setting  # the official train_imagenet.py protocol
    published_params, published_madds = PUBLISHED[name]
    assert round(params / 1e6, 1) == published_params
    # conv and linear multiply-adds only; the papers do not say what else their figures count
    assert abs(madds / 1e6 - published_madds) / published_madds < 0.1


def test_reference_counts_are_the_known_ones():
    """Pinned, so that a change to the reference itself shows: DARTS V2 at C = 48 is the 4.72M of the logs."""
    assert _reference_counts("darts_v2") == (4_718_752, 5_979_528, 529_911_552)


def test_the_built_network_has_the_reference_layers_and_runs_at_224():
    from nasc.runtime.train import TrainRequest, prepare_train

    job = prepare_train(TrainRequest(genotype=str(GENOTYPES / "darts_v2.json"), space="darts_imagenet",
                                     input_shape=(3, 224, 224)))
    net = job.net.eval()
    reference = _Reference(OFFICIAL["darts_v2"])
    assert sorted(tuple(p.shape) for p in net.parameters()) == sorted(tuple(p.shape) for p in reference.parameters())
    shapes = job.ir.meta["shapes"]
    assert (shapes["stem"]["c_out"], shapes["stem"]["h_out"]) == (48, 56)  # the first cell's s0
    assert (shapes["layer0"]["c_out"], shapes["layer0"]["h_out"]) == (48, 28)  # its s1
    assert shapes["cell0"]["pre"] == [2, 1] and shapes["cell1"]["pre"] == [1, 1]  # FactorizedReduce on s0 only
    assert shapes["cell13"]["h_out"] == 7
    with torch.no_grad():
        logits, aux = net(torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)), with_aux=True)
    assert logits.shape == aux.shape == (1, 1000)
    assert torch.isfinite(logits).all() and torch.isfinite(aux).all()


def test_export_of_the_imagenet_network_runs(tmp_path, monkeypatch):
    """`nasc export` checks the file it writes against nasc's network (same weights, same output)."""
    import importlib.util

    from typer.testing import CliRunner

    from nasc.cli import app

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["export", str(GENOTYPES / "darts_v2.json"), "--space", "darts_imagenet",
                                      "-o", "darts_v2_imagenet.py"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "4,718,752 weights, 5,979,528 with the auxiliary head" in out and "checked" in out  # the paper: 4.7M
    spec = importlib.util.spec_from_file_location("darts_v2_imagenet", tmp_path / "darts_v2_imagenet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.INPUT_SHAPE == (3, 224, 224)
    net = module.build()
    assert sum(p.numel() for p in net.parameters()) == 5_979_528
    assert "cell0 = layers[\"cell0\"](stem, layer0)" in (tmp_path / "darts_v2_imagenet.py").read_text()


def test_the_space_compiles_at_its_search_size():
    """The space's own parameters are a search-sized network; `train:` sets C = 48 and 14 cells."""
    ir = compile_space("darts_imagenet")
    assert ir.input_shape == (3, 224, 224) and (ir.params["C"], ir.params["layers"]) == (16, 8)
    assert [l.kind for l in ir.layers()][:3] == ["stem", "layer", "cell"]
    assert (ir.train["C"], ir.train["layers"]) == (48, 14)
