"""`nasc export`: standalone PyTorch code that computes exactly what nasc computes, TorchScript and ONNX."""

import functools
import importlib.util
import re
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from nasc.cli import app
from nasc.compiler import genotype as G
from nasc.compiler.pipeline import compile_space
from nasc.errors import NascError
from nasc.runtime import export as X

runner = CliRunner()

DARTS_V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
            "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
            "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
# node 1 is reached by `none` only (a constant zero state) and x3 <- x2 is `none` (the edge is dropped)
NB201 = "|none~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|"
SMALL = {"darts": (DARTS_V2, ["--set", "C=8", "--set", "layers=5"], {"C": 8, "layers": 5}),
         "nb201": (NB201, ["--set", "C=8", "--set", "N=2"], {"C": 8, "N": 2})}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@functools.cache
def derive(space: str):
    text, _, params = SMALL[space]
    genotype = G.parse_any(text)
    d, net = X.derived_network(compile_space(space, params=params), genotype)
    return space, d, net, genotype


@pytest.fixture(params=["darts", "nb201"])
def derived(request):
    return derive(request.param)


def randomise(net: torch.nn.Module, seed: int = 0) -> None:
    """Non-initial weights and BN running statistics, so an export cannot match by accident."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.num_batches_tracked.fill_(7)


def import_file(path, name="exported_net"):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fresh(derived):
    """A new nasc network of the same derived IR (the fixture's stays untouched)."""
    from nasc.runtime.supernet import build_network

    return build_network(derived[1]).eval()


@pytest.mark.parametrize("random_weights", [False, True], ids=["initial", "random"])
def test_pytorch_export_loads_nasc_state_dict_and_matches_exactly(derived, random_weights, tmp_path):
    space, ir, _, genotype = derived
    net = fresh(derived)
    if random_weights:
        randomise(net)
    out = tmp_path / f"{space}_net.py"
    X.export(ir, net, out, to="pytorch", genotype=genotype)
    module = import_file(out)
    exported = module.build()
    exported.load_state_dict(net.state_dict(), strict=True)
    exported.eval()
    x = torch.randn(4, *ir.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = net(x, with_aux=True), exported(x, with_aux=True)
    assert torch.equal(ours[0], theirs[0])
    if ours[1] is None:
        assert theirs[1] is None
    else:
        assert torch.equal(ours[1], theirs[1])
    assert sorted(exported.state_dict()) == sorted(net.state_dict())


def test_generated_code_is_standalone_and_runs(derived, tmp_path):
    space, ir, net, genotype = derived
    out = tmp_path / "standalone.py"
    X.export(ir, net, out, genotype=genotype)
    src = out.read_text()
    assert not re.search(r"^\s*(import|from)\s+nasc\b", src, re.M)
    check = ("import sys, standalone; net = standalone.build().eval(); "
             "assert not [m for m in sys.modules if m == 'nasc' or m.startswith('nasc.')]; "
             "import torch; print(tuple(net(torch.randn(2, *standalone.INPUT_SHAPE)).shape))")
    proc = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(2, 10)"


def test_forward_is_straight_line_one_line_per_edge(derived):
    _, ir, net, genotype = derived
    src = X.pytorch_source(ir, net, genotype=genotype)
    for cell in ir.cells:
        for e in ir.cell_edges(cell):
            assert src.count(f'edge["{e.key}"]') >= 1, e.key
    # one class per cell type, each edge call written once in it
    n_edges = sum(len(ir.cell_edges(c)) for c in ir.cells)
    assert src.count('edge["') == n_edges
    forward = src[src.index("    def forward(self, x"):]
    assert "for " not in forward.split("def build")[0]


def test_darts_v2_code_reads_like_the_paper():
    _, ir, net, genotype = derive("darts")
    src = X.pytorch_source(ir, net, genotype=genotype)
    assert "class NormalCell(nn.Module)" in src and "class ReduceCell(nn.Module)" in src
    assert "def sep_conv_3x3(c: int) -> nn.Module:" in src
    assert '"n3<-n0": dil_conv_3x3(8),' in src
    assert "return torch.cat([n0, n1, n2, n3], dim=1)" in src
    assert "FactorizedReduce(" in src and "def build(" in src


def test_checkpoint_is_exported_beside_the_code_and_loaded_by_build(tmp_path):
    text, sets, params = SMALL["darts"]
    ir = compile_space("darts", params=params)
    _, net = X.derived_network(ir, G.parse_any(text))
    randomise(net, seed=3)
    torch.save({"net": net.state_dict(), "epoch": 5}, tmp_path / "trained.pt")
    result = runner.invoke(app, ["export", text, "--space", "darts", *sets, "--checkpoint", "trained.pt",
                                 "-o", "model.py"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "model.py").is_file() and (tmp_path / "model.pt").is_file()
    module = import_file(tmp_path / "model.py", "model_with_weights")
    exported = module.build().eval()  # WEIGHTS, next to the file, is the default
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), exported(x))
    again = module.build(weights=tmp_path / "model.pt").eval()
    with torch.no_grad():
        assert torch.equal(exported(x), again(x))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_export_reproduces_outputs(tmp_path):
    text, _, params = SMALL["darts"]
    ir = compile_space("darts", params=params)
    d, net = X.derived_network(ir, G.parse_any(text))
    randomise(net, seed=4)
    (path,) = X.export(d, net, tmp_path / "net.ts.pt", to="torchscript")
    loaded = torch.jit.load(str(path))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), loaded(x))


