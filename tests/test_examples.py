"""examples/ and docs/tutorial.md: every example runs as documented (end-to-end ones are slow-marked).

The end-to-end tests run the documented commands in subprocesses (one torch
thread each), in a temporary folder, so nothing is written into the repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "120"}
TIMEOUT = 900  # seconds per command; a loaded CI machine is slow, a hung one must still fail


def run(args: list[str], cwd: Path, *, env: dict | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env or ENV, timeout=TIMEOUT)
    if ok:
        assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"
    return out


NASC = [sys.executable, "-m", "nasc"]


# ---------------------------------------------------------------- fast: the files are what the docs say


def test_custom_space_compiles_to_a_five_node_nasnet_like_space():
    from nasc.compiler.pipeline import compile_space

    ir = compile_space(EXAMPLES / "custom_space" / "space.nas", params={"C": 4, "layers": 3})
    assert ir.name == "nasnet_mini"
    assert {g: len(info["rows"]) for g, info in ir.alpha_groups.items()} == {"normal": 20, "reduce": 20}
    ops = {op for op in ir.meta["costs"]["per_op"]}
    assert {"mbconv_3x3", "sep_3x3_x2", "sep_3x3"} <= ops


def test_plugin_op_space_needs_its_plugin(tmp_path):
    out = run(NASC + ["compile", str(EXAMPLES / "plugin_op" / "se_space.nas"), "-o", "-"], tmp_path, ok=False)
    assert out.returncode == 1 and "unknown op 'se'" in out.stderr + out.stdout
    out = run(NASC + ["--plugin", str(EXAMPLES / "plugin_op" / "se_op.py"), "compile",
                      str(EXAMPLES / "plugin_op" / "se_space.nas"), "--set", "C=4", "-o", "-"], tmp_path)
    ir = json.loads(out.stdout)
    assert ir["space"] == "se_cells" and "se" in out.stdout


def test_plugin_relaxation_package_declares_its_entry_point():
    config = tomllib.loads((EXAMPLES / "plugin_relaxation" / "pyproject.toml").read_text())
    assert config["project"]["entry-points"]["nasc.relaxations"] == {"dirichlet": "nasc_dirichlet"}
    assert config["tool"]["setuptools"]["py-modules"] == ["nasc_dirichlet"]
    assert len((EXAMPLES / "plugin_relaxation" / "nasc_dirichlet.py").read_text().splitlines()) < 200


def _tutorial_space() -> str:
    text = (REPO / "docs" / "tutorial.md").read_text()
    [space] = re.findall(r"```nas\n(.*?)```", text, flags=re.S)
    return space


def test_tutorial_space_compiles_to_the_numbers_the_tutorial_shows():
    from nasc.compiler.pipeline import compile_space
    from nasc.compiler.summary import summarise

    ir = compile_space("cells.nas", text=_tutorial_space())
    summary = summarise(ir)
    text = (REPO / "docs" / "tutorial.md").read_text()
    assert f"{summary['supernet_params']:,} weights" in text
    assert f"({summary['architectures']:,})" in text
    assert ir.meta["fingerprint"] in text


def test_tutorial_quotes_what_the_code_prints_for_its_own_genotype():
    """The tutorial's `nasc compile` line is report.architectures' text, and its `nasc viz` listing is the one
    viz prints for the genotype its search printed: they said 5.436e+09 and listed node 3's and node 4's
    inputs in another order than the genotype (and `nasc genotype show`) above them."""
    from nasc.compiler import genotype as G
    from nasc.compiler.pipeline import compile_space
    from nasc.compiler.summary import summarise
    from nasc.report import architectures
    from nasc.runtime import viz as V

    text = (REPO / "docs" / "tutorial.md").read_text()
    n = summarise(compile_space("cells.nas", text=_tutorial_space()))["architectures"]
    assert f"architectures  {architectures(n)}\n" in text
    [printed] = re.findall(r"^(Genotype\(normal=.*\))$", text, flags=re.M)
    shown = []
    for name, cell in G.parse_any(printed).cells.items():
        shown.append(f"{V.cell_title(name)} ({cell.n_inputs} inputs, {cell.n_nodes} nodes)")
        shown += [f"  {line}" for line in V.cell_lines(cell)]
    [quoted] = re.findall(r"\$ nasc viz runs/search -o cells.png\n(.*?)\ngenotype: ", text, flags=re.S)
    assert quoted.splitlines() == shown


# ---------------------------------------------------------------- slow: end to end, as documented


@pytest.mark.slow
def test_custom_space_run_sh(tmp_path):
    run(["sh", str(EXAMPLES / "custom_space" / "run.sh"), "out"], tmp_path,
        env={**ENV, "NASC": " ".join(NASC)})
    out = tmp_path / "out"
    assert json.loads((out / "space.ir.json").read_text())["space"] == "nasnet_mini"
    genotype = json.loads((out / "search" / "genotype.json").read_text())
    assert set(genotype["cells"]) == {"normal", "reduce"}
    assert all(len(c["edges"]) == 10 for c in genotype["cells"].values())  # 5 nodes x top 2
    result = json.loads((out / "train" / "result.json").read_text())
    assert result["epochs"] == 1 and 0.0 <= result["test_acc"] <= 1.0
    assert (out / "genotype.png").stat().st_size > 0 and (out / "genotype_alpha.png").is_file()


@pytest.mark.slow
def test_plugin_relaxation_installs_into_a_venv_and_searches(tmp_path):
    """pip install -e the example into a fresh venv (system site-packages: nasc and torch), as its README says."""
    pkg = tmp_path / "plugin_relaxation"
    shutil.copytree(EXAMPLES / "plugin_relaxation", pkg, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], tmp_path)
    python = str(venv / "bin" / "python")
    before = run([python, "-m", "nasc", "relaxations"], tmp_path)
    assert "dirichlet" not in before.stdout
    # the system pip, run by the venv's interpreter, installs into the venv; no index, no build isolation
    run([python, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "-q", "-e", str(pkg)],
        tmp_path)
    listing = run([python, "-m", "nasc", "relaxations"], tmp_path)
    assert "dirichlet" in listing.stdout and "drnas" in listing.stdout
    assert "nasc-dirichlet 0.1.0" in listing.stdout and "warning" not in listing.stderr
    run([python, "-m", "nasc", "search", "nb201", "--relax", "dirichlet", "--relax-opt", "kl_weight=0.001",
         "--set", "C=4", "--set", "N=1", "--epochs", "1", "--opt", "train_portion=0.2", "--run-dir", "run"],
        tmp_path)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["relax"] == {"name": "dirichlet", "options": {"activation": "elu", "kl_weight": 0.001,
                                                                 "prior": 1.0}}
    assert (tmp_path / "run" / "genotype.json").is_file()


@pytest.mark.slow
def test_plugin_op_search(tmp_path):
    run(NASC + ["--plugin", str(EXAMPLES / "plugin_op" / "se_op.py"), "search",
                str(EXAMPLES / "plugin_op" / "se_space.nas"), "--set", "C=4", "--epochs", "1",
                "--opt", "train_portion=0.2", "--run-dir", "run"], tmp_path)
    genotype = json.loads((tmp_path / "run" / "genotype.json").read_text())
    assert genotype["space"] == "se_cells" and len(genotype["cells"]["cell"]["edges"]) == 6
    alpha = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["alpha"]
    assert all("conv_se_3x3" in ops for ops in alpha["cell"].values())


@pytest.mark.slow
def test_python_api_example(tmp_path):
    out = run([sys.executable, str(EXAMPLES / "python_api.py"), "out"], tmp_path)
    assert "trained: test accuracy" in out.stdout
    for name in ("search/genotype.json", "train/weights.pt", "genotype.png", "net.py"):
        assert (tmp_path / "out" / name).is_file(), name
