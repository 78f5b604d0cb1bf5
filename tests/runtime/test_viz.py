"""`nasc viz`: cell drawings (PNG/SVG/PDF/DOT), the terminal view, and α over a search run."""

import json
import sys

import pytest
from typer.testing import CliRunner

from nasc.cli import app
from nasc.compiler import genotype as G
from nasc.errors import NascError
from nasc.runtime import viz as V

runner = CliRunner()

DARTS_V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
            "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
            "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
OPS = ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
       "dil_conv_5x5"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def darts():
    return G.parse_any(DARTS_V2)


# ---------------------------------------------------------------- layout and text


def test_layout_inputs_left_nodes_by_depth_output_right(darts):
    cell = darts.cells["normal"]
    lay = V.cell_layout(cell)
    col = {s: x for s, (x, _) in lay.pos.items()}
    assert col[0] == col[1] == 0
    for e in cell.edges:
        assert col[e.node] > col[e.input]
    assert lay.output == -1 and col[-1] == max(col.values())
    assert col[5] == 2  # node 3 reads node 0 (dil_conv_3x3(2)): one column further
    assert lay.labels[0] == "c_{k-2}" and lay.labels[1] == "c_{k-1}" and lay.labels[-1] == "c_{k}"
    assert [lay.labels[n] for n in range(2, 6)] == ["0", "1", "2", "3"]


def test_nb201_cell_output_is_its_last_node():
    cell = G.parse_any(NB201).cells["cell"]
    lay = V.cell_layout(cell)
    assert lay.output == 3 and -1 not in lay.pos
    assert lay.labels[0] == "c_{k-1}" and lay.labels[3] == "c_{k}"


def test_terminal_lines(darts):
    lines = V.cell_lines(darts.cells["normal"])
    assert lines[0] == "node 2 <- sep_conv_3x3(0), sep_conv_3x3(1)"
    assert lines[3] == "node 5 <- skip_connect(0), dil_conv_3x3(2)"
    assert lines[-1] == "output = concat(2, 3, 4, 5)"


def test_dot_has_every_edge(darts):
    dot = V.to_dot(darts)
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    for name, cell in darts.cells.items():
        assert f'label="{name} cell"' in dot
        for e in cell.edges:
            assert f'"{name}/{e.input}" -> "{name}/{e.node}" [label="{e.op}"' in dot
        for s in cell.concat:
            assert f'"{name}/{s}" -> "{name}/out"' in dot
    n_edges = sum(len(c.edges) + len(c.concat) for c in darts.cells.values())
    assert dot.count(" -> ") == n_edges


# ---------------------------------------------------------------- drawings


def test_png_is_written_decodes_and_is_not_blank(darts, tmp_path):
    from matplotlib.image import imread

    path = V.draw_genotype(darts, tmp_path / "cells.png")
    assert path.stat().st_size > 10_000
    img = imread(path)
    h, w = img.shape[:2]
    assert 200 < h < 3000 and 400 < w < 6000 and w > h  # two panels side by side
    assert img[..., :3].var() > 0


def test_svg_names_both_cells_and_every_op(darts, tmp_path):
    svg = V.draw_genotype(darts, tmp_path / "cells.svg").read_text()
    assert "<svg" in svg
    assert "normal cell" in svg and "reduce cell" in svg
    for op in {e.op for c in darts.cells.values() for e in c.edges}:
        assert op in svg


def test_pdf_is_written(darts, tmp_path):
    data = V.draw_genotype(darts, tmp_path / "cells.pdf").read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 1000


def test_nb201_and_chain_genotypes_draw(tmp_path):
    assert V.draw_genotype(G.parse_any(NB201), tmp_path / "nb201.png").stat().st_size > 5_000
    chain = G.Genotype(layers=[(f"choice{i}", ["mbconv_3x3_e3", "zero", "mbconv_7x7_e6"][i % 3]) for i in range(9)])
    svg = V.draw_genotype(chain, tmp_path / "chain.svg").read_text()
    assert "choice8" in svg and "mbconv_7x7_e6" in svg
    assert '"layer/choice0" -> "layer/choice1"' in V.to_dot(chain)


def test_names_with_dollar_signs_are_drawn_as_written(tmp_path):
    """Genotype JSON names are free text; matplotlib would read '$...$' as mathtext and fail on '\\frac{'."""
    odd = r"$\frac{$"
    cell = G.GenoCell(n_inputs=2, n_nodes=1, edges=[G.GenoEdge(node=2, input=0, op=odd),
                                                      G.GenoEdge(node=2, input=1, op="a$b$")], concat=[2])
    g = G.Genotype(cells={"cell$": cell}, layers=[("layer$1", odd)])
    svg = V.draw_genotype(g, tmp_path / "odd.svg").read_text()
    assert "a$b$" in svg and r"\frac{" in svg


