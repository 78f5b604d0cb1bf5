"""The command line through typer's CliRunner: output, files written and exit codes."""

import json

import pytest
from typer.testing import CliRunner

from nasc import __version__
from nasc.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # short relative paths in messages; nothing written into the repo


def test_compile_writes_json_and_summarises(tmp_path, spaces_dir):
    out = tmp_path / "darts.ir.json"
    result = runner.invoke(app, ["compile", str(spaces_dir / "darts.nas"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["format"] == "nasc-ir/1" and data["space"] == "darts"
    fp = data["meta"]["fingerprint"]
    assert fp in result.output
    assert "1,076,746,950,455,072,400" in result.output  # the architecture count
    assert "1,930,618" in result.output


def test_compile_of_the_darts_space_does_not_import_torch(tmp_path):
    # the README: `nasc compile` is instant, without torch; darts.nas's select line has options,
    # which check_space_settings checks through the magnitude selector
    import subprocess
    import sys

    code = ("import sys\nfrom nasc.cli import main\nsys.argv = ['nasc', 'compile', 'darts', '-o', 'x.json']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert (tmp_path / "x.json").is_file(), out.stderr
    assert out.stdout.split()[-1] == "False"

def test_compile_summarises_a_space_with_more_architectures_than_a_float_holds(tmp_path):
    """A dense 45-node cell with two ops per edge has 2^1035 architectures: the summary crashed with an internal
    OverflowError (int too large to convert to float); at 170 nodes --json could not write the count's digits."""
    def dense(nodes: int) -> str:
        return (f"space big(C = 4)\ncell c(x):\n    nodes n0..n{nodes - 1}\n    edges dense: [zero, identity]\n"
                f"    output n{nodes - 1}\nnetwork:\n    input 3 x 8 x 8\n    stem conv(3, out = C) > bn\n"
                "    stack 1 x c\n    head global_avg_pool > linear(10)\n")
    (tmp_path / "big.nas").write_text(dense(45))
    result = runner.invoke(app, ["compile", "big.nas", "-o", "big.ir.json"])
    assert result.exit_code == 0, result.output
    assert [line.split() for line in result.output.splitlines() if line.startswith("architectures")] == [
        ["architectures", "3.682e+311"]]
    (tmp_path / "big.nas").write_text(dense(170))
    result = runner.invoke(app, ["compile", "big.nas", "-o", "big.ir.json", "--json"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if '"architectures"' in line)
    assert len(line.split(":")[1].strip(" ,")) == 4376  # 2^(170 * 171 / 2) = 2^14535



def test_compile_prints_the_warnings_of_the_compilation():
    """At 8x8 DARTS' auxiliary head does not fit and is dropped (meta.warnings, docs/ir.md): `nasc compile` said
    nothing of it, while `nasc search` and `nasc train` print it; the JSON on stdout stays clean."""
    result = runner.invoke(app, ["compile", "darts", "--input", "1x8x8", "-o", "-"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["meta"]["warnings"][0].startswith("auxiliary head dropped")
    assert "warning: auxiliary head dropped" in " ".join(result.stderr.split())

def test_compile_default_output_name(tmp_path):
    result = runner.invoke(app, ["compile", "nb201"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "nb201.ir.json").is_file()
    assert "15,625" in result.output


def test_compile_to_stdout():
    result = runner.invoke(app, ["compile", "nb201", "-o", "-"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["space"] == "nb201" and len(data["meta"]["fingerprint"]) == 16


def test_compile_with_parameter_override(tmp_path):
    result = runner.invoke(app, ["compile", "darts", "--set", "C=8", "-o", "-"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["params"]["C"] == 8


def test_check_valid(spaces_dir):
    result = runner.invoke(app, ["check", str(spaces_dir / "darts.nas"), str(spaces_dir / "nb201.nas")])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok ") == 2


def test_check_invalid_file(tmp_path):
    (tmp_path / "bad.nas").write_text("space bad(C = 16)\nop x = relu >\n")
    result = runner.invoke(app, ["check", "bad.nas"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == "bad.nas:2:14: error: unexpected end of file; expected a name"
    assert lines[1] == "  op x = relu >"
    assert lines[2] == "  " + " " * 13 + "^"
    assert "hint:" in lines[3]
    assert "Traceback" not in result.output


def test_check_semantic_error(tmp_path):
    text = (tmp_path / "x.nas")
    text.write_text('space x extends "darts.nas"\nops darts_ops = [none, sep_conv3x3]\n')
    result = runner.invoke(app, ["check", "x.nas"])
    assert result.exit_code == 1
    assert "x.nas:2:24: error: unknown op 'sep_conv3x3'" in result.output
    assert "did you mean 'sep_conv_3x3'?" in result.output
    assert "^^^^^^^^^^^" in result.output


def test_check_reports_search_values_and_options_at_their_lines(tmp_path):
    """What a search would refuse is found by `nasc check`, each at its own line (it once said ok)."""
    (tmp_path / "s.nas").write_text('space s extends "darts.nas"\nsearch:\n    lr_schedule = cosine(mn = 0.001)\n'
                                    '    batch = -5\n    train_portion = 1.5\n')
    result = runner.invoke(app, ["check", "s.nas"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if ": error: " in line]
    assert errors == ["s.nas:3:5: error: cosine() has no option 'mn'",
                      "s.nas:4:5: error: batch must be positive, got -5",
                      "s.nas:5:5: error: train_portion must lie strictly between 0 and 1, got 1.5"]
    assert "hint: options: min, warmup, exponent (cosine_power)" in result.output


def test_check_reports_train_values_at_their_lines(tmp_path, repo):
    """A `train:` value `nasc train` would refuse fails `nasc check` at its line (it said ok, and `nasc train`
    then said 'drop_path must lie in [0, 1)' with no file or line)."""
    (tmp_path / "s.nas").write_text('space s extends "darts.nas"\ntrain:\n    layers = 5\n    drop_path = 1.5\n'
                                    '    label_smoothing = 2\n')
    result = runner.invoke(app, ["check", "s.nas"])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if ": error: " in line]
    assert errors == ["s.nas:4:5: error: drop_path must lie in [0, 1), got 1.5",
                      "s.nas:5:5: error: label_smoothing must lie in [0, 1), got 2"]
    result = runner.invoke(app, ["train", str(repo / "examples/genotypes/darts_v2.json"), "--space", "s.nas",
                                 "--dry-run"])
    assert result.exit_code == 1 and "s.nas:4:5: error: drop_path must lie in [0, 1), got 1.5" in result.output

def test_check_reports_betas_that_are_not_two_numbers(tmp_path):
    """`betas = 0.5` or `betas = true` in adam(...) was an internal error ('float' object is not iterable)."""
    for betas in ("0.5", "true"):
        (tmp_path / "s.nas").write_text(f'space s extends "darts.nas"\nsearch:\n    arch = adam(betas = {betas})\n')
        result = runner.invoke(app, ["check", "s.nas"])
        assert result.exit_code == 1 and "internal error" not in result.output
        assert "s.nas:3:5: error: search setting arch_betas must be 2 numbers" in " ".join(result.output.split())

def test_check_reports_stage_options_at_the_stages_line(tmp_path):
    """`nasc check` said ok; the search then said 'stages[0]: ...' with no file or line."""
    (tmp_path / "s.nas").write_text('space s extends "darts.nas"\nsearch:\n    epochs = 2\n'
                                    '    stages = [stage(keep = 2, layres = 5)]\n')
    for command in (["check", "s.nas"], ["search", "s.nas", "--dry-run"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1
        assert "s.nas:4:5: error: stages[0]: stage() has no option 'layres'" in result.output
        assert "did you mean 'layers'?" in result.output


def test_check_reports_a_rule_between_two_settings_at_the_setting_it_names(tmp_path):
    (tmp_path / "s.nas").write_text('space s extends "darts.nas"\nsearch:\n    epochs = 3\n    levels = 1\n'
                                    '    order = 2\n')
    result = runner.invoke(app, ["check", "s.nas"])
    assert result.exit_code == 1
    assert "s.nas:5:5: error: second-order DARTS needs bi-level search (levels = 2)" in result.output


def test_second_order_with_a_single_level_search_says_how_to_make_it_bi_level():
    result = runner.invoke(app, ["search", "--opt", "levels=1", "--second-order", "--dry-run"])
    out = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "needs bi-level search" in out and "--opt levels=2" in out
    assert runner.invoke(app, ["search", "--opt", "levels=1", "--second-order", "--opt", "levels=2",
                               "--dry-run"]).exit_code == 0
    # DropNAS (single-level) samples every forward pass: bi-level or not, it searches first-order only
    result = runner.invoke(app, ["search", "--relax", "dropnas", "--second-order", "--opt", "levels=2", "--dry-run"])
    assert result.exit_code == 1 and "no second-order step" in " ".join(result.output.split())


@pytest.mark.parametrize("relax", ["dropnas", "snas"])
def test_second_order_with_a_single_level_sampling_method_says_it_has_none(relax):
    """SNAS and DropNAS preset levels = 1: `--second-order` was told to add `--opt levels=2`, which then met the
    refusal below; the method's own refusal comes first, so the hint says what works."""
    result = runner.invoke(app, ["search", "--relax", relax, "--second-order", "--dry-run"])
    out = " ".join(result.output.split())
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "no second-order step" in out and "--first-order" in out and "--opt levels=2" not in out


def test_check_and_compile_report_an_unknown_relaxation_option_at_the_relax_line(tmp_path):
    (tmp_path / "s.nas").write_text('space s extends "darts.nas"\nrelax gumbel(tau = 10 -> 0.1, bogus = 3)\n')
    for command in (["check", "s.nas"], ["compile", "s.nas", "-o", "-"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1, result.output
        assert "s.nas:2:1: error: relaxation 'gumbel' has no option 'bogus'" in result.output
        assert "hint: options: tau" in result.output and "Traceback" not in result.output


def test_a_search_drop_path_it_cannot_run_is_refused_at_its_line(tmp_path):
    (tmp_path / "s.nas").write_text('space s extends "darts.nas"\nsearch:\n    drop_path = 0.2\n')
    assert runner.invoke(app, ["check", "s.nas"]).exit_code == 0
    for value, message in (("1.5", "drop_path must lie in [0, 1), got 1.5"),
                           ("0.1 -> 0.2", "drop_path = 0.1 -> 0.2: the search's drop path always rises")):
        (tmp_path / "s.nas").write_text(f'space s extends "darts.nas"\nsearch:\n    drop_path = {value}\n')
        result = runner.invoke(app, ["check", "s.nas"])
        assert result.exit_code == 1
        assert f"s.nas:3:5: error: {message}" in " ".join(result.output.split())


def test_check_mixed_files_exit_1(tmp_path, spaces_dir):
    (tmp_path / "bad.nas").write_text("op")
    result = runner.invoke(app, ["check", str(spaces_dir / "nb201.nas"), "bad.nas"])
    assert result.exit_code == 1
    assert "ok " in result.output and "bad.nas:1:3: error:" in result.output


def test_check_missing_file():
    result = runner.invoke(app, ["check", "nothere.nas"])
    assert result.exit_code == 1
    assert "error:" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args", [[], ["check"], ["check", "--bogus", "x.nas"], ["frobnicate"]])
def test_usage_errors_exit_2(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "Usage" in result.output


def test_spaces_lists_every_bundled_space(bundled_names):
    result = runner.invoke(app, ["spaces"])
    assert result.exit_code == 0
    for name in bundled_names:
        assert name in result.output


def test_ops_lists_primitives():
    from nasc.compiler.primitives import PRIMITIVES

    result = runner.invoke(app, ["ops"])
    assert result.exit_code == 0
    for name in PRIMITIVES:
        assert name in result.output


def test_ops_of_a_space():
    result = runner.invoke(app, ["ops", "darts"])
    assert result.exit_code == 0
    assert "sep_conv_{k}x{k}" in result.output and "darts_ops (set)" in result.output


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"nasc {__version__}"


@pytest.mark.parametrize("shape, message", [
    ("3x32x16", "only square inputs are supported, got 3x32x16"),
    ("3x0x0", "an input shape is three positive integers C x H x W, got 3x0x0"),
])
def test_compile_refuses_a_non_square_or_empty_input(shape, message):
    result = runner.invoke(app, ["compile", "nb201", "--input", shape, "-o", "-"])
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("│", " ").split())


SIZED = """space sized(C = 4, layers = 5, reductions = [1, 3])
import "darts.nas"
network:
    stem conv(3, out = 3 * C) > bn
    preprocess relu > conv(1) > bn | on stride 2: factorized_reduce
    stack layers x normal, reduce at reductions, widen 2 at reduce
    head global_avg_pool > linear(10)
"""


@pytest.mark.parametrize("value, expected", [("[0, 2]", [0, 2]), ("[0,2]", [0, 2]), ("[2 // 2, 4 - 1]", [1, 3])])
def test_set_values_are_read_like_the_language(tmp_path, value, expected):
    (tmp_path / "sized.nas").write_text(SIZED)
    result = runner.invoke(app, ["compile", "sized.nas", "--set", f"reductions={value}", "-o", "-"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["params"]["reductions"] == expected
    assert [layer["cell"] for layer in data["macro"]["layers"] if layer["kind"] == "cell"][expected[1]] == "reduce"


@pytest.mark.parametrize("value, message", [
    ("C=abc", "--set C=abc: unknown name 'abc'; a text value is written in double quotes"),
    ("C=", "--set C=: a value is missing"),
    ("C=1 +", "--set C=1 +: unexpected end of the value"),
    ("C=[1,", "--set C=[1,: unexpected end of the value"),
])
def test_set_garbage_is_a_usage_error(value, message):
    result = runner.invoke(app, ["check", "darts", "--set", value])
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("│", " ").split())


def test_a_bad_parameter_value_gives_only_its_own_error(tmp_path):
    result = runner.invoke(app, ["check", "darts", "--set", "C=8.5"])
    assert result.exit_code == 1
    assert result.output.count("error:") == 1
    assert "conv: 'out' must be an integer, got 25.5" in " ".join(result.output.split())


def test_check_reports_selector_options_at_the_select_line(tmp_path):
    (tmp_path / "s.nas").write_text('space s extends "darts.nas"\nselect perturbation(crit = "bogus")\n')
    result = runner.invoke(app, ["check", "s.nas"])
    assert result.exit_code == 1
    assert "s.nas:2:1: error: selector 'perturbation': option crit must be acc or loss, got 'bogus'" in \
        result.output.replace("\n", "")


def test_every_bundled_space_passes_check(spaces_dir):
    """Inherited settings too: RobustDARTS S2's op set has no `none` but keeps DARTS' `excluding none`."""
    files = sorted(str(p) for p in spaces_dir.glob("*.nas"))
    result = runner.invoke(app, ["check", *files])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok ") == len(files) >= 12


def test_a_repository_path_to_a_bundled_space_from_elsewhere_suggests_its_name(tmp_path):
    """The README writes `spaces/darts.nas`; from another folder that path does not exist."""
    result = runner.invoke(app, ["check", "spaces/darts.nas"])
    assert result.exit_code == 1
    assert "'darts.nas' is a bundled space: name it as `darts`" in result.output
    result = runner.invoke(app, ["check", "darts"])
    assert result.exit_code == 0, result.output


def test_outputs_into_a_missing_folder_make_it(tmp_path, spaces_dir):
    """plugin_op's README writes `-o runs/se.ir.json` in a fresh folder; it failed with 'No such file'."""
    result = runner.invoke(app, ["compile", str(spaces_dir / "nb201.nas"), "-o", "new/one/nb201.ir.json"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "new" / "one" / "nb201.ir.json").read_text())["space"] == "nb201"
    genotype = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    result = runner.invoke(app, ["genotype", "convert", genotype, "--to", "json", "-o", "two/g.json"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "two" / "g.json").is_file()


def test_spaces_lists_each_space_with_the_whole_first_sentence_of_its_header():
    result = runner.invoke(app, ["spaces"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    line = next(l for l in result.output.splitlines() if l.strip().startswith("darts_s1"))
    assert 'Understanding and Robustifying Differentiable Architecture Search", ICLR 2020)' in line
    assert line.rstrip(" │").endswith("different in normal and reduction cells.")


def test_readme_lists_every_bundled_space():
    from pathlib import Path

    from nasc.compiler.resolve import bundled_dir

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in bundled_dir().glob("*.nas")
               if f"`{p.name}`" not in readme and not p.name.startswith("darts_s")]
    assert missing == []


def test_every_cli_option_is_documented():
    """A newcomer learns the options from README.md and docs/; --first-order, export's --checkpoint,
    compile's --json and check's --quiet were only in --help."""
    import re
    from pathlib import Path

    import typer

    from nasc.cli import app

    root = Path(__file__).resolve().parents[2]
    docs = "\n".join(p.read_text(encoding="utf-8") for p in
                     [root / "README.md", *(root / "docs").glob("*.md"), *(root / "examples").rglob("README.md")])
    generic = {"--help", "--version", "--install-completion", "--show-completion"}

    def undocumented(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            yield from undocumented(sub, f"{path} {name}")
        for param in command.params:
            opts = [o for o in param.opts if o.startswith("-") and o not in generic]
            if opts and not any(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", docs) for o in opts):
                yield f"{path} {opts[0]}"

    assert list(undocumented(typer.main.get_command(app), "nasc")) == []


def test_every_builtin_relaxation_and_selector_option_is_documented():
    """docs/relaxations.md's option column and docs/methods.md's selectors left out init, accumulate,
    r_param, tune_lr_factor, crit, eval_batches, ... which only `nasc relaxations` showed."""
    import re
    from pathlib import Path

    import nasc.runtime.perturbation  # noqa: F401  registers the perturbation selector
    from nasc.runtime.registry import is_builtin
    from nasc.runtime.relaxations.base import RELAXATIONS
    from nasc.runtime.selectors import SELECTORS

    docs = Path(__file__).resolve().parents[2] / "docs"
    text = (docs / "relaxations.md").read_text(encoding="utf-8") + (docs / "methods.md").read_text(encoding="utf-8")
    missing = [f"{kind} {name}: {option}"
               for kind, registry in (("relaxation", RELAXATIONS), ("selector", SELECTORS))
               for name in registry.names() if is_builtin(registry.entry(name).origin)  # not other tests' plugins
               for option in registry.get(name).defaults
               if not re.search(rf"`{re.escape(option)}\b", text)]
    assert missing == []


def test_paths_are_printed_as_written_not_as_rich_markup(tmp_path, spaces_dir):
    """A space in a folder '[' > 'x]' (path '[/x]/a.nas') was read as a rich closing tag by `check`'s 'ok' line,
    `compile`'s summary and `ops`' 'defined at' column: 'internal error: MarkupError' instead of the result."""
    space = tmp_path / "[" / "x]" / "a.nas"
    space.parent.mkdir(parents=True)
    space.write_text((spaces_dir / "nb201.nas").read_text())
    result = runner.invoke(app, ["check", "[/x]/a.nas"])
    assert result.exit_code == 0 and "ok [/x]/a.nas" in result.output, result.output
    result = runner.invoke(app, ["compile", "[/x]/a.nas", "-o", "[/y].json"])
    assert result.exit_code == 0, result.output
    assert "([/x]/a.nas)" in result.output and "IR written to  [/y].json" in result.output
    result = runner.invoke(app, ["ops", "[/x]/a.nas"])
    assert result.exit_code == 0 and "[/x]/a.nas:13" in result.output, result.output
