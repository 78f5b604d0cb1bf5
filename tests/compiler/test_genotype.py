"""Genotype formats: round trips, every published encoding, and the errors bad input gets."""

import json
import keyword
import os
import subprocess
import sys

import attrs
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nasc.compiler import genotype as G
from nasc.compiler.genotype import GenoCell, GenoEdge, Genotype
from nasc.errors import GenotypeError

DARTS_V2 = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
    "normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
    "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], "
    "reduce_concat=[2, 3, 4, 5])"
)
PC_DARTS = (
    "Genotype(normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), ('dil_conv_3x3', 1), "
    "('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), ('dil_conv_3x3', 1)], "
    "normal_concat=range(2, 6), reduce=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('sep_conv_5x5', 1), "
    "('sep_conv_5x5', 2), ('sep_conv_3x3', 0), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)], "
    "reduce_concat=range(2, 6))"
)
NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
NB201_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"

V2_NORMAL = [(2, 0, "sep_conv_3x3"), (2, 1, "sep_conv_3x3"), (3, 0, "sep_conv_3x3"), (3, 1, "sep_conv_3x3"),
             (4, 1, "sep_conv_3x3"), (4, 0, "skip_connect"), (5, 0, "skip_connect"), (5, 2, "dil_conv_3x3")]
V2_REDUCE = [(2, 0, "max_pool_3x3"), (2, 1, "max_pool_3x3"), (3, 2, "skip_connect"), (3, 1, "max_pool_3x3"),
             (4, 0, "max_pool_3x3"), (4, 2, "skip_connect"), (5, 2, "skip_connect"), (5, 1, "max_pool_3x3")]


def triples(cell: GenoCell) -> list[tuple[int, int, str]]:
    return [(e.node, e.input, e.op) for e in cell.edges]


def cell(n_inputs, n_nodes, edges, concat) -> GenoCell:
    return GenoCell(n_inputs=n_inputs, n_nodes=n_nodes, edges=tuple(GenoEdge(node=n, input=i, op=o)
                                                                     for n, i, o in edges), concat=concat)


# ---------------------------------------------------------------- published genotypes


def test_darts_v2_parses_to_the_published_edges():
    g = G.from_darts(DARTS_V2, space="darts")
    assert list(g.cells) == ["normal", "reduce"]
    assert triples(g.cells["normal"]) == V2_NORMAL
    assert triples(g.cells["reduce"]) == V2_REDUCE
    assert g.cells["normal"].concat == (2, 3, 4, 5)
    assert (g.cells["normal"].n_inputs, g.cells["normal"].n_nodes) == (2, 4)
    assert g.space == "darts"


@pytest.mark.parametrize("text", [DARTS_V2, PC_DARTS])
def test_darts_round_trips_through_json_and_text(text, tmp_path):
    g = G.from_darts(text)
    assert G.from_json(G.to_json(g)) == g
    assert G.from_json(json.loads(json.dumps(G.to_json(g)))) == g
    assert G.from_darts(G.to_darts(g)) == g
    assert G.parse_any(G.to_text(g)) == g
    G.save(g, tmp_path / "g.json")
    assert G.load(tmp_path / "g.json") == g
    (tmp_path / "g.txt").write_text(text + "\n")
    assert G.load(tmp_path / "g.txt") == g


def test_darts_v2_text_is_reproduced_exactly():
    assert G.to_darts(G.from_darts(DARTS_V2)) == DARTS_V2


def test_pc_darts_range_concat_becomes_a_list():
    g = G.from_darts(PC_DARTS)
    assert g.cells["reduce"].concat == (2, 3, 4, 5)
    assert "reduce_concat=[2, 3, 4, 5]" in G.to_darts(g)
    assert triples(g.cells["reduce"])[3] == (3, 2, "sep_conv_5x5")


@pytest.mark.parametrize("text", [NB201, NB201_NONE])
def test_nb201_round_trips(text, tmp_path):
    g = G.from_nb201(text)
    c = g.cells["cell"]
    assert (c.n_inputs, c.n_nodes, c.concat, len(c.edges)) == (1, 3, (3,), 6)
    assert G.to_nb201(g) == text
    assert G.to_text(g) == text
    assert G.parse_any(text) == g
    assert G.from_json(G.to_json(g)) == g
    (tmp_path / "arch.txt").write_text(text)
    assert G.load(tmp_path / "arch.txt") == g


