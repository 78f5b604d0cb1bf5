"""Layering and packaging guards: the compiler never imports torch, the grammar stands alone."""

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return set(out.stdout.split())


def test_compiler_does_not_import_torch():
    mods = _modules_after("import nasc.compiler.pipeline, nasc.compiler.genotype, nasc.compiler.summary\n"
                          "from nasc.compiler.pipeline import compile_space\ncompile_space('darts')")
    assert "nasc.compiler.pipeline" in mods
    assert "torch" not in mods


def test_grammar_imports_neither_compiler_nor_runtime():
    mods = _modules_after("import nasc.grammar.parser\nnasc.grammar.parser.parse('space s(C = 1)')")
    assert "nasc.grammar.parser" in mods
    assert not any(m.startswith(("nasc.compiler", "nasc.runtime")) for m in mods)
    assert "torch" not in mods


def test_every_package_directory_is_packaged():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    tool = config["tool"]["setuptools"]
    listed = set(tool["packages"])
    missing = []
    for package, folder in tool["package-dir"].items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            if "__pycache__" in rel.parts:
                continue
            name = ".".join((package, *rel.parts))
            if name not in listed:
                missing.append(name)
    assert not missing, f"packages missing from [tool.setuptools] packages: {sorted(missing)}"
    assert {"nasc.grammar", "nasc.compiler", "nasc.spaces"} <= listed
