"""The Python API (`import nasc`): lazy and torch-free at import, thin wrappers over the library, docs that run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import nasc
from nasc.compiler import genotype as G
from nasc.errors import NascError

REPO = Path(__file__).resolve().parent.parent
TINY = {"C": 4, "N": 1}


def _run_python(code: str, cwd: Path = REPO) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_nasc_does_not_import_torch():
    out = _run_python("import sys, nasc\n"
                      "assert callable(nasc.search) and callable(nasc.compile_space)\n"
                      "ir = nasc.compile_space('nb201', params={'C': 4, 'N': 1})\n"
                      "print(ir.name, 'torch' in sys.modules)")
    assert out.split() == ["nb201", "False"]


def test_public_names_and_unknown_attributes():
    for name in ("compile_space", "build_supernet", "search", "resume", "select", "load_genotype",
                 "build_network", "train", "viz", "export", "load_plugins", "register_op"):
        assert name in dir(nasc) and callable(getattr(nasc, name))
    with pytest.raises(AttributeError, match="no attribute 'serach'"):
        nasc.serach  # noqa: B018


def test_compile_space_for_a_dataset_and_from_text():
    ir = nasc.compile_space("nb201", params=TINY, data="digits")
    assert ir.input_shape == (1, 8, 8) and ir.params["classes"] == 10
    ir = nasc.compile_space("t.nas", text='space t extends "nb201.nas"\n', params=TINY, input_shape=(3, 16, 16))
    assert ir.name == "t" and ir.input_shape == (3, 16, 16)
    with pytest.raises(NascError, match="unknown relaxation 'softmx'"):
        nasc.compile_space("t.nas", text='space t extends "nb201.nas"\nrelax softmx\n')


def test_build_supernet_with_the_spaces_relaxation_or_another():
    import torch

    net = nasc.build_supernet("nb201", params=TINY, input_shape=(1, 8, 8))
    assert net.relax.name == "softmax" and set(net.alphas) == {"cell"}
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    gdas = nasc.build_supernet(nasc.compile_space("nb201", params=TINY), relax="gdas", seed=1)
    assert gdas.relax.name == "gumbel" and gdas.relax.hard
    with pytest.raises(NascError, match="not with a compiled IR"):
        nasc.build_supernet(nasc.compile_space("nb201", params=TINY), params=TINY)


def test_build_supernet_seed_fixes_the_weights_as_a_search_does():
    import torch

    from nasc.runtime import search as S

    job = S.prepare(S.Request(space="nb201", params=TINY, relax=None, relax_options={}, select=None,
                              select_options={}, overrides={"seed": 3}))
    state = torch.get_rng_state()
    a = nasc.build_supernet("nb201", params=TINY, input_shape=(1, 8, 8), seed=3).state_dict()
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    b = nasc.build_supernet("nb201", params=TINY, input_shape=(1, 8, 8), seed=3).state_dict()
    c = nasc.build_supernet("nb201", params=TINY, input_shape=(1, 8, 8), seed=4).state_dict()
    start = job.net.state_dict()
    assert a.keys() == b.keys() == start.keys()
    assert all(torch.equal(a[k], b[k]) and torch.equal(a[k], start[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_load_genotype_and_build_network():
    import torch

    text = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    g = nasc.load_genotype(text)
    assert nasc.load_genotype(g) is g
    net = nasc.build_network("nb201", g, params=TINY, data="digits")
    assert not net.alphas and not net.training
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(NascError):
        nasc.load_genotype("not a genotype")


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One tiny NAS-Bench-201 search through the API, shared by the tests below."""
    events = []
    run = nasc.search("nb201", params=TINY, epochs=1, seed=0, run_dir=tmp_path_factory.mktemp("api") / "search",
                      on_event=events.append, train_portion=0.2)
    return run, events