def test_nb201_edges_and_any_input_order():
    g = G.from_nb201(NB201, cell_name="c")
    assert triples(g.cells["c"]) == [(1, 0, "nor_conv_3x3"), (2, 0, "nor_conv_3x3"), (2, 1, "avg_pool_3x3"),
                                     (3, 0, "skip_connect"), (3, 1, "nor_conv_3x3"), (3, 2, "skip_connect")]
    shuffled = "|nor_conv_3x3~0|+|avg_pool_3x3~1|nor_conv_3x3~0|+|skip_connect~2|skip_connect~0|nor_conv_3x3~1|"
    assert G.from_nb201(shuffled, cell_name="c") == g


def test_nb201_general_node_count():
    g = G.from_nb201("|skip_connect~0|+|none~0|none~1|")
    assert g.cells["cell"].n_nodes == 2 and g.cells["cell"].concat == (2,)


# ---------------------------------------------------------------- other encodings

PT_DARTS = """Genotype(
    normal=[[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('sep_conv_3x3', 0), ('sep_conv_3x3', 1)],
            [('sep_conv_3x3', 1), ('skip_connect', 0)], [('skip_connect', 0), ('dil_conv_3x3', 2)]],
    normal_concat=range(2, 6),
    reduce=[[('max_pool_3x3', 0), ('max_pool_3x3', 1)], [('skip_connect', 2), ('max_pool_3x3', 1)],
            [('max_pool_3x3', 0), ('skip_connect', 2)], [('skip_connect', 2), ('max_pool_3x3', 1)]],
    reduce_concat=range(2, 6))"""

AUTODL = """DARTS_V2 = Genotype(
  normal=[
    (('dua_sepc_3x3', 0), ('dua_sepc_3x3', 1)), # step 1
    (('sep_conv_3x3', 0), ('sep_conv_3x3', 1)), # step 2
    (('sep_conv_3x3', 1), ('skip_connect', 0)), # step 3
    (('skip_connect', 0), ('dil_sepc_3x3', 2))  # step 4
  ],
  normal_concat=[2, 3, 4, 5],
  reduce=[
    (('max_pool_3x3', 0), ('max_pool_3x3', 1)),
    (('skip_connect', 2), ('max_pool_3x3', 1)),
    (('max_pool_3x3', 0), ('skip_connect', 2)),
    (('skip_connect', 2), ('max_pool_3x3', 1, 0.25))
  ],
  reduce_concat=[2, 3, 4, 5],
  connectN=None, connects=None,
)"""

SHARP = ("genotypes.Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), "
         "('sep_conv_3x3', 1), ('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), "
         "('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), "
         "('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
         "('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5], layout='cell')")

SNAS = """Genotype(
    normal=[('skip_connect', 0), ('sep_conv_3x3', 1),
            ('dil_conv_3x3', 1), ('none', 0), ('sep_conv_3x3', 2),
            ('skip_connect', 3), ('sep_conv_5x5', 0), ('none', 1), ('none', 2),
            ('none', 4), ('dil_conv_5x5', 3), ('max_pool_3x3', 0), ('none', 1), ('none', 2)],
    normal_concat=range(2, 6),
    reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1),
            ('max_pool_3x3', 0), ('skip_connect', 2), ('none', 1),
            ('max_pool_3x3', 0), ('none', 1), ('none', 2), ('none', 3),
            ('none', 0), ('none', 1), ('none', 2), ('none', 3), ('none', 4)],
    reduce_concat=range(2, 6))"""


# AutoDL's NASNet-space searches (search_model_gdas_nasnet.py and its siblings) return a dict of per-node
# (op, input, weight) tuples, and numpy 2 prints the weights as np.float32(...)
AUTODL_DICT = ("{'normal': [(('sep_conv_3x3', 0, np.float32(0.3)), ('sep_conv_3x3', 1, np.float32(0.25))), "
               "(('sep_conv_3x3', 0, 0.3), ('sep_conv_3x3', 1, 0.2)), (('sep_conv_3x3', 1, 0.3), ('skip_connect', 0, 0.2)), "
               "(('skip_connect', 0, 0.3), ('dil_conv_3x3', 2, 0.2))], 'normal_concat': [2, 3, 4, 5], "
               "'reduce': [(('max_pool_3x3', 0, 0.3), ('max_pool_3x3', 1, 0.2)), (('skip_connect', 2, 0.3), "
               "('max_pool_3x3', 1, 0.2)), (('max_pool_3x3', 0, 0.3), ('skip_connect', 2, 0.2)), "
               "(('skip_connect', 2, 0.3), ('max_pool_3x3', 1, numpy.float64(0.2)))], 'reduce_concat': [2, 3, 4, 5]}")


