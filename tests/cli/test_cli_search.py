"""`nasc search` and `nasc genotype` through typer's CliRunner: exit codes, files, messages, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nasc.cli import app
from nasc.compiler import genotype as G

runner = CliRunner()

DARTS_V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
            "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
            "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default run dir (runs/...) would land here, never in the repo


@pytest.fixture(scope="module")
def _one_thread_module():
    # Two intra-op threads on a loaded 2-core machine slow torch down by 10-50x; one is always enough here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, _one_thread_module) -> tuple[Path, object]:
    """`nasc search darts --set C=4 --set layers=5 --epochs 1 --run-dir ...` (3 steps: train_portion 0.1)."""
    run = tmp_path_factory.mktemp("cli") / "run"
    result = runner.invoke(app, ["search", "darts", "--set", "C=4", "--set", "layers=5", "--epochs", "1",
                                 "--opt", "train_portion=0.1", "--device", "cpu", "--run-dir", str(run)])
    return run, result


def _no_traceback(result) -> None:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_dry_run_prints_the_supernet_and_writes_nothing(tmp_path, _one_thread_module):
    result = runner.invoke(app, ["search", "--dry-run"])
    assert result.exit_code == 0, result.output
    # the DARTS supernet's 1,930,618 weights, less the stem's 3x3 kernels for the 2 colour channels digits lack
    assert f"{1_930_618 - 2 * 3 * 3 * 48:,} weights" in result.output
    assert "224 architecture parameters" in result.output  # 2 x 14 x 8
    assert "1 x 8 x 8" in result.output
    assert not (tmp_path / "runs").exists()
    assert list(tmp_path.iterdir()) == []


def test_dry_run_says_whether_cuda_graphs_are_used(_one_thread_module):
    """`--opt cuda_graphs=true` on a CPU (or with a sampling relaxation) was recorded and silently not used, and
    the dry run, which shows the memory mode, fused edges and torch.compile with their reasons, said nothing."""
    args = ["search", "nb201", "--set", "C=4", "--set", "N=1", "--device", "cpu", "--dry-run"]
    result = runner.invoke(app, [*args, "--opt", "cuda_graphs=true"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "warning: cuda_graphs = true is not used: CUDA graphs need a CUDA device" in text
    assert "CUDA graphs off: CUDA graphs need a CUDA device" in text
    plain = " ".join(runner.invoke(app, args).output.split())
    assert "CUDA graphs off:" in plain and "warning" not in plain
    compiled = " ".join(runner.invoke(app, [*args, "--relax", "gdas", "--opt", "torch_compile=true"]).output.split())
    assert "warning: torch_compile = true is not used: the gumbel relaxation changes the network" in compiled
    unshared = " ".join(runner.invoke(app, [*args, "--opt", "fuse_edges=true", "--opt", "share_work=false"]).output.split())
    assert "warning: fuse_edges = true is not used: shared work is off (share_work = false)" in unshared


def test_search_says_when_its_settings_are_changed_or_useless(_one_thread_module):
    """A capped cutout and an α that never trains are said before the search, not found in config.json."""
    result = runner.invoke(app, ["search", "--set", "C=4", "--set", "layers=3", "--epochs", "2",
                                 "--opt", "cutout=16", "--opt", "arch_start=2", "--dry-run"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "warning: cutout 16 capped at 4 for 8px images" in text
    assert "warning: α is never trained: arch_start = 2 is not below epochs = 2" in text
    assert "auxiliary head" not in text  # a compile warning about training, not about this search
    quiet = runner.invoke(app, ["search", "--set", "C=4", "--set", "layers=3", "--epochs", "2",
                                "--opt", "arch_start=1", "--dry-run"])
    assert quiet.exit_code == 0 and "warning" not in quiet.output


def test_search_writes_a_run(finished_run):
    run, result = finished_run
    assert result.exit_code == 0, result.output
    assert (run / "genotype.json").is_file()
    genotype = G.load(run / "genotype.json")
    assert genotype.space == "darts"
    assert "genotype" in result.output and "normal=" in result.output  # DARTS notation is printed
    config = json.loads((run / "config.json").read_text())
    assert config["resolved_params"]["C"] == 4 and config["search"]["epochs"] == 1


def test_resume_a_finished_run_exits_1(finished_run):
    run, _ = finished_run
    before = (run / "metrics.jsonl").read_bytes()
    result = runner.invoke(app, ["search", "--resume", str(run)])
    assert result.exit_code == 1
    assert "error:" in result.output and "already finished" in result.output
    assert "genotype.json" in result.output  # the hint says where the result is
    _no_traceback(result)
    assert (run / "metrics.jsonl").read_bytes() == before


def test_resume_an_interrupted_run(tmp_path, _one_thread_module):
    from nasc.runtime.search import Request, prepare, run_search

    job = prepare(Request(space="nb201", params={"C": 4, "N": 1},
                          overrides={"epochs": 2, "batch": 64, "device": "cpu"}))
    with pytest.raises(KeyboardInterrupt):
        run_search(job, tmp_path / "cut", stop_after=1)
    result = runner.invoke(app, ["search", "--resume", "cut"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cut" / "genotype.json").is_file()
    assert "|" in result.output  # the NB201 arch string is printed
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["type"] == "epoch"]
    assert epochs == [0, 1]


def test_search_resume_and_select_refuse_a_training_run_by_name(tmp_path, _one_thread_module):
    """They once reported the train run's checkpoint as 'belongs to another space' (the space file changed)."""
    from nasc.runtime.train import TrainRequest, prepare_train, run_train

    request = TrainRequest(genotype=NB201, params={"C": 4, "N": 1}, overrides={"epochs": 2, "batch": 256})
    with pytest.raises(KeyboardInterrupt):
        run_train(prepare_train(request), tmp_path / "cut", stop_after=1)
    for args in (["search", "--resume", "cut"], ["select", "cut", "--select", "magnitude"]):
        result = runner.invoke(app, args)
        text = " ".join(result.output.split())
        assert result.exit_code == 1, result.output
        assert "is a training run, not a search" in text and "nasc train --resume" in text
        assert "another space" not in text
        _no_traceback(result)


