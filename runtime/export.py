"""Exporting a derived network: standalone PyTorch source, TorchScript, ONNX.

`pytorch_source` writes the network as one readable Python file that imports
torch only: a builder function per op (`sep_conv_3x3(c)`), a class per cell
type whose `forward` is straight-line code (one line per edge), and a
`Network` whose submodules carry the same names as nasc's, so a state dict
saved from nasc loads into it strictly. The code is generated from the built
modules themselves (not re-derived from the IR), so it cannot disagree with
what nasc trains; `export_pytorch` still executes the file once and checks the
structure, the state dict and one output before it reports success.
"""

from __future__ import annotations

import copy
import keyword
import re
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasc import __version__
from nasc.compiler import genotype as G
from nasc.compiler.derive import specialise_to_genotype
from nasc.compiler.ir import SpaceIR
from nasc.errors import BuildError, NascError
from nasc.runtime import ops as O
from nasc.runtime.supernet import Cell, Network, build_network

FORMATS = ("pytorch", "torchscript", "onnx")
SUFFIX = {"pytorch": ".py", "torchscript": ".pt", "onnx": ".onnx"}


# ---------------------------------------------------------------- building and weights


def derived_network(ir: SpaceIR, genotype: G.Genotype) -> tuple[SpaceIR, Network]:
    """The genotype's IR and its network (eval mode), from a compiled space."""
    derived = specialise_to_genotype(ir, genotype)
    return derived, build_network(derived).eval()