@pytest.mark.parametrize("text", [PT_DARTS, AUTODL, SHARP, AUTODL_DICT])
def test_alternate_encodings_of_darts_v2(text):
    g = G.parse_any(text)
    assert triples(g.cells["normal"]) == V2_NORMAL
    assert triples(g.cells["reduce"]) == V2_REDUCE
    assert g.cells["reduce"].concat == (2, 3, 4, 5)


def test_sharpdarts_layout_names_the_sharpdarts_space():
    """sharpDARTS builds layout='cell' genotypes with its own ops (dil_conv is a doubled SharpSepConv)."""
    assert G.from_darts(SHARP).space == "sharpdarts"
    assert G.from_darts(SHARP, space="darts").space == "darts"  # an explicit space still wins
    assert G.from_darts(SHARP.replace(", layout='cell'", "")).space is None
    positional = "Genotype([('a', 0), ('b', 1)], [2], [('c', 1), ('d', 0)], [2], 'cell')"  # sharpDARTS' field order
    assert G.from_darts(positional).space == "sharpdarts"


def test_sharpdarts_genotype_keeps_its_space_through_darts_notation():
    """to_darts dropped layout='cell': the converted text read back as a DARTS genotype and trained DARTS'
    dil_conv (3,349,342 parameters) instead of sharpDARTS' (3,529,270)."""
    g = G.from_darts(SHARP)
    text = G.to_darts(g)
    assert text.endswith(", layout='cell')")
    assert G.from_darts(text) == g
    assert "layout" not in G.to_darts(attrs.evolve(g, space="darts"))


@pytest.mark.parametrize("name", ["up_concat", "layout"])
def test_darts_notation_refuses_cell_names_it_would_read_back_as_other_fields(name):
    """Genotype(up_concat=[...], up_concat_concat=[2]) was written, then refused when read back."""
    cell = GenoCell(n_inputs=2, n_nodes=1, edges=[GenoEdge(node=2, input=0, op="a"),
                                                  GenoEdge(node=2, input=1, op="b")], concat=[2])
    with pytest.raises(GenotypeError, match="cannot be a DARTS field name"):
        G.to_darts(Genotype(cells={name: cell}))
    assert G.to_text(Genotype(cells={name: cell})).startswith("{")  # show/select fall back to JSON


@pytest.mark.parametrize("data", [
    {"cells": {"normal": {"n_inputs": 1, "n_nodes": 1, "edges": [{"node": 1, "input": 0, "op": "a\u0001b"}],
                          "concat": [1]}}},
    {"cells": {"nor\nmal": {"n_inputs": 1, "n_nodes": 1, "edges": [{"node": 1, "input": 0, "op": "a"}],
                            "concat": [1]}}},
    {"layers": [{"layer": "l1", "op": "tab\there"}]},
])
def test_names_with_control_characters_are_refused(data):
    """Names are free text, but a control character made `nasc viz -o x.svg` write an SVG no XML parser reads."""
    with pytest.raises(GenotypeError, match="control character"):
        G.from_json({"format": G.FORMAT, **data})


def test_sharpdarts_raw_weights_are_refused_as_weights():
    text = ("Genotype(normal=[[0.1108, 0.0556], [0.2, 0.3]], normal_concat=[], reduce=[[0.1, 0.2]], "
            "reduce_concat=[], layout='raw_weights')")
    with pytest.raises(GenotypeError, match="layout='raw_weights' holds architecture weights") as e:
        G.from_darts(text)
    assert "layout='cell'" in e.value.hint


GENOTYPES_PY = """from collections import namedtuple
Genotype = namedtuple('Genotype', 'normal normal_concat reduce reduce_concat')
PRIMITIVES = ['none', 'skip_connect']
DARTS_V1 = Genotype(normal=[('a', 0), ('b', 1)], normal_concat=[2], reduce=[('c', 0), ('d', 1)], reduce_concat=[2])
DARTS_V2 = Genotype(normal=[('e', 0), ('f', 1)], normal_concat=[2], reduce=[('g', 0), ('h', 1)], reduce_concat=[2])
DARTS = DARTS_V2
"""


