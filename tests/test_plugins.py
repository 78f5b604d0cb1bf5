"""Plugins: explicit files and modules, entry points, origins, rollback of broken plugins, and the listings.

Every test runs with the registries snapshotted and restored, so a plugin loaded
here never leaks into other tests (tests/runtime/test_ops.py checks that OPS and
PRIMITIVES agree; the language docs list every primitive).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from nasc import plugins as P
from nasc.cli import app
from nasc.compiler.primitives import PRIMITIVES
from nasc.errors import RegistryError

REPO = Path(__file__).resolve().parent.parent
SE_OP = REPO / "examples" / "plugin_op" / "se_op.py"
SE_SPACE = REPO / "examples" / "plugin_op" / "se_space.nas"
DIRICHLET = REPO / "examples" / "plugin_relaxation" / "nasc_dirichlet.py"
runner = CliRunner()


@pytest.fixture(autouse=True)
def isolated(monkeypatch):
    """Registries, plugin records and imported plugin modules as they were before the test."""
    snap = P._snapshot()
    loaded, eps, modules = dict(P._LOADED), P._ENTRY_POINTS, set(sys.modules)
    path = list(sys.path)
    P._LOADED.clear()
    yield
    P._restore(snap)
    P._LOADED.clear()
    P._LOADED.update(loaded)
    P._ENTRY_POINTS = eps
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        if name.startswith(("nasc_plugin_", "fake_nasc_plugin", "nasc_dirichlet")):
            del sys.modules[name]


def _write(tmp_path: Path, name: str, code: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(code))
    return path


# ---------------------------------------------------------------- ops: compile side and runtime side


def test_file_plugin_registers_a_primitive_on_both_sides_with_its_origin():
    from nasc.runtime.ops import OPS

    [record] = P.load_plugins([str(SE_OP)], entry_points=False)
    assert record.ok and record.source == "file"
    assert "primitive se" in record.registered
    assert "se" in PRIMITIVES and "se" in OPS
    assert P.origin_of("primitive", "se") == str(SE_OP)
    assert OPS.entry("se").origin == str(SE_OP)
    assert P.origin_of("primitive", "conv") == "nasc"


def test_loading_twice_is_a_no_op():
    first = P.load_plugins([str(SE_OP)], entry_points=False)
    prim = PRIMITIVES["se"]
    second = P.load_plugins([str(SE_OP)], entry_points=False)
    assert first == second and PRIMITIVES["se"] is prim


@pytest.mark.parametrize("c_in, reduction", [(4, 4), (8, 4), (16, 2), (3, 8), (12, 1)])
def test_plugin_op_parameters_and_madds_match_its_rules(c_in, reduction):
    """Parameter-count parity: the built module has exactly the weights the compiler's rule counts."""
    from nasc.runtime.ops import build_step

    P.load_plugins([str(SE_OP)], entry_points=False)
    prim = PRIMITIVES["se"]
    args = {"reduction": reduction}
    c_out = prim.channels(c_in, c_in, args)
    m = build_step("se", c_in, c_out, args, affine=False)
    assert sum(p.numel() for p in m.parameters()) == prim.n_params(c_in, c_out, args, False)
    madds = 0

    def hook(mod, inp, out):
        nonlocal madds
        madds += mod.weight[0].numel() * out[0].numel()

    for conv in (x for x in m.modules() if isinstance(x, nn.Conv2d)):
        conv.register_forward_hook(hook)
    x = torch.randn(2, c_in, 5, 5, requires_grad=True)
    y = m(x)
    assert y.shape == (2, c_out, 5, 5)
    assert madds == prim.madds(c_in, c_out, prim.spatial(5, args), args)
    y.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_space_using_a_plugin_op_compiles_only_with_the_plugin_and_costs_match_the_supernet():
    from nasc.compiler.pipeline import compile_space
    from nasc.errors import NasSemanticError
    from nasc.runtime.relaxations.base import load_relaxation
    from nasc.runtime.supernet import build_supernet

    with pytest.raises(NasSemanticError, match="unknown op 'se'"):
        compile_space(SE_SPACE, params={"C": 4})
    P.load_plugins([str(SE_OP)], entry_points=False)
    ir = compile_space(SE_SPACE, params={"C": 4})
    assert ir.meta["costs"]["per_op"]["conv_se_3x3"]["params"] > ir.meta["costs"]["per_op"]["conv_3x3"]["params"]
    net = build_supernet(ir, load_relaxation("softmax"), generator=torch.Generator().manual_seed(0))
    assert sum(p.numel() for p in net.weight_parameters()) == ir.meta["costs"]["total_without_aux"]["params"]
    assert net(torch.randn(2, *ir.input_shape)).shape == (2, 10)


def test_register_primitive_alone_is_torch_free_and_checks_names():
    from nasc.errors import NascError

    prim = P.register_primitive("double_width", params={"k": int, "scale": 2.0},
                                channels=lambda c_in, c, a: 2 * c_in, doc="widens")
    assert prim.param("k").required and prim.param("scale").default == 2.0
    assert PRIMITIVES["double_width"].channels(3, 3, {}) == 6
    with pytest.raises(NascError, match="not a valid .nas name"):
        P.register_primitive("bad-name")
    with pytest.raises(NascError, match="primitive parameters must be a dict"):
        P.register_primitive("bad_params", params=5)
    with pytest.raises(NascError, match="no rule 'n_param'"):
        P.register_op("bad_rule", n_param=lambda c_in, c_out, args, affine: 0)
    assert "bad_params" not in PRIMITIVES and "bad_rule" not in PRIMITIVES
    P.unregister_primitive("double_width")
    assert "double_width" not in PRIMITIVES