def test_long_op_names_widen_the_columns_instead_of_covering_edges(darts, tmp_path):
    """An 80-character op label is wider than the gap between two columns: it covered the boxes beside it
    and the whole arrow from the next node to the output."""
    op = "x" * 80
    cell = G.GenoCell(n_inputs=2, n_nodes=2, edges=[G.GenoEdge(node=2, input=0, op=op),
                                                    G.GenoEdge(node=3, input=2, op="y" * 40),
                                                    G.GenoEdge(node=3, input=1, op="z")], concat=[2, 3])
    assert V.column_inches(cell) - 1.6 * V.NODE_W >= V.LABEL_CHAR_W * len(op)
    assert {V.column_inches(c) for c in darts.cells.values()} == {V.COL_IN}  # DARTS' names fit as they were
    assert V.draw_genotype(G.Genotype(cells={"normal": cell}), tmp_path / "long.png").stat().st_size > 0


def test_unknown_extension_is_an_error(darts, tmp_path):
    with pytest.raises(NascError, match="format"):
        V.draw_genotype(darts, tmp_path / "cells.gif")


def test_missing_matplotlib_says_how_to_install(darts, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import -> ImportError
    with pytest.raises(NascError) as info:
        V.draw_genotype(darts, tmp_path / "cells.png")
    assert "pip install matplotlib" in info.value.render()
    V.draw_genotype(darts, tmp_path / "cells.dot")  # DOT needs no matplotlib


# ---------------------------------------------------------------- a run directory


def make_run(path, genotypes=(DARTS_V2, DARTS_V2, NB201)):
    """A tiny hand-made run: step and epoch records in metrics.jsonl, and a genotype.json."""
    path.mkdir()
    edges = ["n0<-s0", "n0<-s1", "n1<-s0", "n1<-s1", "n1<-n0"]
    lines = []
    for epoch, text in enumerate(genotypes):  # from 0, as a search writes them
        lines.append({"type": "step", "epoch": epoch, "step": 1, "loss": 2.0})
        alpha = {group: {e: {op: (1 + (k == 4) * epoch) / (len(OPS) + epoch) for k, op in enumerate(OPS)}
                         for e in edges} for group in ("normal", "reduce")}
        lines.append({"type": "epoch", "epoch": epoch, "alpha": alpha,
                      "genotype": G.canonical_str(G.parse_any(text)), "train_loss": 1.0})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"type": "ep')
    G.save(G.parse_any(DARTS_V2), path / "genotype.json")
    return path


def test_alpha_records_and_genotype_changes(tmp_path):
    run = make_run(tmp_path / "run")
    records = V.read_epochs(run)  # the half-written last line is ignored
    assert [r["epoch"] for r in records] == [0, 1, 2]
    # numbered from 1, as the search's epoch table shows them (the records count from 0)
    assert [epoch for epoch, _ in V.genotype_changes(records)] == [1, 3]
    out = V.draw_alpha(records, tmp_path / "alpha.png")
    assert out.stat().st_size > 10_000
    assert V.alpha_path(tmp_path / "g.dot") == tmp_path / "g_alpha.png"
    assert V.alpha_path(tmp_path / "g.svg") == tmp_path / "g_alpha.svg"


def test_staged_runs_number_epochs_across_stages():
    """P-DARTS restarts `epoch` at 0 in each stage: the α history doubled back and 'changed at epoch 0' was
    ambiguous; the stages now follow one another."""
    records = [{"type": "epoch", "stage": stage, "epoch": e, "genotype": f"g{stage}{e // 2}"}
               for stage in range(3) for e in range(3)]
    assert V.run_epochs(records) == list(range(1, 10))
    assert [epoch for epoch, _ in V.genotype_changes(records)] == [1, 3, 4, 6, 7, 9]
    assert V.run_epochs([{"epoch": 0}, {"epoch": 1}]) == [1, 2]


@pytest.mark.parametrize("record", [
    {"type": "epoch", "alpha": {"normal": {"e": {"a": 0.5}}}},  # was internal error: KeyError: 'epoch'
    {"type": "epoch", "epoch": "3"},  # TypeError
    {"type": "epoch", "epoch": 1, "alpha": {"normal": [1, 2]}},  # AttributeError
    {"type": "epoch", "epoch": 1, "alpha": {"normal": {"e": {"a": "x"}}}},
])
def test_cli_viz_edited_metrics_is_an_error_with_the_line(tmp_path, record):
    run = make_run(tmp_path / "run")
    with (run / "metrics.jsonl").open("a") as f:
        f.write('"}\n' + json.dumps(record) + "\n")  # completes the half-written line, then the bad record
    result = runner.invoke(app, ["viz", str(run), "-o", "out.png"])
    assert result.exit_code == 1, result.output
    flat = "".join(result.output.split())  # rich wraps the long path anywhere
    assert "metrics.jsonl:8:" in flat and "internalerror" not in flat


def test_alpha_plot_needs_alpha(tmp_path):
    with pytest.raises(NascError, match="no α"):
        V.draw_alpha([{"type": "epoch", "epoch": 1}], tmp_path / "a.png")


# ---------------------------------------------------------------- CLI


def test_cli_viz_genotype_string(tmp_path):
    result = runner.invoke(app, ["viz", DARTS_V2, "-o", "v2.svg", "--space", "darts"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "v2.svg").stat().st_size > 0
    assert "node 2 <- sep_conv_3x3(0), sep_conv_3x3(1)" in result.output
    assert "reduce cell" in result.output


def test_cli_viz_genotype_file_to_dot(tmp_path):
    (tmp_path / "g.txt").write_text(NB201 + "\n")
    result = runner.invoke(app, ["viz", "g.txt", "-o", "g.dot"])
    assert result.exit_code == 0, result.output
    assert '"cell/0" -> "cell/1" [label="nor_conv_3x3"' in (tmp_path / "g.dot").read_text()


def test_cli_viz_run_dir_plots_alpha_and_reports_changes(tmp_path):
    run = make_run(tmp_path / "run")
    result = runner.invoke(app, ["viz", str(run), "-o", "out.png"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.png").stat().st_size > 0
    assert (tmp_path / "out_alpha.png").stat().st_size > 0
    assert "changed at epoch 3" in result.output
    default = runner.invoke(app, ["viz", str(run)])  # default: beside the run's genotype
    assert default.exit_code == 0, default.output
    assert (run / "genotype.png").is_file() and (run / "genotype_alpha.png").is_file()


def test_cli_viz_of_a_training_run_draws_the_genotype_without_an_alpha_plot(tmp_path):
    """A training run's metrics have epochs but no α: it is drawn like a genotype file, and that is success."""
    run = tmp_path / "train"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"kind": "train", "space": "darts"}))
    (run / "metrics.jsonl").write_text(json.dumps({"type": "epoch", "epoch": 0, "train_loss": 1.0}) + "\n")
    G.save(G.parse_any(DARTS_V2), run / "genotype.json")
    result = runner.invoke(app, ["viz", str(run), "-o", "t.png"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "t.png").stat().st_size > 0 and not (tmp_path / "t_alpha.png").exists()
    out = " ".join(result.output.split())
    assert "no α plot" in out and "(a training run)" in out
    import nasc

    assert nasc.viz(str(run), tmp_path / "api.png") == [tmp_path / "api.png"]


def test_cli_viz_prints_the_output_path_as_written(tmp_path):
    """`-o 'a[/x].svg'` drew the file, then 'wrote a[/x].svg' was read as a rich closing tag: internal error."""
    result = runner.invoke(app, ["viz", NB201, "-o", "a[/x].svg"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a[" / "x].svg").stat().st_size > 0
    assert "wrote a[/x].svg" in result.output


@pytest.mark.parametrize("make_args, message", [
    (lambda p: ["Genotype(normal=[('sep_conv_3x3', 0)"], "invalid DARTS genotype"),
    (lambda p: ["|nor_conv_3x3~1|"], "invalid NB201"),
    (lambda p: [str(p / "empty_run")], "no genotype.json"),
    (lambda p: ["nothing_here.json"], "neither a file"),
    (lambda p: [str(p / "bad.json")], "invalid genotype JSON"),
    (lambda p: [DARTS_V2, "-o", "x.gif"], "format"),
    (lambda p: [NB201, "--space", "darts"], "does not fit the space"),
])
def test_cli_viz_bad_input_exits_1_without_traceback(tmp_path, make_args, message):
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "bad.json").write_text('{"format": "nasc-genotype/1", "cells": 3}')
    result = runner.invoke(app, ["viz", *make_args(tmp_path)])
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_two_ops_on_one_pair_are_drawn_as_two_visible_arcs(tmp_path):
    """ENAS' published normal cell feeds node 2 from input 1 twice (sep_conv_3x3 and skip_connect)."""
    enas = G.from_darts("Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 1), ('sep_conv_5x5', 1), "
                        "('skip_connect', 0)], normal_concat=[2, 3])")
    inch = {0: (0.0, 0.0), 1: (0.0, 1.0), 2: (1.0, 0.0), 3: (1.0, 1.0), -1: (2.0, 0.5)}
    bends = V.arrow_bends([(1, 2), (1, 2), (1, 3), (0, 3)], inch)
    assert abs(bends[0] - bends[1]) >= V.PARALLEL_SPREAD - 1e-9  # not on top of each other
    assert bends[2:] == V.arrow_bends([(1, 3), (0, 3)], inch)  # other arrows are unaffected
    out = V.draw_genotype(enas, tmp_path / "enas.svg")
    svg = out.read_text()
    assert "sep_conv_3x3" in svg and "skip_connect" in svg