def test_one_genotype_of_an_official_genotypes_py_is_read_by_name(tmp_path):
    """An official genotypes.py holds many genotypes and their namedtuple; FILE:NAME picks one (aliases too)."""
    path = tmp_path / "genotypes.py"
    path.write_text(GENOTYPES_PY)
    g, _ = G.read_source(f"{path}:DARTS")
    assert triples(g.cells["normal"]) == [(2, 0, "e"), (2, 1, "f")]
    assert triples(G.read_source(f"{path}:DARTS_V1")[0].cells["reduce"]) == [(2, 0, "c"), (2, 1, "d")]
    with pytest.raises(GenotypeError, match="no Genotype.* named 'DARTS_V3'") as e:
        G.read_source(f"{path}:DARTS_V3")
    assert "did you mean" in e.value.hint
    with pytest.raises(GenotypeError, match="named 'PRIMITIVES'"):
        G.read_source(f"{path}:PRIMITIVES")
    with pytest.raises(GenotypeError, match="found 6 statements") as e:
        G.read_source(str(path))
    assert "FILE:NAME" in e.value.hint and "DARTS_V1, DARTS_V2" in e.value.hint


def test_snas_edge_all_assigns_2_3_4_5_entries_to_nodes():
    g = G.from_darts(SNAS)
    normal = g.cells["normal"]
    assert [len(normal.incoming(n)) for n in (2, 3, 4, 5)] == [2, 3, 4, 5]
    assert triples(normal)[2:5] == [(3, 1, "dil_conv_3x3"), (3, 0, "none"), (3, 2, "sep_conv_3x3")]
    assert triples(normal)[9] == (5, 4, "none")
    # The 14-entry form is written back and read as edge_all again.
    assert len(G.to_darts(g).split("normal=[")[1].split("]")[0].split("), (")) == 14
    assert G.from_darts(G.to_darts(g)) == g


def test_positional_namedtuple_fields_are_read():
    text = "Genotype([('a', 0), ('b', 1)], [2], [('c', 1), ('d', 0)], [2], None, None)"
    g = G.from_darts(text)
    assert triples(g.cells["reduce"]) == [(2, 1, "c"), (2, 0, "d")]


# ---------------------------------------------------------------- malformed input


@pytest.mark.parametrize(("text", "needle"), [
    ("Genotype(normal=[('sep_conv_3x3', 0)", "cannot parse"),
    ("__import__('os')", "expected a Genotype(...) call, got \"__import__('os')\""),
    ("Genotype(normal=__import__('os').system('true'), normal_concat=[2])", "is not a literal"),
    ("Genotype(normal=[('a', 0), ('b', 1)], normal_concat=[2], reduce=[('a', 0), ('b', 1)])",
     "missing field 'reduce_concat'"),
    ("Genotype(normal_concat=[2, 3])", "has no matching 'normal' field"),
    ("Genotype(layout='cell')", "no cell found"),
    ("Genotype(normal=[('a', 0), ('b', 7)], normal_concat=[2])", "input 7 of node 2 must be a state before it"),
    ("Genotype(normal=[('a', 0), ('b', 1)], normal_concat=[2, 9])", "concat index 9 is not a state"),
    ("Genotype(normal=[('a', 0), ('b', 1), ('c', 0)], normal_concat=[2])", "got 3 entries"),
    ("Genotype(normal=[('a', '0'), ('b', 1)], normal_concat=[2])", "entry 0: expected an (op: str, input: int)"),
    ("Genotype(normal=[('a', 0), ('b', 1)], normal_concat='2345')", "field 'normal_concat'"),
    ("x = 1\ny = Genotype(normal=[('a', 0), ('b', 1)], normal_concat=[2])", "found 2 statements"),
    ("Genotype(normal=[('a', 0), ('b', 1)], normal_concat=[2], **extra)", "unsupported **extra"),
    # once a minute's hang and gigabytes (10**12: 'nested too deeply'), building the list before any check
    ("Genotype(normal=[('a', 0), ('b', 1)], normal_concat=range(2, 1000000000000))",
     "col 53: 'range(2, 1000000000000)' names more than 10,000 states"),
])
def test_malformed_darts_text(text, needle):
    with pytest.raises(GenotypeError) as info:
        G.from_darts(text)
    assert needle in info.value.message
    assert info.value.message.startswith("invalid DARTS genotype")