def test_search_returns_a_result_and_writes_the_run_directory(searched):
    run, events = searched
    assert (run.run_dir / "genotype.json").is_file()
    assert nasc.load_genotype(run.run_dir) == run.genotype == nasc.load_genotype(run)
    assert [e["type"] for e in events if e["type"] != "step"] == ["start", "epoch", "end"]
    config = json.loads((run.run_dir / "config.json").read_text())
    assert config["search"]["epochs"] == 1 and config["search"]["train_portion"] == 0.2
    assert 0.0 <= run.final["val_acc"] <= 1.0


def test_select_again_with_another_selector(searched):
    run, _ = searched
    genotype = nasc.select(run, "magnitude")
    assert genotype == run.genotype
    assert (run.run_dir / "genotype-magnitude.json").is_file()


def test_runs_give_back_the_process_wide_kernel_flags(searched):
    """A notebook's own code after a search must not run with the search's deterministic kernels forced on."""
    import torch

    run, _ = searched
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.benchmark = True
    try:
        nasc.select(run, "magnitude")  # prepares the run as a search does: deterministic = true by default
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]


def test_resume_continues_an_interrupted_training_too(tmp_path):
    """`nasc train --resume` had no Python equivalent: nasc.resume refused a training run."""
    genotype = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    kw = dict(space="nb201", params=TINY, epochs=2, batch=256)
    whole = nasc.train(genotype, run_dir=tmp_path / "whole", **kw)

    def stop(event):
        if event["type"] == "step" and event["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        nasc.train(genotype, run_dir=tmp_path / "cut", on_event=stop, **kw)
    resumed = nasc.resume(tmp_path / "cut")
    assert isinstance(resumed, nasc.TrainResult) and resumed.epochs == 2
    assert (resumed.test_acc, resumed.test_loss) == (whole.test_acc, whole.test_loss)
    assert resumed.params == sum(p.numel() for p in resumed.net.parameters())


def test_a_runs_warnings_reach_a_notebook(tmp_path):
    """The CLI prints them before the run; from Python they were lost (not in events, files or the result)."""
    with pytest.warns(RuntimeWarning, match="α is never trained: arch_start = 5"):
        nasc.search("nb201", params=TINY, epochs=1, arch_start=5, train_portion=0.05, run_dir=tmp_path / "s")


def test_export_takes_the_space_from_the_search_run_or_the_genotype(searched, tmp_path):
    """A SearchResult knows its space, and a genotype.json names it: export asked for space= all the same."""
    run, _ = searched
    for i, source in enumerate((run, run.run_dir, run.run_dir / "genotype.json")):
        [written] = nasc.export(source, tmp_path / f"net{i}.py", params=TINY, data="digits")
        assert "def build" in written.read_text()
    assert (tmp_path / "net0.py").read_text() == (tmp_path / "net2.py").read_text()
    with pytest.raises(NascError, match="give the space"):  # a bare genotype string names no space
        nasc.export(G.to_nb201(run.genotype), tmp_path / "x.py")


@pytest.mark.slow
def test_train_viz_and_export(searched, tmp_path):
    run, _ = searched
    trained = nasc.train(run, params={"C": 4, "N": 1}, epochs=1, run_dir=tmp_path / "train")
    assert isinstance(trained, nasc.TrainResult) and trained.epochs == 1
    assert (trained.run_dir / "weights.pt").is_file() and 0.0 <= trained.test_acc <= 1.0
    assert trained.test_acc <= trained.test_top5 <= 1.0  # 10 classes: top-5 is reported
    assert trained.params == sum(p.numel() for p in trained.net.parameters())
    drawn = nasc.viz(run, tmp_path / "g.dot")
    assert drawn[0].read_text().startswith("digraph") and drawn[1].name == "g_alpha.png"
    written = nasc.export(trained, tmp_path / "net.py")
    assert [p.name for p in written] == ["net.py", "net.pt"]
    assert "def build" in (tmp_path / "net.py").read_text()


def test_load_plugins_through_the_api():
    from nasc import plugins as P

    snap = P._snapshot()
    try:
        [record] = nasc.load_plugins([str(REPO / "examples" / "plugin_op" / "se_op.py")], entry_points=False)
        assert record.ok and "primitive se" in record.registered
    finally:
        P._restore(snap)
        P._LOADED.clear()


@pytest.mark.slow
def test_docs_api_examples_run(tmp_path):
    """Every ```python block of docs/api.md, in order, in one fresh interpreter (in an empty folder)."""
    text = (REPO / "docs" / "api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5
    (tmp_path / "examples").symlink_to(REPO / "examples")
    code = "\n".join(blocks) + "\nprint('docs ok')\n"
    assert _run_python(code, cwd=tmp_path).strip().endswith("docs ok")


def test_load_plugins_takes_a_single_path():
    from nasc import plugins as P

    snap = P._snapshot()
    try:
        [record] = nasc.load_plugins(str(REPO / "examples" / "plugin_op" / "se_op.py"), entry_points=False)
        assert record.ok and "primitive se" in record.registered
        with pytest.raises(NascError, match="plugins must be a .py file or module name"):
            nasc.load_plugins(3, entry_points=False)
    finally:
        P._restore(snap)
        P._LOADED.clear()


@pytest.mark.parametrize("call, message", [
    (lambda: nasc.compile_space(42), "space must be a str or Path (a .nas file or a bundled space name), got 42"),
    (lambda: nasc.compile_space(None), "space must be a str or Path"),
    (lambda: nasc.compile_space("x.nas", text=5), "text must be a str (the .nas source) or None, got 5"),
    (lambda: nasc.compile_space("nb201", params=[("C", 4)]), "params must be a dict of NAME: VALUE"),
    (lambda: nasc.compile_space("nb201", input_shape="3x32"), "an input shape is three positive integers C x H x W"),
    (lambda: nasc.compile_space("nb201", input_shape="3 by 32"), "input_shape must look like 3x32x32, got '3 by 32'"),
    (lambda: nasc.compile_space("nb201", input_shape=3), "input_shape must be a tuple (C, H, W) or a string"),
    (lambda: nasc.build_supernet("nb201", params=TINY, seed="x"), "seed must be an int, got 'x'"),
    (lambda: nasc.build_supernet("nb201", params=TINY, relax=3), "relax must be a str, got 3"),
    (lambda: nasc.build_supernet(3), "space must be a str or Path (a .nas file or a bundled space name) or a compiled"),
    (lambda: nasc.build_network(3, "x"), "space must be a str or Path"),
    (lambda: nasc.search("nb201", params=TINY, epochs=1, on_event=5, run_dir="never"),
     "on_event must be a function taking one event (a dict), or None, got 5"),
    (lambda: nasc.search("nb201", relax_options=[1]), "relax_options must be a dict of NAME: VALUE, got [1]"),
    (lambda: nasc.search("nb201", epochs="two"), "epochs must be an int, got 'two'"),
    (lambda: nasc.resume(5), "run_dir must be a str or Path (a search or training run directory), got 5"),
    (lambda: nasc.select(5, "magnitude"), "run must be a str or Path (a search run directory) or a SearchResult, got 5"),
    (lambda: nasc.select("runs/x", 5), "selector must be a selector name (a str), got 5"),
    (lambda: nasc.train("x", space=5), "space must be a str or Path"),
    (lambda: nasc.export("x", space="nb201", input_shape=5), "input_shape must be a tuple (C, H, W)"),
    (lambda: nasc.export(nasc.TrainResult(run_dir=Path("r"), test_acc=None, test_top5=None, test_loss=None, params=0,
                                          madds=0, epochs=1, net=None, ir=None, genotype=None), params={"C": 8}),
     "params cannot change a TrainResult's trained network"),
    (lambda: nasc.viz("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", 5),
     "output must be a str or Path (the drawing's file"),
])
def test_wrong_argument_types_are_nasc_errors_naming_the_argument(call, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NascError) as info:
        call()
    assert message in info.value.message
    assert not (tmp_path / "never").exists()  # checked before a run directory is made


def test_input_shape_takes_the_cli_form():
    ir = nasc.compile_space("nb201", params=TINY, input_shape="3x16x16")
    assert ir.input_shape == (3, 16, 16)