def test_op_builder_without_a_primitive_is_refused(tmp_path):
    path = _write(tmp_path, "orphan.py", """
        from nasc.runtime.ops import OPS

        @OPS.register("orphan")
        def build(c_in, c_out, args, *, affine):
            raise AssertionError
    """)
    [record] = P.load_plugins([str(path)], entry_points=False)
    assert not record.ok and "'orphan'" in record.error.message and "without a primitive" in record.error.message
    from nasc.runtime.ops import OPS
    assert "orphan" not in OPS


# ---------------------------------------------------------------- broken plugins


def test_broken_plugin_is_a_warning_record_and_is_rolled_back(tmp_path):
    from nasc.runtime.relaxations.base import RELAXATIONS, relaxation_class

    softmax = relaxation_class("softmax")
    path = _write(tmp_path, "half.py", """
        from nasc.plugins import register_primitive
        from nasc.runtime.relaxations.base import RELAXATIONS, Relaxation

        class Fake(Relaxation):
            pass

        register_primitive("half_done")
        RELAXATIONS.add("softmax", Fake, origin="half", replace=True)   # overrides a built-in, then fails
        raise RuntimeError("boom")
    """)
    [record] = P.load_plugins([str(path)], entry_points=False)
    assert not record.ok
    assert isinstance(record.error, P.PluginError)
    assert str(path) in record.error.message and "RuntimeError: boom" in record.error.message
    assert record.error.render().startswith("warning: plugin")
    assert "half_done" not in PRIMITIVES
    assert RELAXATIONS.get("softmax") is softmax


def test_missing_file_and_missing_module_are_records_not_exceptions():
    missing_file, missing_module = P.load_plugins(["nothere/plugin.py", "no_such_module_xyz"], entry_points=False)
    assert "no such file" in missing_file.error.message
    assert "no_such_module_xyz" in missing_module.error.message
    assert "ModuleNotFoundError" in missing_module.error.message


# ---------------------------------------------------------------- a plugin's names and kinds


@pytest.mark.parametrize("kind, code", [
    ("primitive 'conv'", """
        from torch import nn
        from nasc.plugins import register_op

        @register_op("conv", params={"k": int}, doc="my fake conv")
        def build(c_in, c_out, args, *, affine):
            return nn.Identity()
    """),
    ("relaxation 'softmax'", """
        from nasc.runtime.relaxations.base import RELAXATIONS, Relaxation

        @RELAXATIONS.register("softmax")
        class Fake(Relaxation):
            '''fake softmax'''
    """),
    ("selector 'magnitude'", """
        from nasc.runtime.selectors import SELECTORS, Selector

        @SELECTORS.register("magnitude")
        class Fake(Selector):
            '''fake magnitude'''
    """),
    ("learning-rate schedule 'cosine'", """
        from nasc.plugins import register_schedule

        @register_schedule("cosine")
        def flat(epoch, epochs, lr, lr_min, **kw):
            return lr
    """),
])
def test_a_plugin_cannot_silently_replace_a_built_in(tmp_path, kind, code):
    from nasc.catalog import PRESETS
    from nasc.runtime.ops import OPS
    from nasc.runtime.relaxations.base import relaxation_class
    from nasc.runtime.schedules import SCHEDULES
    from nasc.runtime.selectors import SELECTORS

    def state():
        return (PRIMITIVES["conv"], OPS.get("conv"), relaxation_class("softmax"), SELECTORS.get("magnitude"),
                SCHEDULES.get("cosine"), dict(PRESETS))

    before = state()
    path = _write(tmp_path, "dup.py", code)
    [record] = P.load_plugins([str(path)], entry_points=False)
    assert not record.ok
    assert f"{kind} is a built-in of nasc; {path} registers another one" in record.error.message
    assert "replace=True" in record.error.hint
    assert state() == before


@pytest.mark.parametrize("what, code", [
    ("relaxation 'two_args', but B.group_weights(self, alpha, mask)", """
        from nasc.runtime.relaxations.base import RELAXATIONS, Relaxation

        @RELAXATIONS.register("two_args")
        class B(Relaxation):
            def group_weights(self, alpha, mask):
                return None
    """),
    ("primitive 'myid', but build(c_in, c_out)", """
        from torch import nn
        from nasc.plugins import register_op

        @register_op("myid")
        def build(c_in, c_out):
            return nn.Identity()
    """),
    ("primitive 'myid' with a n_params rule: <lambda>(c_in, c_out, a)", """
        from torch import nn
        from nasc.plugins import register_op

        @register_op("myid", n_params=lambda c_in, c_out, a: 0)
        def build(c_in, c_out, args, *, affine):
            return nn.Identity()
    """),
    ("selector 'lazy', but it does not define select", """
        from nasc.runtime.selectors import SELECTORS, Selector

        @SELECTORS.register("lazy")
        class Lazy(Selector):
            name = "lazy"
    """),
    ("learning-rate schedule 'halve', but halve(epoch, lr)", """
        from nasc.plugins import register_schedule

        @register_schedule("halve")
        def halve(epoch, lr):
            return lr / 2
    """),
])
def test_a_plugin_with_the_wrong_signature_fails_to_load_naming_it(tmp_path, what, code):
    """A builder, rule or hook nasc cannot call is refused at load time, not a TypeError blamed on nasc mid-search."""
    path = _write(tmp_path, "wrong.py", code)
    [record] = P.load_plugins([str(path)], entry_points=False)
    assert not record.ok and f"{path} registers {what}" in record.error.message
    assert "myid" not in PRIMITIVES