def test_sigterm_ends_a_search_as_ctrl_c_does(tmp_path):
    """`kill` or a scheduler's time limit sends SIGTERM: the search died silently (exit -15), with no word
    of the checkpoint it left or of --resume."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    args = [sys.executable, "-m", "nasc", "search", "nb201", "--set", "C=4", "--set", "N=1", "--epochs", "1000",
            "--opt", "train_portion=0.1", "--device", "cpu", "--run-dir", str(run)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"})
    deadline = time.monotonic() + 240
    while not (run / "checkpoint.pt").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"resume with nasc search --resume {run}" in " ".join(err.split())
    assert "Traceback" not in out + err


def test_ctrl_c_exits_130_with_a_resume_hint(tmp_path, monkeypatch, _one_thread_module):
    import nasc.runtime.search as S

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(S, "run_search", interrupted)
    result = runner.invoke(app, ["search", "nb201", "--set", "C=4", "--set", "N=1", "--run-dir", "r"])
    assert result.exit_code == 130
    assert "interrupted before the first checkpoint" in result.output and "delete r" in result.output.replace("\n", "")
    _no_traceback(result)


def test_resume_a_folder_that_is_no_run(tmp_path):
    (tmp_path / "x").mkdir()
    result = runner.invoke(app, ["search", "--resume", "x"])
    assert result.exit_code == 1
    assert "error:" in result.output and "not a nasc run directory" in result.output
    _no_traceback(result)


@pytest.mark.parametrize("config, args, missing", [
    ({}, ["search", "--resume", "x"], "'space_file'"),
    ({"kind": "search", "request": {}}, ["search", "--resume", "x"], "'space_file'"),
    ({}, ["select", "x", "--select", "magnitude"], "'space_file'"),
    ({"kind": "train"}, ["train", "x", "--resume", "x"], "'space_file' (nor 'request')"),
    ([1, 2], ["search", "--resume", "x"], "not a nasc run config (a JSON list, not an object)"),
])
def test_resume_or_select_with_an_incomplete_config_names_what_is_missing(tmp_path, config, args, missing):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text(json.dumps(config))
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "config.json" in text and missing in text and "internal error" not in text
    if "incomplete" in text:
        assert "it has no " + missing in text and "not a nasc run config" in text
    _no_traceback(result)


@pytest.mark.parametrize("config, args, message", [
    ({"space_file": None}, ["search", "--resume", "x"], "space_file is null, not a string"),
    ({"space_file": "s.nas", "request": "x"}, ["select", "x", "--select", "magnitude"],
     "request is a string, not an object"),
    ({"space_file": "s.nas", "request": {"params": [1]}}, ["search", "--resume", "x"],
     "request.params is a list, not an object or null"),
    ({"kind": "train", "space_file": 3, "request": {}}, ["train", "--resume", "x"], "space_file is a number"),
    ([1, 2], ["export", "x"], "not a nasc run config: it is a list, not an object"),
    ({"space_file": 5, "space": "nb201"}, ["export", "x"], "space_file is a number, not a string"),
    ({"space_file": "s.nas", "plugins": 3}, ["train", "x", "--dry-run"], "plugins is a number, not a list"),
])
def test_resume_or_select_with_an_edited_config_names_the_value_of_the_wrong_type(tmp_path, config, args, message):
    """A config.json value of another JSON type (null for the space file, a string for `request`) was used as it
    was: an AttributeError or TypeError, reported as an internal error."""
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "config.json").write_text(json.dumps(config))
    (tmp_path / "x" / "genotype.json").write_text(json.dumps(G.to_json(G.parse_any(NB201))))
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split())
    _no_traceback(result)


def test_search_missing_space_file(tmp_path):
    result = runner.invoke(app, ["search", "nonexistent.nas"])
    assert result.exit_code == 1
    assert "error:" in result.output and "nonexistent" in result.output
    _no_traceback(result)
    assert not (tmp_path / "runs").exists()


def test_search_existing_run_dir_is_refused(tmp_path, _one_thread_module):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("keep")
    result = runner.invoke(app, ["search", "nb201", "--set", "C=4", "--set", "N=1", "--epochs", "1",
                                 "--run-dir", "old"])
    assert result.exit_code == 1
    assert "error:" in result.output and "already contains a run" in result.output
    _no_traceback(result)
    assert [p.name for p in (tmp_path / "old").iterdir()] == ["keep.txt"]


def test_search_unknown_option_names_the_closest(tmp_path):
    result = runner.invoke(app, ["search", "nb201", "--set", "C=4", "--set", "N=1", "--opt", "arch_lrr=0.1"])
    assert result.exit_code == 1
    assert "arch_lrr" in result.output and "arch_lr" in result.output
    _no_traceback(result)


def test_tuple_and_list_values_on_the_command_line(tmp_path):
    """`--opt arch_betas=(0.5, 0.9)` once stayed the string '(0.5, 0.9)' and was refused as 'must be 2 numbers,
    e.g. (0.5, 0.5)'; `--relax-opt free_ops=[none, skip_connect]` became the names '[none' and 'skip_connect]'."""
    result = runner.invoke(app, ["search", "--set", "C=4", "--set", "layers=3", "--relax", "dropnas", "--dry-run",
                                 "--opt", "arch_betas=(0.5, 0.9)", "--relax-opt", "free_ops=[none, skip_connect]",
                                 "--select-opt", "exclude=[none, skip_connect]"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "arch_betas (0.5, 0.9)" in text
    assert "'free_ops': ['none', 'skip_connect']" in text
    assert "'exclude': ['none', 'skip_connect']" in text
    result = runner.invoke(app, ["search", "--dry-run", "--opt", "arch_betas=(0.5,"])
    assert result.exit_code == 2 and "arch_betas=(0.5," in result.output
    _no_traceback(result)


def test_first_and_second_order_exclude_each_other():
    result = runner.invoke(app, ["search", "nb201", "--first-order", "--second-order"])
    assert result.exit_code == 2
    assert "exclude each other" in result.output


def test_convert_darts_json_darts_round_trip(tmp_path):
    result = runner.invoke(app, ["genotype", "convert", DARTS_V2, "--to", "json", "-o", "g.json"])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "g.json").read_text())
    assert data["format"] == "nasc-genotype/1" and set(data["cells"]) == {"normal", "reduce"}
    result = runner.invoke(app, ["genotype", "convert", "g.json", "--to", "darts"])
    assert result.exit_code == 0, result.output
    back = G.from_darts(result.stdout)
    assert back.cells == G.from_darts(DARTS_V2).cells
    result = runner.invoke(app, ["genotype", "convert", DARTS_V2])  # json is the default
    assert result.exit_code == 0
    assert G.from_json(json.loads(result.stdout)).cells == back.cells


