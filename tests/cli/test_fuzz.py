"""Fuzzing: no `.nas` file, however broken, produces a traceback.

Mutated bundled spaces go through `nasc check` (exit 0 or 1, a rendered error, never a traceback) and through
`compile_space` (returns, or raises a `NascError`). Run longer with NASC_FUZZ_EXAMPLES=1000.
"""

import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from nasc.cli import app
from nasc.compiler.pipeline import compile_space
from nasc.compiler.summary import summarise
from nasc.errors import NascError

SPACES = Path(__file__).resolve().parents[2] / "spaces"
BUNDLED = sorted(p.stem for p in SPACES.glob("*.nas"))

TOKEN = re.compile(r"\s+|\w+|[^\w\s]")
SOURCES = {name: TOKEN.findall((SPACES / f"{name}.nas").read_text()) for name in BUNDLED}
runner = CliRunner()


@st.composite
def mutated(draw) -> bytes:
    tokens = list(SOURCES[draw(st.sampled_from(BUNDLED))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "truncate", "bytes", "replace"]))
        i = draw(st.integers(0, len(tokens) - 1))
        if kind == "delete":
            del tokens[i]
        elif kind == "duplicate":
            tokens.insert(i, tokens[i])
        elif kind == "swap":
            j = draw(st.integers(0, len(tokens) - 1))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif kind == "truncate":
            tokens = tokens[:i]
        elif kind == "replace":  # a token from anywhere in any bundled space
            other = SOURCES[draw(st.sampled_from(BUNDLED))]
            tokens[i] = other[draw(st.integers(0, len(other) - 1))]
        else:
            text = "".join(tokens)
            raw = text.encode()
            at = draw(st.integers(0, len(raw)))
            return raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
        if not tokens:
            break
    return "".join(tokens).encode()


@pytest.mark.slow
@settings(max_examples=int(os.environ.get("NASC_FUZZ_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=mutated())
def test_mutated_spaces_never_crash(data, tmp_path):
    path = tmp_path / "mutant.nas"
    path.write_bytes(data)
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code in (0, 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if result.exit_code == 1:
        assert "error:" in result.output
    try:
        ir = compile_space(path)
    except NascError as e:
        e.render()  # rendering must not fail either
    else:
        summarise(ir)  # what `nasc compile` prints must not fail either


@settings(max_examples=int(os.environ.get("NASC_FUZZ_EXAMPLES", "30")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(folder=st.lists(st.text(alphabet="[]/=#@ab:", min_size=1, max_size=8).filter(lambda s: s.strip("/")),
                       min_size=1, max_size=2))
def test_any_path_is_printed_as_written(folder, tmp_path, monkeypatch):
    """Paths are printed as text, never as rich markup: a folder '[/x]' once crashed `check` and `compile`."""
    monkeypatch.chdir(tmp_path)
    path = Path(*folder) / "s.nas"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((SPACES / "nb201.nas").read_text())
    for args in (["check", str(path)], ["compile", str(path), "-o", str(path.with_suffix(".json"))],
                 ["ops", str(path)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output, result.exception)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=5)


@settings(max_examples=int(os.environ.get("NASC_FUZZ_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["(all)", "space_file", "request", "plugins", "kind", "request.params",
                            "request.overrides", "request.relax", "request.select_options"]), value=JSON,
       args=st.sampled_from([["search", "--resume", "x"], ["select", "x", "--select", "magnitude"],
                             ["genotype", "show", "x"], ["viz", "x", "-o", "x.dot"], ["export", "x", "-o", "x.py"]]))
def test_an_edited_run_config_is_an_error_not_a_crash(key, value, args, tmp_path, monkeypatch):
    """Whatever a hand-edited config.json holds, commands reading the run end with an error naming the file
    (or, where they need nothing from it, succeed)."""
    monkeypatch.chdir(tmp_path)
    config = {"kind": "search", "space_file": "missing.nas", "request": {}}
    if key == "(all)":
        config = value
    elif key.startswith("request."):
        config["request"][key.split(".", 1)[1]] = value
    else:
        config[key] = value
    (tmp_path / "x").mkdir(exist_ok=True)
    (tmp_path / "x" / "config.json").write_text(json.dumps(config))
    (tmp_path / "x" / "genotype.json").write_text(json.dumps({
        "format": "nasc-genotype/1", "cells": {"cell": {"n_inputs": 1, "n_nodes": 1, "concat": [1],
                                                        "edges": [{"node": 1, "input": 0, "op": "skip"}]}}}))
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 1), (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 0 or "error:" in result.output