def test_a_builder_that_returns_no_module_is_named_when_the_op_is_built(tmp_path):
    from nasc.errors import BuildError
    from nasc.runtime.ops import build_step

    path = _write(tmp_path, "no_module.py", """
        from nasc.plugins import register_op

        @register_op("nothing")
        def build(c_in, c_out, args, *, affine):
            return None
    """)
    [record] = P.load_plugins([str(path)], entry_points=False)
    assert record.ok
    with pytest.raises(BuildError, match=r"builder of primitive 'nothing' \(.*no_module.py\) returned NoneType"):
        build_step("nothing", 4, 4, {}, affine=False)


def test_an_internal_error_with_a_plugin_loaded_names_the_plugin(tmp_path):
    """An op whose output breaks its own channels rule fails in nasc's frames; the hint names the plugin."""
    import subprocess

    path = _write(tmp_path, "halfch.py", """
        from torch import nn
        from nasc.plugins import register_op

        @register_op("halfch", n_params=lambda c_in, c_out, a, affine: (c_in + 1) * max(1, c_in // 2))
        def build(c_in, c_out, args, *, affine):
            return nn.Conv2d(c_in, max(1, c_in // 2), 1)  # the default channels rule says: c_in
    """)
    space = _write(tmp_path, "s.nas", 'space s extends "nb201.nas"\nop nor_conv_1x1 = halfch\n')
    out = subprocess.run([sys.executable, "-m", "nasc", "--plugin", str(path), "search", str(space), "-p", "C=4",
                          "-p", "N=1", "--epochs", "1", "--opt", "train_portion=0.05", "--run-dir", "run"],
                         capture_output=True, text=True, cwd=tmp_path, env={**__import__("os").environ,
                                                                               "OMP_NUM_THREADS": "1"})
    assert out.returncode == 3, out.stderr
    assert "plugin " + str(path) + " was loaded" in " ".join(out.stderr.split())
    assert "this is a bug in nasc" not in out.stderr



def test_a_plugin_op_whose_module_has_other_weights_than_its_rule_counts_is_named(tmp_path):
    """nasc compile's sizes, costs and memory estimates come from the rule: a wrong one must not pass."""
    path = _write(tmp_path, "miscount.py", """
        from torch import nn
        from nasc.plugins import register_op

        @register_op("miscount", n_params=lambda c_in, c_out, a, affine: c_in * c_out)  # forgets the bias
        def build(c_in, c_out, args, *, affine):
            return nn.Conv2d(c_in, c_out, 1)
    """)
    space = _write(tmp_path, "s.nas", 'space s extends "nb201.nas"\nop nor_conv_1x1 = miscount\n')
    result = runner.invoke(app, ["--plugin", str(path), "search", str(space), "-p", "C=4", "-p", "N=1",
                                 "--dry-run"])
    out = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "primitive 'miscount'" in out and "built 20 weights where its n_params rule counts 16" in out
    assert "miscount.py" in out and "make n_params count what the builder builds" in out

def test_replace_true_replaces_a_built_in_on_purpose(tmp_path):
    from nasc.runtime.schedules import SCHEDULES, learning_rate

    path = _write(tmp_path, "flat.py", """
        from nasc.plugins import register_schedule

        @register_schedule("cosine", replace=True)
        def flat(epoch, epochs, lr, lr_min, **kw):
            '''A constant rate.'''
            return lr
    """)
    [record] = P.load_plugins([str(path)], entry_points=False)
    assert record.ok and record.registered == ("schedule cosine",)
    assert learning_rate("cosine", 5, 10, 0.1, 0.0) == 0.1 and SCHEDULES.entry("cosine").origin == str(path)


@pytest.mark.parametrize("header, must", [
    ('@RELAXATIONS.register("sigmoid")\nclass Sig(Relaxation):\n    presets = {"softmax": ({}, {})}',
     "preset 'softmax', which is the name of a relaxation"),
    ('@RELAXATIONS.register("sigmoid")\nclass Sig(Relaxation):\n    presets = {"gdas": ({}, {})}',
     "preset 'gdas', which is already a preset of relaxation 'gumbel'"),
    ('@RELAXATIONS.register("gdas")\nclass Sig(Relaxation):\n    pass',
     "registers relaxation 'gdas', but 'gdas' is a preset of relaxation 'gumbel'"),
])
def test_a_relaxation_plugin_cannot_take_over_or_lose_a_name_through_presets(tmp_path, header, must):
    """`--relax NAME` reads the presets first: a clash there would silently swap which relaxation runs."""
    from nasc.catalog import PRESETS
    from nasc.runtime.relaxations.base import relaxation_class

    before = (relaxation_class("softmax"), relaxation_class("gdas"), dict(PRESETS))
    path = tmp_path / "clash.py"
    path.write_text("from nasc.runtime.relaxations.base import RELAXATIONS, Relaxation\n\n" + header + "\n")
    [record] = P.load_plugins([str(path)], entry_points=False)
    assert not record.ok and must in record.error.message
    assert (relaxation_class("softmax"), relaxation_class("gdas"), dict(PRESETS)) == before