@pytest.mark.parametrize(("text", "needle"), [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|", "node 2: no entry for input(s) [1]"),
    ("|nor_conv_3x3~1|", "node 1: input 1 is not an earlier node"),
    ("|nor_conv_3x3~0|+|none~0|none~0|none~1|", "node 2: input 0 is listed twice"),
    ("|nor_conv_3x3-0|", "bad entry 'nor_conv_3x3-0'"),
    ("nor_conv_3x3~0", "node 1: expected '|op~j|op~j|...|'"),
    ("|nor_conv_3x3~0|++|none~0|none~1|", "node 2: expected"),
    ("||", "bad entry ''"),
    ("   ", "empty string"),
])
def test_malformed_nb201(text, needle):
    with pytest.raises(GenotypeError) as info:
        G.from_nb201(text)
    assert needle in info.value.message


def _json():
    return G.to_json(G.from_darts(DARTS_V2, space="darts"))


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda d: d.pop("format"), "missing key 'format'"),
    (lambda d: d.update(format="nasc-genotype/9"), "format: expected 'nasc-genotype/1'"),
    (lambda d: d.update(cels={}), "unknown key 'cels' (did you mean 'cells'?)"),
    (lambda d: d["cells"]["normal"]["edges"][3].update(input="1"), "cells.normal.edges[3].input: expected an integer"),
    (lambda d: d["cells"]["normal"]["edges"][3].update(input=True), "expected an integer, got True"),
    (lambda d: d["cells"]["normal"]["edges"][0].update(node=6), "cells.normal: edge 0: node 6 is not an intermediate"),
    (lambda d: d["cells"]["normal"]["edges"][2].update(input=3), "edge 2: input 3 of node 3 must be a state before"),
    (lambda d: d["cells"]["normal"].update(concat=[2, 2]), "repeats a state"),
    (lambda d: d["cells"]["normal"].update(concat=[]), "concat must name at least one state"),
    (lambda d: d["cells"]["normal"]["edges"].__delitem__(slice(6, 8)), "node(s) [5] have no incoming edge"),
    # a typo'd node count lists a few unfed nodes, not all of them (10**23 nodes once hung, listing every one)
    (lambda d: d["cells"]["normal"].update(n_nodes=3_000_000), "node(s) [6, 7, 8, 9, 10, 11, 12, 13, 14, ...] "
                                                               "(2,999,996 in all) have no incoming edge"),
    (lambda d: d["cells"]["normal"].pop("n_nodes"), "cells.normal: missing key 'n_nodes'"),
    (lambda d: d["cells"]["normal"]["edges"][0].update(op=""), "edges[0].op: expected a non-empty string"),
    (lambda d: d.update(space=3), "space: expected a non-empty string or null"),
    (lambda d: d.update(layers=[{"layer": "a", "op": "x"}, {"layer": "a", "op": "y"}]), "layer 'a' is chosen twice"),
    (lambda d: d.update(layers={"a": "x"}), "layers: expected a list"),
])
def test_invalid_json(mutate, needle):
    d = _json()
    mutate(d)
    with pytest.raises(GenotypeError) as info:
        G.from_json(d)
    assert needle in info.value.message


@pytest.mark.parametrize(("text", "needle"), [
    ('{"format": ' + "[" * 100_000 + "]" * 100_000 + "}", "invalid genotype JSON: nested too deeply"),
    ("[" * 100_000 + "]" * 100_000, "invalid genotype JSON: nested too deeply"),
    ("Genotype(normal=" + "-" * 100_000 + "1)", "nested too deeply"),  # the parser runs out of memory
    ("Genotype(normal=" + "-" * 900 + "1)", "nested too deeply"),  # the AST walk runs out of stack
    ('{"format": "nasc-genotype/1", "cells": {"c": {"n_inputs": ' + "9" * 5000 + "}}}",
     "invalid genotype JSON: a number has more than"),  # Python refuses to convert integers this long
], ids=["json-object", "json-list", "darts-parser", "darts-walk", "json-long-integer"])
def test_deeply_nested_or_overlong_text_is_an_error_not_a_crash(text, needle):
    with pytest.raises(GenotypeError) as info:
        G.parse_any(text)
    assert needle in info.value.message