def test_onnx_export_passes_the_checker(tmp_path):
    onnx = pytest.importorskip("onnx")
    text, _, params = SMALL["nb201"]
    ir = compile_space("nb201", params=params)
    d, net = X.derived_network(ir, G.parse_any(text))
    (path,) = X.export(d, net, tmp_path / "net.onnx", to="onnx")
    onnx.checker.check_model(onnx.load(str(path)))
    try:
        import onnxruntime
    except ImportError:
        return
    x = torch.randn(3, 3, 32, 32)  # another batch size than the export's: the batch dimension is dynamic
    (got,) = onnxruntime.InferenceSession(str(path)).run(None, {"input": x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), net.eval()(x), atol=1e-4)


def test_onnx_without_the_package_says_how_to_install(monkeypatch, tmp_path):
    text, _, params = SMALL["nb201"]
    d, net = X.derived_network(compile_space("nb201", params=params), G.parse_any(text))
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with pytest.raises(NascError) as info:
        X.export(d, net, tmp_path / "net.onnx", to="onnx")
    assert "pip install onnx" in info.value.render()


def test_load_weights_accepts_a_bare_state_dict_and_rejects_a_foreign_one(tmp_path):
    text, _, params = SMALL["darts"]
    ir = compile_space("darts", params=params)
    _, net = X.derived_network(ir, G.parse_any(text))
    randomise(net, seed=5)
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    _, other = X.derived_network(ir, G.parse_any(text))
    X.load_weights(other, tmp_path / "sd.pt")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
    _, wrong = X.derived_network(compile_space("darts", params={"C": 16, "layers": 5}), G.parse_any(text))
    with pytest.raises(NascError, match="does not fit"):
        X.load_weights(wrong, tmp_path / "sd.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(NascError, match="cannot read checkpoint .*: it is not a file torch.save wrote"):
        X.load_weights(wrong, tmp_path / "junk.pt")


def test_a_checkpoint_of_python_objects_is_refused_without_torchs_advice_to_trust_it(tmp_path):
    """torch's message said to re-run with weights_only=False, advice nasc does not follow for a file it
    cannot vouch for; the error names the object instead."""
    import argparse

    text, _, params = SMALL["darts"]
    _, net = X.derived_network(compile_space("darts", params=params), G.parse_any(text))
    torch.save({"net": net.state_dict(), "args": argparse.Namespace(lr=0.1)}, tmp_path / "objects.pt")
    with pytest.raises(NascError, match=r"holds Python objects besides tensors \(Unsupported global: GLOBAL "
                                        r"argparse.Namespace\)") as info:
        X.load_weights(net, tmp_path / "objects.pt")
    assert "weights_only" not in info.value.message and "torch.save(net.state_dict(), path)" in info.value.hint


# ---------------------------------------------------------------- CLI


def test_cli_export_pytorch_default_name(tmp_path):
    text, sets, _ = SMALL["nb201"]
    result = runner.invoke(app, ["export", text, "--space", "nb201", *sets])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "nb201_net.py").is_file()
    assert "untrained" in result.output and "checked" in result.output