@pytest.mark.parametrize("presets, must", [
    ('{"p": {"epochs": 3}}', "its preset 'p' is {'epochs': 3}; presets maps a name to a pair"),
    ('{"p": ({"y": 2}, {})}', "its preset 'p' sets option 'y', which is not in its defaults"),
    ('{"p": ({"x": 2}, {"arch_lrr": 1e-3})}', "its preset 'p' sets 'arch_lrr', which is no search setting "
                                              "(did you mean 'arch_lr'?)"),
])
def test_a_relaxation_with_a_malformed_preset_fails_to_load_naming_it(tmp_path, presets, must):
    """Not an internal error at `--relax p` or an unknown option the user never typed, but at load."""
    path = _write(tmp_path, "bad_preset.py", f"""
        from nasc.runtime.relaxations.base import RELAXATIONS, Relaxation

        @RELAXATIONS.register("with_preset")
        class WithPreset(Relaxation):
            defaults = {{"x": 1}}
            presets = {presets}
    """)
    [record] = P.load_plugins([str(path)], entry_points=False)
    assert not record.ok and must in record.error.message


@pytest.mark.parametrize("returned", ["masked_softmax(alpha, mask)", "GroupWeights(masked_softmax(alpha, mask).T)"])
def test_group_weights_that_are_not_group_weights_of_alphas_shape_are_named(tmp_path, returned):
    """A bare tensor (or a transposed one) from a plugin's group_weights fails naming the relaxation and
    the fix, not as an AttributeError (or a silent mix-up) deep inside a cell."""
    import nasc
    from nasc.errors import BuildError

    path = _write(tmp_path, "bare.py", f"""
        from nasc.runtime.relaxations.base import RELAXATIONS, GroupWeights, Relaxation, masked_softmax

        @RELAXATIONS.register("bare")
        class Bare(Relaxation):
            name = "bare"

            def group_weights(self, alpha, mask, extras, node_of_row):
                return {returned}
    """)
    [record] = P.load_plugins([str(path)], entry_points=False)
    assert record.ok
    net = nasc.build_supernet("nb201", params={"C": 4, "N": 1}, input_shape=(1, 8, 8), relax="bare")
    with pytest.raises(BuildError, match=r"relaxation 'bare': group_weights returned .* must return GroupWeights"):
        net(torch.randn(2, 1, 8, 8))


def test_two_plugins_cannot_claim_the_same_name(tmp_path):
    code = """
        from nasc.runtime.relaxations.base import RELAXATIONS, Relaxation

        @RELAXATIONS.register("mine")
        class Mine(Relaxation):
            '''one of two'''
    """
    first, second = _write(tmp_path, "first.py", code), _write(tmp_path, "second.py", code)
    a, b = P.load_plugins([str(first), str(second)], entry_points=False)
    assert a.ok and not b.ok
    assert f"relaxation 'mine' is already registered by {first}; {second} registers" in b.error.message


def test_python_registration_of_a_built_in_name_is_an_error_and_a_rerun_is_not():
    import nasc

    with pytest.raises(RegistryError, match="primitive 'conv' is a built-in of nasc") as info:
        nasc.register_op("conv")(lambda c_in, c_out, args, *, affine: None)
    assert str(Path(__file__)) in info.value.message and "replace=True" in info.value.hint
    with pytest.raises(RegistryError, match="learning-rate schedule 'cosine' is a built-in of nasc"):
        nasc.register_schedule("cosine")(lambda *a, **k: 0.0)
    for _ in range(2):  # a notebook cell run twice redefines its own entries
        nasc.register_schedule("rerun_schedule")(lambda *a, **k: 0.0)
        nasc.register_op("rerun_op")(lambda c_in, c_out, args, *, affine: nn.Identity())
    assert "rerun_op" in PRIMITIVES


def test_a_relaxation_and_selector_registered_from_python_may_be_named_in_a_space():
    """`@RELAXATIONS.register` in a notebook (no load_plugins) makes a name a search runs; a .nas file may name it."""
    import re

    import nasc
    from nasc.runtime.relaxations.base import RELAXATIONS, Relaxation
    from nasc.runtime.selectors import SELECTORS, Magnitude

    RELAXATIONS.register("notebook_relax")(type("NotebookRelax", (Relaxation,), {"name": "notebook_relax"}))
    SELECTORS.register("notebook_select")(type("NotebookSelect", (Magnitude,), {"name": "notebook_select"}))
    text = (REPO / "spaces" / "nb201.nas").read_text()
    text = re.sub(r"\nrelax .*", "\nrelax notebook_relax", text)
    text = re.sub(r"\nselect .*", "\nselect notebook_select", text)
    ir = nasc.compile_space("nb.nas", text=text, params={"C": 4, "N": 1})
    assert (ir.relax.name, ir.select.name) == ("notebook_relax", "notebook_select")