@pytest.mark.parametrize("text", [json.dumps(G.to_json(G.from_darts(DARTS_V2))), DARTS_V2,
                                  "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"])
def test_a_file_with_a_byte_order_mark_reads_like_one_without(text, tmp_path):
    path = tmp_path / "genotype.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert G.load(path) == G.parse_any(text)


@pytest.mark.parametrize("key", ["n_inputs", "n_nodes"])
def test_a_cell_size_of_the_wrong_type_is_reported_once(key):
    d = _json()
    d["cells"]["normal"][key] = "2"
    with pytest.raises(GenotypeError) as info:
        G.from_json(d)
    assert info.value.message == f"invalid genotype JSON: cells.normal.{key}: expected an integer, got '2'"


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(GenotypeError, match="cannot read genotype file .*missing.json"):
        G.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": ')
    with pytest.raises(GenotypeError) as info:
        G.load(bad)
    assert info.value.message.startswith(f"{bad}: invalid genotype JSON")
    bad.write_text("|none~1|")
    with pytest.raises(GenotypeError, match="bad.json: invalid NB201 arch string"):
        G.load(bad)
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(GenotypeError, match="cannot read genotype file"):
        G.load(bad)


def test_save_is_atomic_and_readable(tmp_path):
    path = tmp_path / "g.json"
    g = G.from_nb201(NB201, space="nb201")
    G.save(g, path)
    G.save(g, path)
    assert os.listdir(tmp_path) == ["g.json"]
    assert json.loads(path.read_text())["format"] == "nasc-genotype/1"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert G.load(path) == g
    with pytest.raises(GenotypeError, match="cannot write genotype"):
        G.save(g, tmp_path / "no_such_dir" / "g.json")


# ---------------------------------------------------------------- writers refuse what they cannot hold


def test_to_darts_refuses_other_topologies():
    snas_like = Genotype(cells={"normal": cell(2, 2, [(2, 0, "a"), (2, 1, "a"), (3, 0, "b"), (3, 1, "c"), (3, 2, "d")], [2, 3])})
    with pytest.raises(GenotypeError, match="exactly 2 incoming edges per node .* node 3 has 3"):
        G.to_darts(snas_like)
    with pytest.raises(GenotypeError, match="has 1 input"):
        G.to_darts(G.from_nb201(NB201))
    with pytest.raises(GenotypeError, match="searchable layers"):
        G.to_darts(Genotype(layers=(("l1", "conv"),)))
    # Not expressible as DARTS, so to_text falls back to JSON, which parse_any reads back.
    assert G.parse_any(G.to_text(snas_like)) == snas_like


def test_to_nb201_refuses_incomplete_or_two_input_cells():
    with pytest.raises(GenotypeError, match="has 2 inputs"):
        G.to_nb201(Genotype(cells={"n": G.from_darts(DARTS_V2).cells["normal"]}))
    partial = Genotype(cells={"c": cell(1, 2, [(1, 0, "a"), (2, 1, "b")], [2])})
    with pytest.raises(GenotypeError, match="not a complete DAG"):
        G.to_nb201(partial)
    with pytest.raises(GenotypeError, match="exactly one cell"):
        G.to_nb201(G.from_darts(DARTS_V2))


def test_seven_node_cell_is_not_mistaken_for_edge_all():
    edges = [(n, i, "op") for n in range(2, 9) for i in (0, 1)]
    g = Genotype(cells={"normal": cell(2, 7, edges, [2, 3])})
    assert G.from_darts(G.to_darts(g)) == g


# ---------------------------------------------------------------- canonical form and space check


def test_canonical_str_ignores_strength_order():
    g = G.from_darts(DARTS_V2)
    swapped = G.from_darts(DARTS_V2.replace("('sep_conv_3x3', 1), ('skip_connect', 0)",
                                            "('skip_connect', 0), ('sep_conv_3x3', 1)"))
    assert swapped != g
    assert G.canonical_str(swapped) == G.canonical_str(g)
    assert "\n" not in G.canonical_str(g)
    assert G.canonical_str(G.from_nb201(NB201)) == NB201
    chain = Genotype(layers=(("b1", "mb3_k3"), ("b2", "zero")))
    assert G.canonical_str(chain) == "b1:mb3_k3|b2:zero"