def test_convert_nb201_string():
    result = runner.invoke(app, ["genotype", "convert", NB201, "--to", "nb201"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == NB201
    result = runner.invoke(app, ["genotype", "convert", NB201, "--to", "json"])
    assert json.loads(result.stdout)["cells"]["cell"]["n_inputs"] == 1


def test_convert_to_an_unknown_format():
    result = runner.invoke(app, ["genotype", "convert", NB201, "--to", "yaml"])
    assert result.exit_code in (1, 2)
    assert "yaml" in result.output and "json, darts or nb201" in result.output
    _no_traceback(result)


def test_convert_darts_cell_to_nb201_explains():
    result = runner.invoke(app, ["genotype", "convert", DARTS_V2, "--to", "nb201"])
    assert result.exit_code == 1
    assert "error:" in result.output and "NB201" in result.output
    _no_traceback(result)


@pytest.mark.parametrize("text", [
    "Genotype(normal=[('sep_conv_3x3', 0)",
    "Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1)])",
    "|nor_conv_3x3~1|",
    '{"format": "nasc-genotype/1", "cells": 3}',
    "__import__('os').system('true')",
])
def test_malformed_genotype_exits_1_without_traceback(text):
    result = runner.invoke(app, ["genotype", "convert", text])
    assert result.exit_code == 1, result.output
    assert "error:" in result.output
    _no_traceback(result)


def test_show_a_run_dir(finished_run):
    run, _ = finished_run
    result = runner.invoke(app, ["genotype", "show", str(run)])
    assert result.exit_code == 0, result.output
    genotype = G.load(run / "genotype.json")
    assert "normal" in result.output and "reduce" in result.output
    for e in genotype.cells["normal"].edges:
        assert f"{e.input} -> {e.node}: {e.op}" in result.output


def test_show_a_dir_without_genotype(tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["genotype", "show", "empty"])
    assert result.exit_code == 1
    assert "no genotype.json" in result.output
    _no_traceback(result)


def test_show_a_string():
    result = runner.invoke(app, ["genotype", "show", NB201])
    assert result.exit_code == 0, result.output
    assert "0 -> 1: nor_conv_3x3" in result.output and "2 -> 3: skip_connect" in result.output


def test_show_prints_names_as_written_not_as_rich_markup():
    """An op or layer named '[/x]' (any string a genotype file holds) was read as a closing rich tag: a raw
    MarkupError traceback, from `show` and then again from main's own 'internal error' line."""
    text = json.dumps({"format": "nasc-genotype/1", "layers": [{"layer": "[/l]", "op": "[bold]x"}]})
    result = runner.invoke(app, ["genotype", "show", text])
    assert result.exit_code == 0, result.output
    assert "[/l]: [bold]x" in result.output
    _no_traceback(result)


def test_internal_error_line_prints_the_message_as_written(monkeypatch, capsys):
    import nasc.cli as cli

    def boom(*args, **kwargs):
        raise RuntimeError("closing tag [/x] in a message")

    monkeypatch.setattr(cli, "app", boom)
    monkeypatch.delenv("NASC_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 3
    assert "internal error: RuntimeError: closing tag [/x] in a message" in capsys.readouterr().err


def test_paths_and_values_from_the_command_line_are_printed_as_written(tmp_path, _one_thread_module):
    """--data-dir '[/x]' in the --dry-run settings, and a run dir '[/r]' in the search's start and genotype lines,
    were read as rich closing tags: 'internal error: MarkupError' (after the search had run, for the run dir)."""
    result = runner.invoke(app, ["search", "nb201", "--set", "C=4", "--set", "N=1", "--dry-run", "--data-dir", "[/x]"])
    assert result.exit_code == 0, result.output
    assert "data_dir/" in _unwrapped(result)  # the value itself is cut to the table's width in an 80-column test
    _no_traceback(result)
    result = runner.invoke(app, ["train", NB201, "--set", "C=4", "--set", "N=1", "--dry-run", "--data-dir", "[/x]"])
    assert result.exit_code == 0, result.output
    assert "data_dir=/" in _unwrapped(result) and "/[/x]" in _unwrapped(result)
    _no_traceback(result)
    result = runner.invoke(app, ["search", "nb201", "--set", "C=4", "--set", "N=1", "--epochs", "1", "--device", "cpu",
                                 "--opt", "train_portion=0.1", "--run-dir", "[/r]"])
    assert result.exit_code == 0, result.output
    assert "rundir[/r]" in _unwrapped(result) and "[/r]/genotype.json" in _unwrapped(result)
    _no_traceback(result)


def _unwrapped(result) -> str:
    """The output without its whitespace: rich wraps long lines (a tmp path) at the test terminal's 80 columns."""
    return "".join(result.output.split())


def test_resume_refuses_dry_run_and_names_the_flags_it_ignores(tmp_path):
    """--resume continues with the run's recorded settings; it once ignored --dry-run and started training."""
    result = runner.invoke(app, ["search", "--resume", "somerun", "--dry-run"])
    assert result.exit_code == 1
    assert "--resume starts training again; it cannot be combined with --dry-run" in result.output
    _no_traceback(result)
    result = runner.invoke(app, ["search", "--resume", "nothere", "--epochs", "3", "--opt", "lr=0.1"])
    assert result.exit_code == 1
    assert "ignored: --epochs, --opt" in result.output and "nothere" in result.output


def test_a_run_stopped_in_its_first_epoch_says_to_start_again(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    result = runner.invoke(app, ["search", "nb201", "--set", "C=4", "--set", "N=1", "--run-dir", str(run)])
    assert result.exit_code == 1
    assert "never finished an epoch" in result.output and f"delete {run}" in result.output.replace("\n", "")
    _no_traceback(result)


def test_bad_selector_options_are_refused_before_any_training(tmp_path):
    for option, message in (("k=abc", "option k must be a positive integer, got 'abc'"),
                            ("exclude=nnone", "selector option exclude names 'nnone', which is no candidate")):
        result = runner.invoke(app, ["search", "nb201", "--set", "C=4", "--set", "N=1", "--epochs", "1",
                                     "--select-opt", option, "--run-dir", str(tmp_path / "run")])
        assert result.exit_code == 1, result.output
        assert message in result.output.replace("\n", " ")
        assert not (tmp_path / "run").exists()  # nothing trained, nothing written
        _no_traceback(result)


def test_an_unknown_relaxation_lists_every_method_and_suggests_the_closest():
    result = runner.invoke(app, ["search", "--relax", "gdsa", "--dry-run"])
    assert result.exit_code == 1
    text = result.output.replace("\n", " ")
    assert "unknown relaxation 'gdsa'" in text and "did you mean 'gdas'?" in text
    assert "pcdarts" in text and "perturbation" not in text
    result = runner.invoke(app, ["search", "--select", "bogus", "--dry-run"])
    assert "registered: magnitude, perturbation" in result.output


def test_ctrl_c_names_the_run_to_resume_or_to_delete(tmp_path, capsys):
    import typer

    from nasc.cli import _interrupted

    run = tmp_path / "darts-20261202-162003-s0"
    run.mkdir()
    with pytest.raises(typer.Exit):
        _interrupted("search", str(run))
    assert f"delete {run}" in capsys.readouterr().err.replace("\n", "")
    (run / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(typer.Exit):
        _interrupted("search", str(run))
    assert f"nasc search --resume {run}" in capsys.readouterr().err.replace("\n", "")


def test_a_second_command_in_a_running_search_s_run_dir_fails_and_the_first_finishes(tmp_path):
    """Nothing stopped a second `nasc search --run-dir R`, a `--resume R` or a `nasc select R` while a search
    ran in R: they interleaved metrics.jsonl and overwrote its checkpoint and genotype."""
    import os
    import signal
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    search = [sys.executable, "-m", "nasc", "search", "nb201", "--set", "C=4", "--set", "N=1", "--epochs", "2",
              "--opt", "train_portion=0.1", "--device", "cpu"]
    first = subprocess.Popen([*search, "--run-dir", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)
    deadline = time.monotonic() + 240
    while not (run / "config.json").is_file() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGSTOP)  # paused while it holds the run: the others meet it however slow they are
    try:
        for args in ([*search, "--run-dir", str(run)], [sys.executable, "-m", "nasc", "search", "--resume", str(run)],
                     [sys.executable, "-m", "nasc", "select", str(run), "--select-opt", "tune_epochs=0"]):
            second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=240, check=False)
            err = " ".join(second.stderr.split())
            assert second.returncode == 1, err
            assert f"run directory {run} is in use" in err and f"pid {first.pid}" in err, err
            assert "hint: wait for that run to finish" in err and "Traceback" not in second.stdout + second.stderr
    finally:
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [0, 1]
    assert not [r for r in records if r["type"] == "select"]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.json", "genotype.json",
                                                     "metrics.jsonl", "space", "space.ir.json", "timing.jsonl"]
    assert G.load(run / "genotype.json")