@pytest.mark.parametrize("what, code, must", [
    ("relaxation 'broken'", """
        from nasc.runtime.relaxations.base import RELAXATIONS

        @RELAXATIONS.register("broken")
        class Broken:
            '''Not a Relaxation subclass'''
    """, "a subclass of nasc.runtime.relaxations.base.Relaxation"),
    ("selector 'broken'", """
        from nasc.runtime.selectors import SELECTORS

        SELECTORS.register("broken")(lambda net, ir: None)
    """, "a subclass of nasc.runtime.selectors.Selector"),
    ("learning-rate schedule 'broken'", """
        from nasc.runtime.schedules import SCHEDULES

        SCHEDULES.add("broken", 0.1)
    """, "a function"),
])
def test_registering_the_wrong_kind_of_thing_is_refused_at_load(tmp_path, what, code, must):
    from nasc.runtime.relaxations.base import RELAXATIONS

    path = _write(tmp_path, "wrong.py", code)
    [record] = P.load_plugins([str(path)], entry_points=False)
    assert not record.ok and "broken" not in RELAXATIONS
    assert f"{path} registers" in record.error.message and f"as {what}" in record.error.message
    assert must in record.error.message


def test_an_exception_from_a_plugins_code_is_blamed_on_the_plugin(tmp_path):
    import subprocess

    from nasc.runtime.relaxations.base import load_relaxation

    path = _write(tmp_path, "halfrelax.py", """
        from nasc.runtime.relaxations.base import RELAXATIONS, Relaxation

        @RELAXATIONS.register("half")
        class Half(Relaxation):
            '''Not finished.'''
            def setup(self, ir, net):
                raise NotImplementedError("todo")
    """)
    [record] = P.load_plugins([str(path)], entry_points=False)
    assert record.ok and record.path == str(path.resolve())
    with pytest.raises(NotImplementedError) as info:
        load_relaxation("half").setup(None, None)
    blamed = P.blame(info.value)
    assert isinstance(blamed, P.PluginCodeError)
    assert f"plugin {str(path)!r} raised NotImplementedError: todo (in setup, {path}:" in blamed.message
    assert "not nasc" in blamed.hint
    assert P.blame(RuntimeError("raised in nasc")) is None
    out = subprocess.run([sys.executable, "-m", "nasc", "--plugin", str(path), "search", "nb201", "-p", "C=4",
                          "-p", "N=1", "--relax", "half", "--dry-run"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    assert "raised NotImplementedError: todo" in out.stderr and "halfrelax.py" in out.stderr
    assert "internal error" not in out.stderr and "bug in nasc" not in out.stderr


def test_load_plugins_takes_one_path_or_a_list_and_nothing_else():
    from nasc.errors import NascError

    [record] = P.load_plugins(str(SE_OP), entry_points=False)
    assert record.ok and "primitive se" in record.registered
    assert P.load_plugins(SE_OP, entry_points=False) == [record]
    with pytest.raises(NascError, match="plugins must be a .py file or module name, or a list of them; got 5"):
        P.load_plugins(5, entry_points=False)
    with pytest.raises(NascError, match="a plugin must be a .py file or module name .*; got 5"):
        P.load_plugins([str(SE_OP), 5], entry_points=False)


def test_cli_broken_plugin_warns_and_the_listing_still_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "bad.py", "raise ImportError('needs a package that is not installed')\n")
    for command in ("relaxations", "selectors", "ops"):
        result = runner.invoke(app, ["--plugin", "bad.py", command])
        assert result.exit_code == 0, result.output
        assert "warning: plugin 'bad.py' (file) failed to load: ImportError" in result.output
        assert "Traceback" not in result.output
    assert "softmax" in runner.invoke(app, ["relaxations"]).output


def test_a_plugin_that_calls_sys_exit_is_a_failed_plugin_not_the_end_of_nasc(tmp_path, monkeypatch):
    """A script turned plugin may end in `sys.exit(main())`: nasc exited with its code and said nothing."""
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "script.py", "import sys\nsys.exit(4)\n")
    result = runner.invoke(app, ["--plugin", "script.py", "relaxations"])
    assert result.exit_code == 0, result.output
    assert "warning: plugin 'script.py' (file) failed to load: SystemExit: 4" in result.output
    assert "softmax" in result.output


# ---------------------------------------------------------------- relaxations and selectors


def test_relaxation_plugin_is_listed_with_origin_presets_and_usable_from_nas(tmp_path, compile_text):
    from nasc.catalog import PRESETS, relaxation_names
    from nasc.compiler.pipeline import PassContext
    from nasc.runtime.relaxations.base import load_relaxation

    [record] = P.load_plugins([str(DIRICHLET)], entry_points=False)
    assert record.ok and "relaxation dirichlet" in record.registered
    assert {"dirichlet", "drnas"} <= relaxation_names() and PRESETS["drnas"] == "dirichlet"
    relax = load_relaxation("drnas")
    assert relax.name == "dirichlet"
    text = 'space d extends "nb201.nas"\nrelax dirichlet(kl_weight = 0.001)\n'
    ir = compile_text(text, ctx=PassContext(relaxations=relaxation_names(), selectors=None))
    assert ir.relax.name == "dirichlet"
    rows = {r["name"]: r for r in P.relaxation_rows()}
    assert rows["dirichlet"]["origin"] == str(DIRICHLET)
    assert rows["dirichlet"]["defaults"] == {"activation": "elu", "kl_weight": 0.0, "prior": 1.0}
    assert "drnas" in rows["dirichlet"]["presets"] and rows["softmax"]["origin"] == "nasc"
    result = runner.invoke(app, ["--plugin", str(DIRICHLET), "relaxations"])
    assert result.exit_code == 0 and "dirichlet" in result.output and "drnas" in result.output