DARTS_OPS = {"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
             "dil_conv_3x3", "dil_conv_5x5"}
DARTS_EDGES = {(n, i): DARTS_OPS for n in range(2, 6) for i in range(n)}


def test_check_against_accepts_a_fitting_genotype():
    G.check_against(G.from_darts(DARTS_V2), {"normal": (2, 4, DARTS_EDGES), "reduce": (2, 4, None)})
    G.check_against(Genotype(layers=(("b1", "k3"),)), {}, {"b1": {"k3", "k5"}})


def test_check_against_lists_every_problem():
    g = G.from_darts(DARTS_V2.replace("'dil_conv_3x3'", "'dil_conv_3x4'"))
    g = Genotype(cells={"normal": g.cells["normal"], "reduse": g.cells["reduce"]}, layers=(("blk9", "k3"),))
    restricted = dict(DARTS_EDGES)
    del restricted[(4, 1)]
    with pytest.raises(GenotypeError) as info:
        G.check_against(g, {"normal": (2, 4, restricted), "reduce": (2, 4, None)}, {"blk1": {"k3"}})
    msg = info.value.message
    assert "unknown cell 'reduse' (did you mean 'reduce'?)" in msg
    assert "missing cell 'reduce'" in msg
    assert "edge 4<-1 does not exist in the space; node 4 takes inputs [0, 2, 3]" in msg
    assert "op 'dil_conv_3x4' is not a candidate (did you mean 'dil_conv_3x3'?); candidates: avg_pool_3x3" in msg
    assert "unknown layer 'blk9' (did you mean 'blk1'?)" in msg
    assert "missing layer 'blk1'" in msg


def test_check_against_node_counts_and_duplicates():
    nb = G.from_nb201(NB201)
    with pytest.raises(GenotypeError, match="has 1 inputs and 3 nodes; the space's has 2 inputs and 4 nodes"):
        G.check_against(nb, {"cell": (2, 4, None)})
    dup = Genotype(cells={"c": cell(2, 1, [(2, 0, "a"), (2, 0, "b")], [2])})
    with pytest.raises(GenotypeError, match="edge 2<-0 is chosen twice"):
        G.check_against(dup, {"c": (2, 1, None)})


# ---------------------------------------------------------------- properties

OPS = st.sampled_from(sorted(DARTS_OPS) + ["nor_conv_1x1", "x"])


@st.composite
def darts_cells(draw):
    n_nodes = draw(st.integers(1, 8))
    edges = [GenoEdge(node=n, input=draw(st.integers(0, n - 1)), op=draw(OPS))
             for n in range(2, 2 + n_nodes) for _ in range(2)]
    concat = draw(st.lists(st.integers(0, n_nodes + 1), min_size=1, max_size=n_nodes + 2, unique=True))
    return GenoCell(n_inputs=2, n_nodes=n_nodes, edges=edges, concat=concat)


@st.composite
def any_cells(draw):
    n_inputs, n_nodes = draw(st.integers(1, 3)), draw(st.integers(1, 5))
    edges = []
    for n in range(n_inputs, n_inputs + n_nodes):
        inputs = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n + 1))
        edges += [GenoEdge(node=n, input=i, op=draw(OPS)) for i in inputs]
    edges = draw(st.permutations(edges))
    concat = draw(st.lists(st.integers(0, n_inputs + n_nodes - 1), min_size=1, unique=True))
    return GenoCell(n_inputs=n_inputs, n_nodes=n_nodes, edges=edges, concat=concat)


NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(NAMES, darts_cells(), min_size=1, max_size=3))
def test_random_darts_cells_round_trip(cells):
    g = Genotype(cells=cells)
    if any(keyword.iskeyword(name) for name in cells):  # `Genotype(if=...)` is not Python: JSON instead
        with pytest.raises(GenotypeError, match="Python keywords"):
            G.to_darts(g)
        assert G.to_text(g).startswith("{")
    else:
        assert G.from_darts(G.to_darts(g)) == g
    assert G.from_json(G.to_json(g)) == g
    assert G.parse_any(G.to_text(g)) == g


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(NAMES, any_cells(), max_size=3),
       st.lists(st.tuples(NAMES, OPS), unique_by=lambda t: t[0], max_size=4),
       st.none() | NAMES)