def load_weights(net: Network, checkpoint: str | Path) -> None:
    """Load a state dict file (or a dict holding one under "net") into `net`, strictly."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise NascError(f"checkpoint {checkpoint} does not exist") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
        raise unreadable_checkpoint(checkpoint, e) from None
    if isinstance(state, dict) and isinstance(state.get("net"), dict):
        state = state["net"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise NascError(f"{checkpoint} holds no state dict",
                        hint="save one with torch.save(net.state_dict(), path) or as {'net': state_dict}")
    problems = state_dict_mismatch(net.state_dict(), state)
    if problems:
        raise NascError(f"checkpoint {checkpoint} does not fit this network: {problems}",
                        hint="export with the space, --set values, --input and genotype the weights were trained "
                             "with; a training run directory (nasc export RUN_DIR) records them all")
    net.load_state_dict(state, strict=True)


def unreadable_checkpoint(checkpoint: str | Path, error: Exception) -> NascError:
    """Why torch.load refused `checkpoint`, in words. torch's own text advises loading with
    weights_only=False (advice for a trusted file, which nasc cannot tell and does not follow), for
    pickled Python objects and for bytes torch.save never wrote alike; the reason is further down."""
    hint = "give a state dict saved with torch.save(net.state_dict(), path), or a training run's checkpoint.pt"
    text = str(error)
    reason = f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
    if "WeightsUnpickler error:" in text:
        after = text.split("WeightsUnpickler error:", 1)[1].strip()
        reason = after.splitlines()[0].split(" was not an allowed global")[0].strip() if after else reason
    if reason.startswith("Unsupported global"):
        return NascError(f"checkpoint {checkpoint} holds Python objects besides tensors ({reason}); "
                         "nasc loads only tensors from it", hint=hint)
    return NascError(f"cannot read checkpoint {checkpoint}: it is not a file torch.save wrote ({reason})", hint=hint)


def _first(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def state_dict_mismatch(own: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str:
    """One short line on how `given` differs from `own` (counts and the first few names), or "" when it fits."""
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    shaped = [k for k in own if k in given and tuple(own[k].shape) != tuple(given[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} of the network's {len(own)} entries are missing ({_first(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} are unexpected ({_first(unexpected)})")
    if shaped:
        k = shaped[0]
        parts.append(f"{len(shaped)} have another shape ({k}: {'x'.join(map(str, given[k].shape))} in the file, "
                     f"{'x'.join(map(str, own[k].shape))} here" + (", ..." if len(shaped) > 1 else "") + ")")
    return "; ".join(parts)


def example_input(ir: SpaceIR, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, *ir.input_shape, generator=g)


# ---------------------------------------------------------------- module → code


_DEFAULT_BN = nn.BatchNorm2d(1)


def _k(v: Any) -> str:
    """A kernel/stride/padding value: `3` for (3, 3)."""
    if isinstance(v, tuple) and len(set(v)) == 1:
        v = v[0]
    return repr(v)


class _Code(str):
    """Already rendered code (a channel expression), written as is."""


def _kw(pairs: list[tuple[str, Any, Any]]) -> str:
    """`, name=value` for each (name, value, default) whose value differs from the default."""
    return "".join(f", {n}={v if isinstance(v, _Code) else _k(v)}" for n, v, d in pairs if v != d)


def module_code(m: nn.Module, ch: Callable[[int], str] = str, indent: int = 0) -> str:
    """A constructor expression that rebuilds `m` (same class, arguments and child names); `ch` renders channels."""
    pad = " " * (indent + 4)
    if type(m) is nn.Sequential:
        if [n for n, _ in m.named_children()] != [str(i) for i in range(len(m))]:
            raise BuildError("export: a Sequential with named children cannot be written as code")
        body = "".join(f"{pad}{module_code(c, ch, indent + 4)},\n" for c in m)
        return f"nn.Sequential(\n{body}{' ' * indent})"
    if type(m) is nn.Conv2d:
        groups = _Code(ch(m.groups)) if m.groups != 1 else 1
        return (f"nn.Conv2d({ch(m.in_channels)}, {ch(m.out_channels)}, {_k(m.kernel_size)}"
                + _kw([("stride", m.stride, (1, 1)), ("padding", m.padding, (0, 0)),
                       ("dilation", m.dilation, (1, 1)), ("groups", groups, 1),
                       ("bias", m.bias is not None, True), ("padding_mode", m.padding_mode, "zeros")]) + ")")
    if type(m) is nn.BatchNorm2d:
        return (f"nn.BatchNorm2d({ch(m.num_features)}"
                + _kw([("eps", m.eps, _DEFAULT_BN.eps), ("momentum", m.momentum, _DEFAULT_BN.momentum),
                       ("affine", m.affine, True), ("track_running_stats", m.track_running_stats, True)]) + ")")
    if type(m) is nn.MaxPool2d:
        return (f"nn.MaxPool2d({_k(m.kernel_size)}, stride={_k(m.stride)}"
                + _kw([("padding", m.padding, 0), ("dilation", m.dilation, 1), ("ceil_mode", m.ceil_mode, False)])
                + ")")
    if type(m) is nn.AvgPool2d:
        return (f"nn.AvgPool2d({_k(m.kernel_size)}, stride={_k(m.stride)}"
                + _kw([("padding", m.padding, 0), ("ceil_mode", m.ceil_mode, False),
                       ("count_include_pad", m.count_include_pad, True),
                       ("divisor_override", m.divisor_override, None)]) + ")")
    if type(m) is nn.Linear:
        return f"nn.Linear({ch(m.in_features)}, {ch(m.out_features)}" + _kw([("bias", m.bias is not None, True)]) + ")"
    if type(m) in (nn.ReLU, nn.ReLU6):
        return f"nn.{type(m).__name__}(" + ("inplace=True" if m.inplace else "") + ")"
    if type(m) in (nn.Dropout, O.Dropout):
        return f"nn.Dropout(p={m.p!r}" + (", inplace=True" if m.inplace else "") + ")"
    if type(m) is nn.Flatten:
        return "nn.Flatten(" + ("" if (m.start_dim, m.end_dim) == (1, -1) else f"{m.start_dim}, {m.end_dim}") + ")"
    if type(m) in (nn.Identity, nn.Sigmoid, nn.Tanh):
        return f"nn.{type(m).__name__}()"
    if type(m) is nn.GELU:
        return "nn.GELU(" + ("" if m.approximate == "none" else f"approximate={m.approximate!r}") + ")"
    if type(m) is nn.SiLU:
        return "nn.SiLU(" + ("inplace=True" if m.inplace else "") + ")"
    if type(m) is O.Zero:
        return f"Zero({ch(m.c_in)}, {ch(m.c_out)}, stride={m.stride})"
    if type(m) is O.Noise:
        return f"Noise(stride={m.stride})"
    if type(m) is O.GlobalAvgPool:
        return "GlobalAvgPool()"
    if type(m) is O.FactorizedReduce:
        return (f"FactorizedReduce({ch(m.conv_1.in_channels)}, {ch(m.bn.num_features)}, "
                f"affine={m.bn.affine})")
    if type(m) is O.ResBlock:
        conv = m.conv_a[1]
        return f"ResBlock({ch(conv.in_channels)}, {ch(conv.out_channels)}, stride={conv.stride[0]})"
    raise BuildError(f"export: cannot write a {type(m).__name__} module as plain PyTorch code",
                     hint="plain PyTorch code covers nasc's built-in ops (and Conv2d, BatchNorm2d, pools, Linear, "
                          "ReLU, GELU, SiLU, Sigmoid, Tanh, Dropout, Sequential); a plugin op built from other "
                          "modules exports with --to torchscript or --to onnx (to=\"torchscript\" from Python)")


def _classes_used(net: nn.Module) -> set[str]:
    return {type(m).__name__ for m in net.modules()}


# the composite modules, as plain torch; each mirrors nasc.runtime.ops exactly (forward and child names)
_SUPPORT = {
    "Zero": '''
class Zero(nn.Module):
    """DARTS `none`: zeros shaped like the strided input (with c_out channels)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.c_in, self.c_out, self.stride = c_in, c_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        if self.c_in == self.c_out:
            return x[:, :, ::s, ::s].mul(0.0)
        b, _, h, w = x.shape
        return x.new_zeros(b, self.c_out, -(-h // s), -(-w // s))

    def extra_repr(self) -> str:
        return f"{self.c_in}, {self.c_out}, stride={self.stride}"
''',
    "Noise": '''
class Noise(nn.Module):
    """RobustDARTS `noise`: N(0, 1) noise shaped like the strided input."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        like = x[:, :, ::s, ::s]  # drawn in NCHW order, returned in the input's layout
        return torch.empty_like(like).copy_(torch.randn(like.shape, dtype=x.dtype, device=x.device))

    def extra_repr(self) -> str:
        return f"stride={self.stride}"
''',
    "FactorizedReduce": '''
class FactorizedReduce(nn.Module):
    """DARTS `FactorizedReduce`: two stride-2 1x1 convs, one shifted by a pixel, concatenated, then BN."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x[:, :, 1:, 1:], (0, x.shape[3] % 2, 0, x.shape[2] % 2))  # odd sizes: ceil(H/2)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))
''',
    "ResBlock": '''
def relu_conv_bn(c_in: int, c_out: int, k: int, stride: int, pad: int) -> nn.Sequential:
    return nn.Sequential(nn.ReLU(), nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad, bias=False),
                         nn.BatchNorm2d(c_out))


class ResBlock(nn.Module):
    """NAS-Bench-201 `ResNetBasicblock`: two ReLU-conv3x3-BN plus a pooled (or 1x1) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv_a = relu_conv_bn(c_in, c_out, 3, stride, 1)
        self.conv_b = relu_conv_bn(c_out, c_out, 3, 1, 1)
        if stride == 2:
            self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2, padding=0, ceil_mode=True),
                                            nn.Conv2d(c_in, c_out, 1, bias=False))
        elif c_in != c_out:
            self.downsample = relu_conv_bn(c_in, c_out, 1, 1, 0)
        else:
            self.downsample = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.downsample(x)
''',
    "GlobalAvgPool": '''
class GlobalAvgPool(nn.Module):
    """Average over the whole feature map, flattened to (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 1).flatten(1)
''',
    "Choice": '''
class Choice(nn.Module):
    """A chain layer's chosen op (kept as `edge` so state dict keys match the search network)."""

    def __init__(self, edge: nn.Module):
        super().__init__()
        self.edge = edge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.edge(x)
''',
}


# ---------------------------------------------------------------- source generation


class _Names:
    """Unique Python identifiers derived from IR names."""

    def __init__(self, taken: set[str]):
        self.taken = set(taken)

    def make(self, raw: str, fallback: str = "v") -> str:
        name = re.sub(r"\W", "_", raw)
        if not name or name[0].isdigit():
            name = f"{fallback}_{name}"
        if keyword.iskeyword(name):
            name += "_"
        base, k = name, 2
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name


_RESERVED = {"torch", "nn", "F", "os", "Path", "self", "x", "layers", "logits", "aux", "with_aux", "edge",
             "build", "Network", "WEIGHTS", "INPUT_SHAPE", "weights", "net", *_SUPPORT, "relu_conv_bn"}


class _Helpers:
    """One builder function per (op, stride, code shape); instances that differ only in channels share it."""

    def __init__(self, ir: SpaceIR, names: _Names):
        self.ir = ir
        self.names = names
        self.functions: dict[tuple[str, int, str], tuple[str, list[str]]] = {}  # key -> (name, params)
        self.source: list[str] = []

    def call(self, op: str, stride: int, module: nn.Module, c_in: int, c: int) -> str:
        used: set[str] = set()

        def ch(n: int) -> str:
            if n == c:
                used.add("c")
                return "c"
            if n == c_in:
                used.add("c_in")
                return "c_in"
            return str(n)

        body = module_code(module, ch, 4)
        key = (op, stride, body)
        if key not in self.functions:
            params = [p for p in ("c_in", "c") if p in used]
            raw = op if stride == 1 else f"{op}_s{stride}"
            name = self.names.make(raw, "op")  # a second code shape of the same op gets a suffix
            self.functions[key] = (name, params)
            self.source.append(self._function(name, params, op, stride, body))
        name, params = self.functions[key]
        values = {"c_in": c_in, "c": c}
        return f"{name}({', '.join(str(values[p]) for p in params)})"

    def _function(self, name: str, params: list[str], op: str, stride: int, body: str) -> str:
        steps = self.ir.impls.get(f"{op}@{stride}", ())
        pipeline = " > ".join(s.prim for s in steps if s.when != "search") or "identity"
        sig = ", ".join(f"{p}: int" for p in params)
        what = "The cells' input preprocessing" if op == "preprocess" else f"`{op}`"
        return (f"def {name}({sig}) -> nn.Module:\n"
                f'    """{what} at stride {stride}: {pipeline}."""\n'
                f"    return {body}\n")


def _shape(s: dict) -> str:
    c, h = s.get("c_out"), s.get("h_out")
    return f"(B, {c})" if h is None else f"(B, {c}, {h}, {h})"


def pytorch_source(ir: SpaceIR, net: Network, *, genotype: G.Genotype | None = None,
                   weights_file: str | None = None) -> str:
    """Standalone Python source (torch only) defining `Network` and `build()` for a derived network."""
    if net.alphas:
        raise BuildError("export: the network still has architecture parameters; export a derived network")
    names = _Names(_RESERVED)
    helpers = _Helpers(ir, names)
    shapes = ir.meta["shapes"]
    layers = {layer.id: layer for layer in ir.layers()}
    cell_classes: dict[tuple, tuple[str, str]] = {}  # plan signature -> (class name, source)
    init: list[str] = []
    fwd: list[str] = []
    var: dict[str, str] = {}
    logits = aux = None
    for lid, kind, sources, _group in net.schedule:
        module = net.layers[lid]
        layer = layers[lid]
        s = shapes[lid]
        if kind == "cell":
            cls = _cell_class(ir, layer.cell, module, cell_classes, names)
            init.append(_cell_init(ir, lid, layer, module, cls, helpers, s))
        elif kind == "choice":
            call = helpers.call(layer.candidates[0], layer.stride, module.edge, s["c_in"][0], layer.width)
            init.append(f'        self.layers["{lid}"] = Choice({call})  # {layer.candidates[0]}\n')
        else:
            init.append(f'        self.layers["{lid}"] = {module_code(module, str, 8)}\n')
        args = ", ".join(var[src] for src in sources) if sources else "x"
        if kind == "head":
            logits = "logits"
            fwd.append(f'        logits = layers["{lid}"]({args})  # {_shape(s)}\n')
        elif kind == "aux":
            aux = f'layers["{lid}"]({args})'
        else:
            var[lid] = names.make(lid, "layer")
            expr, what = f'layers["{lid}"]({args})', f"{layer.cell} cell" if kind == "cell" else kind
            if kind == "choice":
                what = layer.candidates[0]
                if module.residual:  # the identity shortcut, explicit here as in nasc's Choice
                    expr, what = f"{expr} + {args}", f"{what}, residual"
            fwd.append(f"        {var[lid]} = {expr}  # {what}: {_shape(s)}\n")
    if logits is None:
        fwd.append("        logits = None  # the space has no head\n")
    fwd.append("        if with_aux:\n")
    fwd.append(f"            return logits, {aux or 'None'}\n")
    fwd.append("        return logits\n")

    used = _classes_used(net)
    support = [src for name, src in _SUPPORT.items() if name in used]
    params = ", ".join(f"{k}={v}" for k, v in sorted(ir.params.items()))
    if genotype is None:
        geno = "(not recorded)"
    else:  # DARTS or NB201 notation for cells; the one-line canonical form when there are layers
        geno = G.canonical_str(genotype) if genotype.layers else G.to_text(genotype)
    geno = geno.replace("\\", "\\\\").replace('"""', '\\"""')
    geno_lines = [w for line in geno.splitlines()
                  for w in textwrap.wrap(line, 100, break_long_words=True, break_on_hyphens=False)]
    header = (f'"""The `{ir.name}` network of one genotype, as plain PyTorch (generated by `nasc export`, '
              f"nasc {__version__}).\n\n"
              f"Space: {ir.name} ({params}), input {'x'.join(map(str, ir.input_shape))}, "
              f"fingerprint {ir.meta.get('fingerprint')}.\n"
              "Genotype:\n" + "".join(f"    {line}\n" for line in geno_lines) +
              "\nThis file needs torch only. Submodule names are nasc's, so a state dict saved from nasc\n"
              "loads strictly: `net = build(weights=PATH)`; then `net.eval()` and `net(x)` (logits), or\n"
              "`net(x, with_aux=True)` for (logits, aux logits).\n"
              '"""\n\n')
    weights_default = "None"
    consts = f"INPUT_SHAPE = {tuple(ir.input_shape)!r}\n"
    if weights_file:
        consts += f"WEIGHTS = Path(__file__).with_name({weights_file!r})  # exported with the network\n"
        weights_default = "WEIGHTS"
    out = [header,
           "from __future__ import annotations\n\n",
           "import os\nfrom pathlib import Path\n\n",
           "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n",
           consts, "\n"]
    for src in support:
        out.append("\n" + src.lstrip("\n") + "\n")
    for src in helpers.source:
        out.append("\n" + src + "\n")
    for _name, src in cell_classes.values():
        out.append("\n" + src + "\n")
    out.append("\nclass Network(nn.Module):\n"
               f'    """{_network_doc(ir, net)}"""\n\n'
               "    def __init__(self) -> None:\n"
               "        super().__init__()\n"
               "        self.layers = nn.ModuleDict()\n")
    out += init
    out.append("\n    def forward(self, x: torch.Tensor, with_aux: bool = False):\n"
               "        layers = self.layers\n")
    out += fwd
    out.append(f"\n\ndef build(weights: str | os.PathLike | None = {weights_default}) -> Network:\n"
               '    """The network; with `weights` (a state dict file), its trained weights loaded strictly."""\n'
               "    net = Network()\n"
               "    if weights is not None:\n"
               '        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))\n'
               "    return net\n\n\n"
               'if __name__ == "__main__":\n'
               "    net = build().eval()\n"
               "    with torch.no_grad():\n"
               "        print(net(torch.randn(2, *INPUT_SHAPE)).shape)\n")
    return "".join(out)


def _network_doc(ir: SpaceIR, net: Network) -> str:
    kinds: dict[str, int] = {}
    for _, kind, _, _ in net.schedule:
        kinds[kind] = kinds.get(kind, 0) + 1
    parts = [f"{n} {k}{'s' if n > 1 else ''}" for k, n in kinds.items()]
    n_weights = sum(p.numel() for p in net.parameters())
    return f"{ir.name}: {', '.join(parts)}; {n_weights:,} weights."


def _cell_class(ir: SpaceIR, cell: str, module: Cell, classes: dict, names: _Names) -> str:
    """The class for one cell type (shared by its instances); straight-line forward, one line per edge."""
    g = ir.cells[cell]
    plan = [(idx, tuple((k, src) for k, src, _ in edges), combine) for idx, edges, combine, _ in module.plan]
    key = (cell, tuple(plan), module.output[0], tuple(module.output[1]))
    if key in classes:
        return classes[key][0]
    raw = "".join(p.capitalize() for p in re.split(r"[^A-Za-z0-9]+", cell) if p) or "Cell"
    cls = names.make(raw if raw.lower().endswith("cell") else raw + "Cell", "Cell")
    states = ir.cell_states(cell)
    n_in = len(g.graph["inputs"])
    local = _Names({"self", "edge", "torch", "nn", "F", "x"})
    var = {i: local.make(states[i], "s") for i in range(len(states))}
    ops = {e.key: e.candidates[0] for e in ir.cell_edges(cell)}
    lines = [f"        {var[i]} = self.pre[{i}]({var[i]})\n" for i in range(n_in)]
    zeros = False
    for i, (idx, edges, combine) in enumerate(plan):
        if idx != n_in + i:
            raise BuildError(f"export: cell {cell!r} computes its nodes out of order")
        v = var[idx]
        if not edges:  # a constant zero state; its shape differs per instance, so the instance holds it
            zeros = True
            lines.append(f'        {v} = {var[0]}.new_zeros({var[0]}.shape[0], *self.zeros["{states[idx]}"])'
                         f"  # every edge into {states[idx]} is none\n")
            continue
        terms = [(f'edge["{k}"]({var[src]})', ops.get(k, "?")) for k, src in edges]
        if len(terms) == 1:
            lines.append(f"        {v} = {terms[0][0]}  # {terms[0][1]}\n")
        else:
            first, *rest = terms
            lines.append(f"        {v} = ({first[0]}  # {first[1]}\n")
            for j, (t, op) in enumerate(rest):
                close = ")" if j == len(rest) - 1 else ""
                lines.append(f"{' ' * (len(v) + 12)}+ {t}{close}  # {op}\n")
            if combine == "mean":
                lines.append(f"        {v} = {v} / {len(terms)}  # mean of the inputs\n")
    kind, idx = module.output
    if kind == "concat":
        lines.append(f"        return torch.cat([{', '.join(var[i] for i in idx)}], dim=1)\n")
    else:
        lines.append(f"        return {var[idx[0]]}\n")
    inputs = ", ".join(f"{var[i]}: torch.Tensor" for i in range(n_in))
    n_nodes = len(plan)
    out_desc = f"concat({', '.join(states[i] for i in idx)})" if kind == "concat" else states[idx[0]]
    src = (f"class {cls}(nn.Module):\n"
           f'    """The {cell!r} cell: {n_in} input(s), {n_nodes} node(s), output {out_desc}."""\n\n'
           "    def __init__(self, pre: list[nn.Module], edges: dict[str, nn.Module]"
           + (", zeros: dict[str, tuple[int, int, int]]" if zeros else "") + "):\n"
           "        super().__init__()\n"
           "        self.pre = nn.ModuleList(pre)  # per input: preprocessing (channels, resolution)\n"
           '        self.edges = nn.ModuleDict(edges)  # "dst<-src" -> op\n'
           + ("        self.zeros = zeros  # node -> (C, H, W) of a node no edge reaches\n" if zeros else "")
           + "\n"
           f"    def forward(self, {inputs}) -> torch.Tensor:\n"
           "        edge = self.edges\n" + "".join(lines))
    classes[key] = (cls, src)
    return cls


def _cell_init(ir: SpaceIR, lid: str, layer, module: Cell, cls: str, helpers: _Helpers, s: dict) -> str:
    width = s["width"]
    pre = []
    for slot, stride in enumerate(s["pre"]):
        m = module.pre[slot]
        pre.append(module_code(m) if stride is None else helpers.call("preprocess", stride, m, s["c_in"][slot], width))
    ops = {e.key: e for e in ir.cell_edges(layer.cell)}
    edges = []
    for key, m in module.edges.items():
        e = ops[key]
        c_src = s["states"][e.src][0]
        edges.append(f'                "{key}": {helpers.call(e.candidates[0], e.stride, m, c_src, width)},\n')
    states = ir.cell_states(layer.cell)
    zeros = {states[idx]: (zero[0], zero[1], zero[1]) for idx, entries, _, zero in module.plan if not entries}
    return (f'        self.layers["{lid}"] = {cls}(\n'
            f"            pre=[{', '.join(pre)}],\n"
            "            edges={\n" + "".join(edges) + "            },\n"
            + (f"            zeros={zeros!r},\n" if zeros else "")
            + "        )\n")


# ---------------------------------------------------------------- writing and checking


def load_source(path: str | Path, name: str = "nasc_exported") -> Any:
    """Import a generated file as a fresh module (not entered in sys.modules)."""
    import importlib.machinery
    import importlib.util

    # an explicit loader: without one, a file not named *.py (`-o net.txt`) has no spec at all
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_export(net: Network, exported: nn.Module, x: torch.Tensor) -> None:
    """Raise BuildError unless `exported` has nasc's leaves, takes its state dict strictly and computes the same."""
    def leaves(root: nn.Module) -> dict[str, str]:
        return {n: repr(m) for n, m in root.named_modules()
                if n and not list(m.children()) and not isinstance(m, (nn.ParameterDict, nn.ParameterList))}

    ours, theirs = leaves(net), leaves(exported)
    if ours != theirs:
        diff = sorted(set(ours.items()) ^ set(theirs.items()))[:3]
        raise BuildError(f"export: the generated network's modules differ from nasc's: {diff}")
    try:
        exported.load_state_dict(net.state_dict(), strict=True)
    except RuntimeError as e:
        raise BuildError(f"export: the generated network does not take nasc's state dict: {e}") from None
    if any(isinstance(m, O.Noise) for m in net.modules()):
        return  # random by design: outputs cannot be compared
    # The generated code runs in NCHW; a network trained in channels-last would pick other kernels and
    # differ by rounding. Compare like with like, on a copy so that `net` keeps its layout.
    reference = copy.deepcopy(net).to(memory_format=torch.contiguous_format).eval()
    exported.eval()
    with torch.no_grad():
        same = torch.equal(reference(x.contiguous()), exported(x.contiguous()))
    if not same:
        raise BuildError("export: the generated network's output differs from nasc's (a bug in nasc export)")


def export_pytorch(ir: SpaceIR, net: Network, out: str | Path, *, genotype: G.Genotype | None = None,
                   with_weights: bool = False) -> list[Path]:
    """Write the standalone source (and, with weights, `OUT.pt` beside it); checked before returning."""
    out = Path(out)
    weights = out.with_suffix(".pt") if with_weights else None
    if weights == out:
        raise NascError(f"the output {out} would be overwritten by its own weights file",
                        hint="give the Python file a .py suffix")
    src = pytorch_source(ir, net, genotype=genotype, weights_file=weights.name if weights else None)
    written = [out]
    try:
        out.write_text(src, encoding="utf-8")
        if weights is not None:
            torch.save(net.state_dict(), weights)
            written.append(weights)
    except OSError as e:
        raise NascError(f"cannot write {out}: {e.strerror or e}") from None
    module = load_source(out)
    check_export(net, module.Network(), example_input(ir))
    return written


def export_torchscript(ir: SpaceIR, net: Network, out: str | Path) -> list[Path]:
    """A TorchScript module traced in eval mode (logits only), written with torch.jit.save."""
    net.eval()
    x = example_input(ir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings on shape arithmetic; torch.jit's deprecation notice
        try:
            traced = torch.jit.trace(net, (x,))
        except Exception as e:  # noqa: BLE001 - tracing failures are reported, not raised raw
            raise BuildError(f"torchscript: tracing the network failed: {e}") from None
        try:
            torch.jit.save(traced, str(out))
        except (OSError, RuntimeError) as e:
            raise NascError(f"cannot write {out}: {e}") from None
    return [Path(out)]


class _Logits(nn.Module):
    """`net(x)` with a plain one-argument forward, for exporters that inspect the signature."""

    def __init__(self, net: Network):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def export_onnx(ir: SpaceIR, net: Network, out: str | Path) -> list[Path]:
    """An ONNX graph (batch dimension dynamic), checked with onnx.checker."""
    try:
        import onnx
    except ImportError:
        raise NascError("exporting to ONNX needs the onnx package, which is not installed",
                        hint="pip install onnx") from None
    net.eval()
    x = example_input(ir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(_Logits(net), (x,), str(out), input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
        except Exception as e:  # noqa: BLE001
            raise BuildError(f"onnx: exporting the network failed: {e}") from None
    try:
        onnx.checker.check_model(onnx.load(str(out)))
    except Exception as e:  # noqa: BLE001
        raise BuildError(f"onnx: the exported model does not pass onnx.checker: {e}") from None
    return [Path(out)]


def export(ir: SpaceIR, net: Network, out: str | Path, *, to: str = "pytorch", genotype: G.Genotype | None = None,
           with_weights: bool = False) -> list[Path]:
    """Write `net` in format `to`; returns the files written."""
    if to == "pytorch":
        return export_pytorch(ir, net, out, genotype=genotype, with_weights=with_weights)
    if to == "torchscript":
        return export_torchscript(ir, net, out)
    if to == "onnx":
        return export_onnx(ir, net, out)
    raise NascError(f"unknown export format {to!r}", hint=f"use one of {', '.join(FORMATS)}")