def test_cli_export_pytorch_to_a_file_not_named_py(tmp_path):
    # importing the generated file for the check was an internal error (no module spec) for any other suffix
    text, sets, _ = SMALL["nb201"]
    result = runner.invoke(app, ["export", text, "--space", "nb201", *sets, "-o", "net.txt"])
    assert result.exit_code == 0, result.output
    assert "checked" in result.output
    assert "class Network" in (tmp_path / "net.txt").read_text()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_cli_export_torchscript(tmp_path):
    text, sets, _ = SMALL["nb201"]
    result = runner.invoke(app, ["export", text, "--space", "nb201", *sets, "--to", "torchscript", "-o", "n.pt"])
    assert result.exit_code == 0, result.output
    assert torch.jit.load(str(tmp_path / "n.pt"))(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("args, message", [
    (["Genotype(normal=[('sep_conv_3x3', 0)", "--space", "darts"], "invalid DARTS genotype"),
    (["missing.json", "--space", "darts"], "neither a file"),
    ([NB201, "--space", "darts"], "does not fit the space"),
    ([DARTS_V2, "--space", "no_such_space"], "no_such_space"),
    ([DARTS_V2, "--space", "darts", "--checkpoint", "nope.pt"], "does not exist"),
])
def test_cli_export_bad_input_exits_1_without_traceback(args, message):
    result = runner.invoke(app, ["export", *args])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_export_unknown_format_is_a_usage_error():
    result = runner.invoke(app, ["export", NB201, "--space", "nb201", "--to", "keras"])
    assert result.exit_code == 2


def test_export_defaults_to_the_evaluation_network_of_the_train_block(tmp_path):
    """Without --set, the exported DARTS V2 is the paper's 3.3M network (C = 36, 20 cells), as `nasc train` builds."""
    import importlib.util
    from pathlib import Path

    from typer.testing import CliRunner

    from nasc.cli import app

    genotype = Path(__file__).resolve().parents[2] / "examples" / "genotypes" / "darts_v2.json"
    out = tmp_path / "v2.py"
    result = CliRunner().invoke(app, ["export", str(genotype), "--space", "darts", "--to", "pytorch", "-o", str(out)])
    assert result.exit_code == 0, result.output
    spec = importlib.util.spec_from_file_location("v2", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.build()
    assert sum(p.numel() for n, p in net.named_parameters() if "aux" not in n) == 3_349_342
    # the count printed is the papers' (and `nasc train`'s): the auxiliary head, kept in the file, left out
    total = sum(p.numel() for p in net.parameters())
    assert f"3,349,342 weights, {total:,} with the auxiliary head" in " ".join(result.output.split())


def test_a_foreign_checkpoint_is_one_short_error_with_counts_and_a_hint(tmp_path):
    text, _, params = SMALL["darts"]
    _, net = X.derived_network(compile_space("darts", params=params), G.parse_any(text))
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    _, wrong = X.derived_network(compile_space("darts", params={"C": 16, "layers": 4}), G.parse_any(text))
    with pytest.raises(NascError) as info:
        X.load_weights(wrong, tmp_path / "sd.pt")
    msg = info.value.message
    assert re.search(r"\d+ of the network's \d+ entries are missing \(layers\.", msg)
    assert re.search(r"\d+ are unexpected \(layers\.", msg) and "have another shape (" in msg
    assert "Missing key(s)" not in msg and len(msg) < 600
    assert "nasc export RUN_DIR" in info.value.hint


def test_the_cell_exported_concatenates_the_genotype_concat(tmp_path):
    text = DARTS_V2.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[2, 3, 4]")
    ir, net = X.derived_network(compile_space("darts", params={"C": 4, "layers": 5}), G.parse_any(text))
    randomise(net)
    X.export(ir, net, tmp_path / "c3.py", to="pytorch", genotype=G.parse_any(text), with_weights=True)
    code = (tmp_path / "c3.py").read_text()
    assert "output concat(n0, n1, n2)." in code and "return torch.cat([n0, n1, n2], dim=1)" in code
    assert "return torch.cat([n0, n1, n2, n3], dim=1)" in code  # the reduction cell keeps its four
    exported = import_file(tmp_path / "c3.py", "c3").build()
    assert sum(p.numel() for p in exported.parameters()) == sum(p.numel() for p in net.parameters())


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A one-epoch training run of a tiny DARTS V2 (C = 4, 3 cells): its weights are not the initial ones."""
    run = tmp_path_factory.mktemp("train") / "run"
    result = runner.invoke(app, ["train", DARTS_V2, "--set", "C=4", "--set", "layers=3", "--epochs", "1",
                                 "--opt", "batch=512", "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    return run


def test_a_training_run_exports_its_trained_network(trained_run, tmp_path):
    result = runner.invoke(app, ["export", str(trained_run), "-o", "t.py"])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "untrained" not in out and "weights.pt" in out
    weights = torch.load(trained_run / "weights.pt")
    exported = import_file(tmp_path / "t.py", "t_run").build()
    state = exported.state_dict()
    assert state.keys() == weights.keys() and all(torch.equal(state[k], weights[k]) for k in weights)
    assert G.load(trained_run / "genotype.json").space == "darts"  # --space need not be repeated
    # the same through the API, and --space naming the run's own space changes nothing
    import nasc

    assert nasc.export(str(trained_run), tmp_path / "api.py") == [tmp_path / "api.py", tmp_path / "api.pt"]
    again = runner.invoke(app, ["export", str(trained_run), "--space", "darts", "-o", "t2.py"])
    assert again.exit_code == 0 and "untrained" not in again.output


def test_a_training_run_exported_at_another_size_says_its_weights_do_not_fit(trained_run):
    result = runner.invoke(app, ["export", str(trained_run), "--set", "C=8"])
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert "does not fit this network" in out and "have another shape" in out
    assert "Missing key(s)" not in out and "Traceback" not in out


def test_a_search_run_exports_the_network_nasc_train_builds_for_its_data(tmp_path):
    """A search on the 8x8 digits exports (CLI and API) the network `nasc train RUN` trains: the digits' input
    and classes, not the space's 3x32x32 one (which has other weights)."""
    import json

    import nasc

    run = tmp_path / "search"
    run.mkdir()
    G.save(G.parse_any(DARTS_V2), run / "genotype.json")  # what a search on the digits records, in short
    (run / "config.json").write_text(json.dumps({"space": "darts", "input": [1, 8, 8], "search": {"dataset": "digits"},
                                                 "data": {"name": "digits", "shape": [1, 8, 8], "classes": 10}}))
    tiny = ["--set", "C=4", "--set", "layers=3"]
    dry = runner.invoke(app, ["train", str(run), "--dry-run", *tiny])
    assert dry.exit_code == 0, dry.output
    trained = int(re.search(r"([\d,]+) parameters", dry.output).group(1).replace(",", ""))
    result = runner.invoke(app, ["export", str(run), *tiny, "-o", "s.py"])
    assert result.exit_code == 0, result.output
    assert "input 1x8x8" in " ".join(result.output.split())
    [api] = nasc.export(str(run), tmp_path / "api_s.py", params={"C": 4, "layers": 3})
    for path in (tmp_path / "s.py", api):
        exported = import_file(path, path.stem).build()
        assert sum(p.numel() for p in exported.parameters()) == trained
    # --input chooses another network, the space's own classes (as `nasc train --dry-run --input` counts)
    other = runner.invoke(app, ["export", str(run), *tiny, "--input", "3x32x32", "-o", "c.py"])
    assert other.exit_code == 0 and "input 3x32x32" in " ".join(other.output.split())


PLUGIN_SPACE = """
space toy(C = 4, classes = 10)
op cg = conv_gelu_test
op odd = odd_test
cell c(x):
    nodes n0
    edge x -> n0: [cg, odd, identity]
    output n0
network:
    input 1 x 8 x 8
    stem conv(3, out = C) > bn
    stack 2 x c
    head global_avg_pool > linear(classes)
"""


@pytest.fixture
def plugin_ops():
    """Two plugin ops: a 3x3 conv then GELU (stock torch modules), and a module class of the plugin's own."""
    from torch import nn

    from nasc.plugins import register_op, unregister_primitive

    class Odd(nn.Module):
        def forward(self, x):
            return x * 0.5

    register_op("conv_gelu_test", n_params=lambda c_in, c_out, args, affine: 9 * c_in * c_out)(
        lambda c_in, c_out, args, *, affine: nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                                                           nn.GELU()))
    register_op("odd_test")(lambda c_in, c_out, args, *, affine: Odd())
    yield
    unregister_primitive("conv_gelu_test")
    unregister_primitive("odd_test")


@pytest.mark.parametrize("choice", [0, 1])
def test_plugin_ops_export_as_code_when_made_of_stock_modules_else_the_error_says_torchscript(
        plugin_ops, tmp_path, choice):
    ir = compile_space("toy.nas", text=PLUGIN_SPACE)
    op = ("cg", "odd")[choice]
    genotype = G.Genotype(cells={"c": G.GenoCell(n_inputs=1, n_nodes=1, edges=[G.GenoEdge(node=1, input=0, op=op)],
                                                 concat=[1])})
    d, net = X.derived_network(ir, genotype)
    if choice == 0:  # Conv2d + GELU: plain PyTorch, checked against nasc's output
        assert X.export(d, net, tmp_path / "net.py", to="pytorch") == [tmp_path / "net.py"]
        assert "nn.GELU()" in (tmp_path / "net.py").read_text()
        return
    with pytest.raises(NascError, match="cannot write a Odd module as plain PyTorch code") as info:
        X.export(d, net, tmp_path / "net.py", to="pytorch")
    assert "--to torchscript" in info.value.hint and "onnx" in info.value.hint
    assert X.export(d, net, tmp_path / "net.pt", to="torchscript") == [tmp_path / "net.pt"]