def test_random_genotypes_round_trip_through_json(cells, layers, space):
    assume(cells or layers)  # a file that chooses nothing is refused (test below); nasc never writes one
    g = Genotype(space=space, fingerprint="abc123", cells=cells, layers=tuple(layers))
    assert G.from_json(json.loads(json.dumps(G.to_json(g)))) == g


def test_compiler_genotype_does_not_import_torch():
    code = "import sys, nasc.compiler.genotype; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("text, needle", [
    ("[1, 2, 3]", "invalid genotype JSON: expected an object, got a list"),
    ("null", "invalid genotype JSON: expected an object, got null"),
    ('"|nor_conv_3x3~0|"', "invalid genotype JSON: expected an object, got a string"),
    ('{"normal": [["sep_conv_3x3", 0]], "normal_concat": [2]}',
     "'normal' is a field of DARTS' Genotype(...) notation; in JSON each cell goes under \"cells\""),
    ('{"cells": {}}', "missing key 'format'"),
])
def test_json_of_the_wrong_shape_says_so_and_shows_the_layout(text, needle):
    with pytest.raises(GenotypeError) as info:
        G.parse_any(text)
    assert needle in info.value.message
    assert "Genotype(...) call" not in info.value.message and "did you mean 'format'" not in info.value.message
    assert info.value.hint.startswith('a genotype file is laid out as {"format": "nasc-genotype/1", "cells": {')


def test_an_empty_source_is_no_genotype_not_the_current_directory():
    with pytest.raises(GenotypeError, match=r"no genotype given \(an empty argument\)"):
        G.read_source("")
    with pytest.raises(GenotypeError, match="no genotype given"):
        G.read_source("  ")


def test_a_missing_file_says_which_file_is_missing(tmp_path):
    """The README's `darts/cnn/genotypes.py:DARTS_V2` names a file of the official code: when it is not
    there the error says so, rather than leaving the user to guess what else the argument could be."""
    with pytest.raises(GenotypeError, match="neither a file") as e:
        G.read_source(str(tmp_path / "darts/cnn/genotypes.py") + ":DARTS_V2")
    assert f"there is no file {tmp_path / 'darts/cnn/genotypes.py'}" in e.value.hint
    assert "official DARTS code" in e.value.hint
    with pytest.raises(GenotypeError, match="neither a file") as e:
        G.read_source(str(tmp_path / "missing.json"))
    assert e.value.hint == f"there is no file or directory {tmp_path / 'missing.json'}"


def test_a_folder_that_is_not_a_run_is_not_an_unfinished_search(tmp_path):
    """`nasc viz .` in a project folder said '. has no genotype.json; is the search finished?', sending the
    user to wait for a search that does not exist; a run directory without its genotype still asks that."""
    with pytest.raises(GenotypeError, match="is not a nasc run directory") as e:
        G.read_source(str(tmp_path))
    assert "search finished" not in (e.value.hint or "")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(GenotypeError, match="has no genotype.json") as e:
        G.read_source(str(tmp_path))
    assert e.value.hint == "is the search finished?"


def test_notation_errors_name_notations_not_python_functions():
    for bad in (lambda: G.to_darts(G.from_nb201(NB201)),
                lambda: G.to_darts(Genotype(cells={"normal": cell(2, 2, [(2, 0, "a"), (3, 1, "c")], [2, 3])}))):
        with pytest.raises(GenotypeError) as info:
            bad()
        assert "to_json" not in info.value.message and "to_nb201" not in info.value.message
        assert "write it as JSON" in info.value.message


def test_a_flat_darts_list_with_an_odd_count_points_to_per_node_lists():
    odd = "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('skip_connect', 0)], normal_concat=[2, 3])"
    with pytest.raises(GenotypeError) as info:
        G.from_darts(odd)
    assert "one list per node" in info.value.hint
    per_node = "Genotype(normal=[[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], [('skip_connect', 0)]], normal_concat=[2, 3])"
    assert [len(G.from_darts(per_node).cells["normal"].incoming(n)) for n in (2, 3)] == [2, 1]


@pytest.mark.parametrize("text", ['{"format": "nasc-genotype/1"}',
                                  '{"format": "nasc-genotype/1", "cells": {}, "layers": []}'])
def test_a_genotype_file_that_chooses_nothing_is_refused(text):
    with pytest.raises(GenotypeError, match="no cells and no layers"):
        G.parse_any(text)