def test_presets_named_like_their_relaxation_are_listed_with_their_search_settings():
    """`--relax rome` applies the rome preset's settings (lr 0.05), so `nasc relaxations` must show them."""
    from nasc.runtime.relaxations.base import preset

    rows = {r["name"]: r for r in P.relaxation_rows()}
    for name in ("rome", "parsec"):
        assert rows[name]["presets"][name] == tuple(preset(name))
    assert rows["rome"]["presets"]["rome"][1]["lr"] == 0.05
    result = runner.invoke(app, ["relaxations"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "epochs=50, lr=0.05" in result.output


def test_dirichlet_weights_are_samples_on_the_simplex_with_gradients():
    P.load_plugins([str(DIRICHLET)], entry_points=False)
    from nasc.runtime.relaxations.base import load_relaxation

    relax = load_relaxation("dirichlet")
    alpha = torch.randn(3, 4, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    torch.manual_seed(0)
    w1 = relax.group_weights(alpha, mask, {}, [0, 0, 1]).ops
    w2 = relax.group_weights(alpha, mask, {}, [0, 0, 1]).ops
    assert torch.all(w1[~mask] == 0) and torch.all(w1[mask] > 0)
    torch.testing.assert_close(w1.sum(-1), torch.ones(3))
    assert not torch.equal(w1, w2)  # a fresh sample every pass
    (w1 * torch.arange(4.0)).sum().backward()  # pathwise gradient reaches α
    assert alpha.grad is not None and torch.all(alpha.grad[mask] != 0) and torch.all(alpha.grad[~mask] == 0)
    relax.set_phase("eval")
    mean = relax.group_weights(alpha.detach(), mask, {}, [0, 0, 1]).ops
    beta = torch.nn.functional.elu(alpha.detach()) + 1
    torch.testing.assert_close(mean[0], beta[0] / beta[0].sum())


def test_dirichlet_kl_matches_torch_and_respects_padding():
    P.load_plugins([str(DIRICHLET)], entry_points=False)
    from torch.distributions import Dirichlet, kl_divergence

    kl = sys.modules[next(m for m in sys.modules if m.startswith("nasc_plugin_nasc_dirichlet"))].dirichlet_kl
    a, b = torch.rand(3, 5) + 0.1, torch.rand(3, 5) + 0.5
    full = torch.ones(3, 5, dtype=torch.bool)
    torch.testing.assert_close(kl(a, b, full), kl_divergence(Dirichlet(a), Dirichlet(b)))
    mask = full.clone()
    mask[1, 3:] = False
    torch.testing.assert_close(kl(a, b, mask)[1], kl_divergence(Dirichlet(a[1, :3]), Dirichlet(b[1, :3])))


def test_selector_plugin_registers_and_lists(tmp_path):
    from nasc.catalog import selector_names
    from nasc.runtime.selectors import load_selector

    path = _write(tmp_path, "first_op.py", """
        from nasc.runtime.selectors import SELECTORS, Selector

        @SELECTORS.register("first")
        class First(Selector):
            '''Always the first candidate (a placeholder selector).'''
            name = "first"
            defaults = {"k": 2}

            def select(self, net, ir, **context):
                raise NotImplementedError
    """)
    [record] = P.load_plugins([str(path)], entry_points=False)
    assert record.registered == ("selector first",)
    assert "first" in selector_names() and load_selector("first").options == {"k": 2}
    rows = {r["name"]: r for r in P.selector_rows()}
    assert rows["first"]["origin"] == str(path) and rows["magnitude"]["origin"] == "nasc"
    result = runner.invoke(app, ["--plugin", str(path), "selectors"])
    assert result.exit_code == 0 and "first" in result.output and "placeholder" in result.output


# ---------------------------------------------------------------- schedules and datasets


def test_schedule_plugin_is_valid_in_settings_and_in_nas(tmp_path, compile_text):
    from nasc.runtime.config import make_config
    from nasc.runtime.schedules import learning_rate

    path = _write(tmp_path, "step.py", """
        from nasc.plugins import register_schedule

        @register_schedule("halving")
        def halving(epoch, epochs, lr, lr_min, **kw):
            '''Halve the rate every epoch, down to lr_min.'''
            return max(lr_min, lr / 2 ** epoch)
    """)
    [record] = P.load_plugins([str(path)], entry_points=False)
    assert record.registered == ("schedule halving",)
    assert learning_rate("halving", 3, 10, 0.8, 0.0) == pytest.approx(0.1)
    assert make_config({}, {"schedule": "halving"}).schedule == "halving"
    ir = compile_text('space h extends "nb201.nas"\nsearch:\n    lr_schedule = halving(min = 0.001)\n')
    assert ir.search["lr_schedule"].name == "halving"


def test_step_options_for_a_schedule_without_them_are_refused_before_the_run():
    """schedule_gamma / schedule_every reach a schedule only when set: one without those parameters must
    refuse them up front, not raise a TypeError from the plugin at the first epoch."""
    from nasc.errors import SearchError
    from nasc.runtime.config import make_config
    from nasc.runtime.train import TrainConfig

    nasc_register = __import__("nasc").register_schedule
    nasc_register("linear_down")(lambda epoch, epochs, lr, lr_min, *, exponent, warmup: lr * (1 - epoch / epochs))
    nasc_register("linear_down_kw")(lambda epoch, epochs, lr, lr_min, **kw: lr * (1 - epoch / epochs))
    with pytest.raises(SearchError, match="schedule 'linear_down' takes no gamma"):
        make_config({}, {"schedule": "linear_down", "schedule_gamma": 0.5})
    with pytest.raises(SearchError, match="schedule 'linear_down' takes no every"):
        TrainConfig(schedule="linear_down", schedule_every=3)
    assert make_config({}, {"schedule": "linear_down_kw", "schedule_gamma": 0.5}).schedule_gamma == 0.5
    assert make_config({}, {"schedule": "step", "schedule_gamma": 0.5}).schedule_gamma == 0.5
    assert make_config({}, {"schedule": "linear_down"}).schedule == "linear_down"


def test_unknown_schedule_is_a_registry_error():
    from nasc.runtime.schedules import learning_rate

    with pytest.raises(RegistryError, match="unknown learning-rate schedule 'cosin'") as info:
        learning_rate("cosin", 0, 1, 0.1, 0.0)
    assert info.value.hint == "did you mean 'cosine'?"


def test_dataset_plugin(tmp_path):
    from nasc.runtime.data import DATASETS, load_dataset

    path = _write(tmp_path, "noise_data.py", """
        import torch
        from nasc.runtime.data import DATASETS, Dataset, ImageSet

        @DATASETS.register("noise")
        def load(data_dir, download):
            '''Random 1x8x8 images in 3 classes.'''
            g = torch.Generator().manual_seed(0)
            split = ImageSet(images=torch.randint(0, 256, (30, 1, 8, 8), dtype=torch.uint8, generator=g),
                             labels=torch.arange(30) % 3)
            return Dataset(name="noise", train=split, test=split, classes=3, mean=(0.5,), std=(0.3,),
                           flip=False, crop_pad=1)
    """)
    [record] = P.load_plugins([str(path)], entry_points=False)
    assert record.registered == ("dataset noise",)
    assert load_dataset("noise").classes == 3 and DATASETS.entry("noise").origin == str(path)


def test_training_on_a_dataset_without_a_test_split_says_so_and_writes_valid_json(tmp_path):
    """It printed 'test accuracy nan' and wrote NaN, which strict JSON parsers refuse, into the run files."""
    import json

    path = _write(tmp_path, "no_test.py", """
        import torch
        from nasc.runtime.data import DATASETS, Dataset, ImageSet

        @DATASETS.register("no_test")
        def load(data_dir, download):
            '''Random 3x8x8 images in 10 classes, and no test split.'''
            g = torch.Generator().manual_seed(0)
            split = ImageSet(images=torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=g),
                             labels=torch.arange(40) % 10)
            return Dataset(name="no_test", train=split, test=None, classes=10, mean=(0.5,) * 3,
                           std=(0.3,) * 3, flip=False, crop_pad=1)
    """)
    genotype = Path(__file__).parent.parent / "examples/genotypes/darts_v2.json"
    result = runner.invoke(app, ["--plugin", str(path), "train", str(genotype), "--set", "C=4", "--set", "layers=3",
                                 "--epochs", "1", "--data", "no_test", "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "no test split" in out and "nan" not in out
    strict = {"parse_constant": lambda c: pytest.fail(f"{c} in a run file")}
    assert json.loads((tmp_path / "run/result.json").read_text(), **strict)["test_acc"] is None
    for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines():
        json.loads(line, **strict)


# ---------------------------------------------------------------- entry points


def _fake_distribution(root: Path, entry_points: str, module: str, code: str) -> None:
    """A distribution importlib.metadata finds on sys.path: a module plus its dist-info with entry points."""
    (root / f"{module}.py").write_text(textwrap.dedent(code))
    info = root / "fake_nasc_plugin-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-nasc-plugin\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    sys.path.insert(0, str(root))


def test_entry_points_load_modules_and_objects_and_report_broken_ones(tmp_path):
    from nasc.catalog import relaxation_names
    from nasc.runtime.relaxations.base import RELAXATIONS

    _fake_distribution(tmp_path, """
        [nasc.relaxations]
        plainmix = fake_nasc_plugin_mod:PlainMix
        [nasc.ops]
        doubler = fake_nasc_plugin_mod
        [nasc.selectors]
        broken = fake_nasc_plugin_missing
    """, "fake_nasc_plugin_mod", """
        from nasc.plugins import register_op
        from nasc.runtime.relaxations.base import Relaxation
        from torch import nn

        class PlainMix(Relaxation):
            '''Softmax, registered through an entry point that names the class.'''
            name = "plainmix"

        @register_op("doubler", channels=lambda c_in, c, a: c_in)
        def build(c_in, c_out, args, *, affine):
            '''x + x.'''
            return nn.Identity()
    """)
    records = {r.name: r for r in P.load_plugins(refresh=True)}
    assert records["plainmix"].ok and records["plainmix"].origin == "fake-nasc-plugin 1.2"
    assert records["plainmix"].source == "entry point nasc.relaxations"
    assert "plainmix" in RELAXATIONS and RELAXATIONS.entry("plainmix").origin == "fake-nasc-plugin 1.2"
    assert "plainmix" in relaxation_names()
    assert records["doubler"].ok and P.origin_of("primitive", "doubler") == "fake-nasc-plugin 1.2"
    assert not records["broken"].ok and "'broken'" in records["broken"].error.message
    assert "fix or uninstall fake-nasc-plugin 1.2" in records["broken"].error.hint
    rows = {r["name"]: r for r in P.selector_rows()}
    assert rows["broken"]["error"] == "its plugin did not load"
    result = runner.invoke(app, ["selectors"])
    assert result.exit_code == 0 and "broken" in result.output and "magnitude" in result.output


# ---------------------------------------------------------------- runs remember their plugins

def _forget_plugins(snap) -> None:
    """As a new process would start: the registries without the plugin, nothing loaded."""
    P._restore(snap)
    P._LOADED.clear()
    for name in [m for m in sys.modules if m.startswith("nasc_plugin_")]:
        del sys.modules[name]


def _interrupted_dirichlet_search(tmp_path: Path, plugin: Path) -> Path:
    from nasc.runtime.search import Request, prepare, run_search

    P.load_plugins([str(plugin)], entry_points=False)
    job = prepare(Request(space="nb201", params={"C": 4, "N": 1}, relax="dirichlet",
                          overrides={"epochs": 2, "batch": 64, "device": "cpu"}))
    with pytest.raises(KeyboardInterrupt):
        run_search(job, tmp_path / "run", stop_after=1)
    return tmp_path / "run"


@pytest.mark.slow
def test_a_resumed_search_loads_the_plugins_it_was_started_with(tmp_path):
    import json

    from nasc.runtime.search import resume

    snap = P._snapshot()
    run = _interrupted_dirichlet_search(tmp_path, DIRICHLET)
    assert json.loads((run / "config.json").read_text())["plugins"] == [str(DIRICHLET.resolve())]
    _forget_plugins(snap)
    result = resume(run)
    assert result.run_dir == run and (run / "genotype.json").exists()


def test_reusing_a_run_names_the_plugin_still_missing_not_one_loaded_from_its_new_place(tmp_path):
    from nasc.errors import NascError

    old, moved = tmp_path / "old", tmp_path / "new"
    moved.mkdir()
    ops = _write(moved, "my_ops.py", "X = 1\n")
    _write(moved, "my_relax.py", "X = 1\n")
    P.load_plugins([str(ops)], entry_points=False)  # --plugin new/my_ops.py; my_relax.py not given

    def prepare():
        raise NascError("unknown relaxation 'mine'")

    with pytest.raises(NascError) as info:
        P.resuming_with([str(old / "my_ops.py"), str(old / "my_relax.py")], prepare)
    assert f"started with plugin {old / 'my_relax.py'}, which did not load" in info.value.message


@pytest.mark.slow
def test_resuming_without_the_plugin_names_it(tmp_path):
    from nasc.errors import NascError
    from nasc.runtime.search import resume

    moved = tmp_path / "nasc_dirichlet.py"
    moved.write_text(DIRICHLET.read_text())
    snap = P._snapshot()
    run = _interrupted_dirichlet_search(tmp_path, moved)
    _forget_plugins(snap)
    moved.unlink()
    with pytest.raises(NascError) as info:
        resume(run)
    assert "dirichlet" in info.value.message and f"started with plugin {moved.resolve()}" in info.value.message
    assert "--plugin" in info.value.hint


@pytest.mark.slow
def test_select_and_train_from_a_run_load_its_plugins_and_name_one_that_is_gone(tmp_path):
    from nasc.errors import NascError
    from nasc.runtime.search import Request, prepare, reselect, run_search
    from nasc.runtime.train import TrainRequest, prepare_train

    plugin = tmp_path / "se_op.py"
    plugin.write_text(SE_OP.read_text())
    snap = P._snapshot()
    P.load_plugins([str(plugin)], entry_points=False)
    job = prepare(Request(space=str(SE_SPACE), params={"C": 4},
                          overrides={"epochs": 1, "batch": 64, "train_portion": 0.1, "device": "cpu"}))
    run = run_search(job, tmp_path / "run").run_dir
    _forget_plugins(snap)  # a new process: `nasc select RUN` / `nasc train RUN` without --plugin
    genotype, path = reselect(run, "magnitude")
    assert path.name == "genotype-magnitude.json"
    _forget_plugins(snap)
    train = prepare_train(TrainRequest(genotype=str(run), params={"C": 4}, overrides={"device": "cpu"}))
    assert train.ir.meta["fingerprint"] and P.explicit_plugins() == [str(plugin.resolve())]
    _forget_plugins(snap)
    exported = runner.invoke(app, ["export", str(run), "--to", "torchscript", "-o", str(tmp_path / "net.pt")])
    assert exported.exit_code == 0, exported.output
    _forget_plugins(snap)
    plugin.unlink()
    for again in (lambda: reselect(run, "magnitude"),
                  lambda: prepare_train(TrainRequest(genotype=str(run), params={"C": 4}))):
        with pytest.raises(NascError) as info:
            again()
        assert "unknown op 'se'" in info.value.message
        assert f"started with plugin {plugin.resolve()}, which did not load" in info.value.message
        assert "--plugin" in info.value.hint


def test_plugin_written_after_the_command_loads_as_if_written_before_it():
    import subprocess

    from nasc.cli import plugins_first

    assert plugins_first(["search", "s.nas", "--plugin", "a.py", "--epochs", "1", "--plugin=b.py"]) == \
        ["--plugin", "a.py", "--plugin=b.py", "search", "s.nas", "--epochs", "1"]
    assert plugins_first(["search", "--", "--plugin", "x"]) == ["search", "--", "--plugin", "x"]
    assert plugins_first(["search", "--plugin"]) == ["search", "--plugin"]  # no value: typer reports it
    out = subprocess.run([sys.executable, "-m", "nasc", "search", "examples/plugin_op/se_space.nas",
                          "--plugin", "examples/plugin_op/se_op.py", "--dry-run"],
                         cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "se_cells" in out.stdout
