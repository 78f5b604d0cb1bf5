"""Genotypes: what a search returns, and the published text forms they travel in.

A genotype names the op kept on each edge of each cell type (cell spaces) or the
op chosen for each searchable layer (chain spaces). Papers and official repos
publish genotypes in several incompatible notations (DARTS, pt.darts, AutoDL,
sharpDARTS, SNAS, NAS-Bench-201); this module reads them all into one data model
so that the runtime builds networks from one thing and results from other
codebases can be evaluated without hand conversion.

Node numbering is DARTS': states 0..n_inputs-1 are the cell inputs, and the
intermediate nodes follow. Text is never evaluated: DARTS notation is read with
`ast.parse` and a walk over literal nodes, so a genotype file cannot run code.
"""

from __future__ import annotations

import ast
import contextlib
import itertools
import json
import keyword
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from nasc.atomic import write_text_atomic
from nasc.compiler.run_config import wrong_type
from nasc.errors import GenotypeError, did_you_mean

FORMAT = "nasc-genotype/1"

# AutoDL spells two DARTS ops differently (xautodl/models/cell_operations.py).
AUTODL_ALIASES = {
    "dua_sepc_3x3": "sep_conv_3x3",
    "dua_sepc_5x5": "sep_conv_5x5",
    "dil_sepc_3x3": "dil_conv_3x3",
    "dil_sepc_5x5": "dil_conv_5x5",
}
# SNAS "edge_all" lists every incoming edge of the 4 DARTS nodes: 2+3+4+5 entries.
_EDGE_ALL_COUNTS = (2, 3, 4, 5)
# sharpDARTS' Genotype has a `layout` field, and its train.py builds every layout='cell' genotype with its own
# OPS (ahundt/sharpDARTS cnn/operations.py), where dil_conv is a doubled SharpSepConv, not DARTS' DilConv: such
# a genotype belongs to spaces/sharpdarts.nas. layout='raw_weights' entries hold α weights, not a genotype.
SHARPDARTS_SPACE = "sharpdarts"
_NUMPY_FLOATS = ("float16", "float32", "float64")
MAX_RANGE = 10_000  # states in a `range(a, b)` of DARTS notation: a cell with more is a typo
_NB201_ENTRY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)~([0-9]+)")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@attrs.frozen(kw_only=True)
class GenoEdge:
    """One kept edge: state `input` feeds intermediate node `node` through `op`."""

    node: int
    input: int
    op: str


@attrs.frozen(kw_only=True)
class GenoCell:
    """The kept edges of one cell type; validated on construction so no invalid cell exists."""

    n_inputs: int
    n_nodes: int
    edges: tuple[GenoEdge, ...] = attrs.field(converter=tuple)
    concat: tuple[int, ...] = attrs.field(converter=tuple)

    def __attrs_post_init__(self) -> None:
        problems = _cell_problems(self)
        if problems:
            raise GenotypeError("invalid cell: " + "; ".join(problems))

    @property
    def n_states(self) -> int:
        return self.n_inputs + self.n_nodes

    def incoming(self, node: int) -> tuple[GenoEdge, ...]:
        """Edges into `node`, in the stored order (DARTS: strongest first)."""
        return tuple(e for e in self.edges if e.node == node)


def _layers(value: Any) -> tuple[tuple[str, str], ...]:
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(tuple(item) for item in items)


@attrs.frozen(kw_only=True)
class Genotype:
    """A searched architecture: one op per kept cell edge and/or per searchable layer."""

    space: str | None = None
    fingerprint: str | None = None
    cells: dict[str, GenoCell] = attrs.field(factory=dict, converter=dict)
    layers: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_layers)

    def __attrs_post_init__(self) -> None:
        for name, cell in self.cells.items():
            if not isinstance(name, str) or not name or not name.isprintable():
                raise GenotypeError(f"cell names must be non-empty strings without control characters, got {name!r}")
            if not isinstance(cell, GenoCell):
                raise GenotypeError(f"cell {name!r} must be a GenoCell, got {type(cell).__name__}")
        seen: set[str] = set()
        for item in self.layers:
            if len(item) != 2 or not all(isinstance(s, str) and s and s.isprintable() for s in item):
                raise GenotypeError(f"a layer choice is a (layer, op) pair of non-empty strings without control "
                                    f"characters, got {item!r}")
            if item[0] in seen:
                raise GenotypeError(f"layer {item[0]!r} is chosen twice")
            seen.add(item[0])


def _cell_problems(cell: GenoCell) -> list[str]:
    if not (_is_int(cell.n_inputs) and cell.n_inputs >= 1):
        return [f"n_inputs must be an integer >= 1, got {cell.n_inputs!r}"]
    if not (_is_int(cell.n_nodes) and cell.n_nodes >= 1):
        return [f"n_nodes must be an integer >= 1, got {cell.n_nodes!r}"]
    lo, hi = cell.n_inputs, cell.n_states
    problems: list[str] = []
    fed: set[int] = set()
    for k, e in enumerate(cell.edges):
        if not isinstance(e, GenoEdge):
            problems.append(f"edge {k} is not a GenoEdge: {e!r}")
        elif not isinstance(e.op, str) or not e.op:
            problems.append(f"edge {k}: op must be a non-empty string, got {e.op!r}")
        elif not e.op.isprintable():  # a control character makes an invalid SVG drawing and breaks the text views
            problems.append(f"edge {k}: op {e.op!r} holds a control character")
        elif not (_is_int(e.node) and lo <= e.node < hi):
            problems.append(f"edge {k}: node {e.node!r} is not an intermediate node (expected {lo}..{hi - 1})")
        elif not (_is_int(e.input) and 0 <= e.input < e.node):
            problems.append(f"edge {k}: input {e.input!r} of node {e.node} must be a state before it (0..{e.node - 1})")
        else:
            fed.add(e.node)
    if not problems:
        # n_nodes comes from the file and may be huge (a typo): list a few unfed nodes, count the rest
        n_unfed = cell.n_nodes - len(fed)
        if n_unfed:
            first = list(itertools.islice((n for n in range(lo, hi) if n not in fed), 10))
            listed = str(first) if n_unfed <= 10 else f"[{', '.join(map(str, first[:9]))}, ...] ({n_unfed:,} in all)"
            problems.append(f"node(s) {listed} have no incoming edge")
    if not cell.concat:
        problems.append("concat must name at least one state")
    for s in cell.concat:
        if not (_is_int(s) and 0 <= s < hi):
            problems.append(f"concat index {s!r} is not a state (expected 0..{hi - 1})")
    if len(set(cell.concat)) != len(cell.concat):
        problems.append(f"concat {list(cell.concat)} repeats a state")
    return problems


def _make_cell(where: str, **kw: Any) -> GenoCell:
    try:
        return GenoCell(**kw)
    except GenotypeError as e:
        raise GenotypeError(f"{where}: {e.message.removeprefix('invalid cell: ')}") from None


# ---------------------------------------------------------------- JSON


def to_json(g: Genotype) -> dict:
    """The stable JSON form (`nasc-genotype/1`), the one `save` writes."""
    return {
        "format": FORMAT,
        "space": g.space,
        "fingerprint": g.fingerprint,
        "cells": {
            name: {
                "n_inputs": c.n_inputs,
                "n_nodes": c.n_nodes,
                "edges": [{"node": e.node, "input": e.input, "op": e.op} for e in c.edges],
                "concat": list(c.concat),
            }
            for name, c in g.cells.items()
        },
        "layers": [{"layer": name, "op": op} for name, op in g.layers],
    }


def _jerr(where: str, msg: str) -> GenotypeError:
    return GenotypeError(f"invalid genotype JSON: {where}: {msg}" if where else f"invalid genotype JSON: {msg}")


def _jobject(d: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    if not isinstance(d, dict):
        raise _jerr(where, f"expected an object, got {type(d).__name__}")
    for key in d:
        if key not in required + optional:
            hint = did_you_mean(str(key), required + optional)
            raise _jerr(where, f"unknown key {key!r}" + (f" ({hint})" if hint else ""))
    for key in required:
        if key not in d:
            raise _jerr(where, f"missing key {key!r}")
    return d


def _jint(v: Any, where: str) -> int:
    if not _is_int(v):
        raise _jerr(where, f"expected an integer, got {v!r}")
    return v


def _jstr(v: Any, where: str, *, nullable: bool = False) -> str | None:
    if v is None and nullable:
        return None
    if not isinstance(v, str) or not v:
        raise _jerr(where, f"expected a non-empty string{' or null' if nullable else ''}, got {v!r}")
    return v


def _jlist(v: Any, where: str) -> list:
    if not isinstance(v, list):
        raise _jerr(where, f"expected a list, got {type(v).__name__}")
    return v


# what a genotype file looks like, for the errors about its overall shape
JSON_LAYOUT = ("a genotype file is laid out as "
               '{"format": "nasc-genotype/1", "cells": {"normal": {"n_inputs": 2, "n_nodes": 4, '
               '"edges": [{"node": 2, "input": 0, "op": "sep_conv_3x3"}, ...], "concat": [2, 3, 4, 5]}, ...}} '
               '(`nasc genotype convert FILE --to json` writes it from DARTS or NB201 notation)')
_TOP_KEYS = ("space", "fingerprint", "cells", "layers", "source", "notes")


def _json_kind(v: Any) -> str:
    return {list: "a list", dict: "an object", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number")


def _layout_error(d: Any) -> GenotypeError | None:
    """A clear error for JSON that is not laid out like a genotype file at all, else None."""
    if not isinstance(d, dict):
        return GenotypeError(f"invalid genotype JSON: expected an object, got {_json_kind(d)}", hint=JSON_LAYOUT)
    unknown = [k for k in d if k not in ("format",) + _TOP_KEYS]
    darts = [k for k in unknown if isinstance(k, str) and (k in ("normal", "reduce") or k.endswith("_concat"))]
    if darts:
        return GenotypeError(f"invalid genotype JSON: {darts[0]!r} is a field of DARTS' Genotype(...) notation; in "
                             "JSON each cell goes under \"cells\", with its edges as {\"node\", \"input\", \"op\"} "
                             "objects", hint=JSON_LAYOUT)
    if unknown and "format" not in d:
        return GenotypeError(f"invalid genotype JSON: unknown key {unknown[0]!r} and no \"format\"",
                             hint=JSON_LAYOUT)
    if "format" not in d:
        return GenotypeError("invalid genotype JSON: missing key 'format'", hint=JSON_LAYOUT)
    return None


def from_json(d: Any) -> Genotype:
    """Read the JSON form, checking every type and index; errors name the offending key."""
    error = _layout_error(d)
    if error is not None:
        raise error
    # "source" and "notes" are free-text provenance (published genotypes carry their paper and repository)
    d = _jobject(d, "", ("format",), _TOP_KEYS)
    if d["format"] != FORMAT:
        raise _jerr("format", f"expected {FORMAT!r}, got {d['format']!r}")
    cells: dict[str, GenoCell] = {}
    cells_d = d.get("cells", {})
    if not isinstance(cells_d, dict):
        raise _jerr("cells", f"expected an object, got {type(cells_d).__name__}")
    for name, c in cells_d.items():
        where = f"cells.{name}"
        _jstr(name, "cells")
        c = _jobject(c, where, ("n_inputs", "n_nodes", "edges", "concat"))
        edges = []
        for k, e in enumerate(_jlist(c["edges"], f"{where}.edges")):
            ew = f"{where}.edges[{k}]"
            e = _jobject(e, ew, ("node", "input", "op"))
            edges.append(GenoEdge(node=_jint(e["node"], f"{ew}.node"), input=_jint(e["input"], f"{ew}.input"),
                                  op=_jstr(e["op"], f"{ew}.op")))
        concat = [_jint(s, f"{where}.concat[{k}]") for k, s in enumerate(_jlist(c["concat"], f"{where}.concat"))]
        # read outside the try below, whose errors are about the cell and get its prefix
        n_inputs, n_nodes = _jint(c["n_inputs"], f"{where}.n_inputs"), _jint(c["n_nodes"], f"{where}.n_nodes")
        try:
            cells[name] = GenoCell(n_inputs=n_inputs, n_nodes=n_nodes, edges=edges, concat=concat)
        except GenotypeError as e:
            raise _jerr(where, e.message.removeprefix("invalid cell: ")) from None
    layers = []
    for k, item in enumerate(_jlist(d.get("layers", []), "layers")):
        item = _jobject(item, f"layers[{k}]", ("layer", "op"))
        layers.append((_jstr(item["layer"], f"layers[{k}].layer"), _jstr(item["op"], f"layers[{k}].op")))
    if not cells and not layers:  # would show nothing and train the space's fixed network as if it were chosen
        raise GenotypeError("invalid genotype JSON: no cells and no layers: it chooses nothing",
                            hint=JSON_LAYOUT)
    try:
        return Genotype(space=_jstr(d.get("space"), "space", nullable=True),
                        fingerprint=_jstr(d.get("fingerprint"), "fingerprint", nullable=True),
                        cells=cells, layers=tuple(layers))
    except GenotypeError as e:
        raise _jerr("", e.message) from None


def save(g: Genotype, path: str | os.PathLike) -> None:
    """Write the JSON form atomically, so a crash never leaves a half-written genotype."""
    path = Path(path)
    text = json.dumps(to_json(g), indent=2) + "\n"
    try:
        write_text_atomic(path, text)
    except OSError as e:
        raise GenotypeError(f"cannot write genotype to {path}: {e.strerror or e}") from e


def load(path: str | os.PathLike, name: str | None = None) -> Genotype:
    """Read a genotype file in any supported format (JSON, NB201 string, DARTS notation), or the genotype
    assigned to `name` in a file of DARTS-notation genotypes (an official genotypes.py)."""
    try:
        # utf-8-sig drops a byte-order mark (editors on Windows write one), as .nas files do
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise GenotypeError(f"cannot read genotype file {path}: {getattr(e, 'strerror', None) or e}") from e
    try:
        return parse_any(text) if name is None else from_darts(text, name=name)
    except GenotypeError as e:
        raise GenotypeError(f"{path}: {e.message}", hint=e.hint) from None


# ---------------------------------------------------------------- DARTS notation


def _derr(msg: str) -> GenotypeError:
    return GenotypeError(f"invalid DARTS genotype: {msg}")


def _snippet(node: ast.AST) -> str:
    s = ast.unparse(node)
    return s if len(s) <= 60 else s[:57] + "..."


def _literal(node: ast.AST) -> Any:
    """Value of a literal expression: constants, lists, tuples, negative numbers and range(a, b)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(x) for x in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        if isinstance(node.operand.value, (int, float)):
            return -node.operand.value
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _NUMPY_FLOATS
            and isinstance(node.func.value, ast.Name) and node.func.value.id in ("np", "numpy")
            and len(node.args) == 1 and not node.keywords):  # numpy 2 prints an edge weight as np.float32(0.25)
        value = _literal(node.args[0])
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range"
            and not node.keywords and 1 <= len(node.args) <= 2):
        bounds = [_literal(a) for a in node.args]
        if all(_is_int(b) for b in bounds):
            if len(range(*bounds)) > MAX_RANGE:  # `range(2, 10**9)` written out must not hang building the list
                raise _derr(f"line {node.lineno}, col {node.col_offset + 1}: {_snippet(node)!r} names more than "
                            f"{MAX_RANGE:,} states")
            return list(range(*bounds))
    raise _derr(f"line {node.lineno}, col {node.col_offset + 1}: {_snippet(node)!r} is not a literal "
                "(only strings, numbers, lists, tuples and range(a, b) are read)")


def _is_genotype_call(node: ast.AST) -> bool:
    func = getattr(node, "func", None)
    return isinstance(node, ast.Call) and ((isinstance(func, ast.Name) and func.id == "Genotype")
                                           or (isinstance(func, ast.Attribute) and func.attr == "Genotype"))


def _named_statement(tree: ast.Module, name: str) -> ast.Assign:
    """The statement `name = Genotype(...)` of a file of several (an official genotypes.py), following
    aliases such as DARTS' `DARTS = DARTS_V2`; the last assignment wins, as when Python runs the file."""
    assigned = {t.id: s for s in tree.body if isinstance(s, ast.Assign) for t in s.targets if isinstance(t, ast.Name)}
    seen = set()
    while name in assigned and isinstance(assigned[name].value, ast.Name) and name not in seen:
        seen.add(name)
        name = assigned[name].value.id
    if name not in assigned or not _is_genotype_call(assigned[name].value):
        names = [n for n, s in assigned.items() if _is_genotype_call(s.value)]
        raise GenotypeError(f"invalid DARTS genotype: no Genotype(...) named {name!r}",
                            hint=did_you_mean(name, names) or f"genotypes here: {', '.join(names) or 'none'}")
    return assigned[name]


def _genotype_fields(text: str, name: str | None = None) -> dict[str, Any]:
    """The keyword fields of the single `Genotype(...)` call in `text` (or of the one assigned to `name`),
    as literal values."""
    try:
        tree = ast.parse(text.strip(), mode="exec")
    except SyntaxError as e:
        raise _derr(f"cannot parse: {e.msg} (line {e.lineno}, col {e.offset})") from None
    if name is not None:
        tree.body = [_named_statement(tree, name)]
    if len(tree.body) != 1:
        names = [t.id for s in tree.body if isinstance(s, ast.Assign) and _is_genotype_call(s.value)
                 for t in s.targets if isinstance(t, ast.Name)]
        raise GenotypeError(f"invalid DARTS genotype: expected one Genotype(...) expression, found {len(tree.body)} "
                            "statements", hint=f"name one of a file's genotypes as FILE:NAME, NAME one of "
                                               f"{', '.join(names[:12])}{', ...' if len(names) > 12 else ''}"
                                               if names else None)
    stmt = tree.body[0]
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        call = stmt.value
    elif isinstance(stmt, ast.Expr):
        call = stmt.value
    else:
        raise _derr(f"expected Genotype(...) or NAME = Genotype(...), got {_snippet(stmt)!r}")
    if isinstance(call, ast.Dict) and call.keys and all(isinstance(k, ast.Constant) and isinstance(k.value, str)
                                                        for k in call.keys):
        # AutoDL's NASNet-space searches (GDAS, SETN, DARTS) return and log a dict, {'normal': [...], ...}
        return {k.value: _literal(v) for k, v in zip(call.keys, call.values)}
    func = getattr(call, "func", None)
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if not isinstance(call, ast.Call) or name != "Genotype":
        raise _derr(f"expected a Genotype(...) call, got {_snippet(call)!r}")
    fields: dict[str, Any] = {}
    # namedtuple positional order in every DARTS-family repo; extra positionals are ignored fields.
    for key, arg in zip(("normal", "normal_concat", "reduce", "reduce_concat"), call.args):
        if isinstance(arg, ast.Starred):
            raise _derr(f"unsupported *{_snippet(arg.value)}")
        fields[key] = _literal(arg)
    extra = [_literal(arg) for arg in call.args[4:]]
    if len(extra) == 1 and isinstance(extra[0], str):  # sharpDARTS' fifth field, layout, given positionally
        fields["layout"] = extra[0]
    for kw in call.keywords:
        if kw.arg is None:
            raise _derr(f"unsupported **{_snippet(kw.value)}")
        if kw.arg in fields:
            raise _derr(f"field {kw.arg!r} given twice")
        fields[kw.arg] = _literal(kw.value)
    return fields


def _is_pair(x: Any) -> bool:
    return (isinstance(x, (list, tuple)) and len(x) in (2, 3) and isinstance(x[0], str) and bool(x[0])
            and _is_int(x[1]) and (len(x) == 2 or isinstance(x[2], (int, float))))


def _darts_cell(name: str, value: Any, concat: Any) -> GenoCell:
    """One cell from its DARTS-family value: flat pairs, per-node groups, or SNAS edge_all."""
    if isinstance(concat, tuple):
        concat = list(concat)
    if not isinstance(concat, list) or not concat or not all(_is_int(s) for s in concat):
        raise _derr(f"field '{name}_concat': expected a list of state indices or range(a, b), got {concat!r}")
    if not isinstance(value, (list, tuple)) or not value:
        raise _derr(f"field {name!r}: expected a non-empty list of (op, input) pairs, got {value!r}")
    flat = isinstance(value[0], (list, tuple)) and bool(value[0]) and isinstance(value[0][0], str)
    groups: list[list] = []
    for k, entry in enumerate(value):
        if flat and not _is_pair(entry):
            raise _derr(f"field {name!r}, entry {k}: expected an (op: str, input: int) pair, got {entry!r}")
        if not flat:
            if not isinstance(entry, (list, tuple)) or not entry:
                raise _derr(f"field {name!r}, node {k}: expected a list of (op, input) pairs, got {entry!r}")
            for p in entry:
                if not _is_pair(p):
                    raise _derr(f"field {name!r}, node {k}: expected an (op: str, input: int) pair, got {p!r}")
            groups.append(list(entry))
    if flat:
        if len(value) == sum(_EDGE_ALL_COUNTS) and max(concat) <= 5:
            counts: tuple[int, ...] = _EDGE_ALL_COUNTS
        elif len(value) % 2 == 0:
            counts = (2,) * (len(value) // 2)
        else:
            raise GenotypeError(f"invalid DARTS genotype: field {name!r}: a flat list holds two (op, input) pairs "
                                f"per node (or {sum(_EDGE_ALL_COUNTS)} for SNAS edge_all), got {len(value)} entries",
                                hint=f"for another number of edges per node write one list per node, "
                                     f"{name}=[[(op, 0)], [(op, 0), (op, 1), (op, 2)], ...], or use JSON")
        it = iter(value)
        groups = [[next(it) for _ in range(c)] for c in counts]
    edges = [GenoEdge(node=2 + k, input=p[1], op=AUTODL_ALIASES.get(p[0], p[0]))
             for k, group in enumerate(groups) for p in group]
    return _make_cell(f"invalid DARTS genotype: cell {name!r}", n_inputs=2, n_nodes=len(groups),
                      edges=edges, concat=concat)


def from_darts(text: str, *, space: str | None = None, name: str | None = None) -> Genotype:
    """Read DARTS-family notation (DARTS, pt.darts/DropNAS, AutoDL, sharpDARTS, SNAS edge_all); `name` picks
    `name = Genotype(...)` from a file of several, such as an official genotypes.py."""
    try:
        fields = _genotype_fields(text, name)
    except (MemoryError, RecursionError):  # how CPython's parser and the AST walk give up on deep nesting
        raise _derr("cannot parse: the text is nested too deeply") from None
    for key, value in fields.items():
        if key.endswith("_concat") and key.removesuffix("_concat") not in fields:
            raise _derr(f"field {key!r} has no matching {key.removesuffix('_concat')!r} field")
        if (not key.endswith("_concat") and key + "_concat" not in fields and isinstance(value, (list, tuple))
                and value and isinstance(value[0], (list, tuple))):
            raise _derr(f"missing field '{key}_concat' (the states cell {key!r} concatenates, e.g. [2, 3, 4, 5])")
    layout = fields.pop("layout", None)
    if layout is not None and layout != "cell":
        raise GenotypeError(f"invalid DARTS genotype: sharpDARTS layout={layout!r} holds architecture weights, "
                            "not a genotype (only layout='cell' lists (op, input) pairs)",
                            hint="paste the layout='cell' genotype of the same search (e.g. SHARPER_MAX_W, "
                                 "not SHARPER_MAX_W_WEIGHTS)")
    if layout == "cell" and space is None:
        space = SHARPDARTS_SPACE  # sharpDARTS' ops, not DARTS': its dil_conv differs (see SHARPDARTS_SPACE)
    names = [k for k in fields if not k.endswith("_concat") and k + "_concat" in fields]
    if not names:
        raise _derr("no cell found; expected fields like normal=[(op, input), ...], normal_concat=[2, 3, 4, 5]")
    return Genotype(space=space, cells={n: _darts_cell(n, fields[n], fields[n + "_concat"]) for n in names})


def _by_node(cell: GenoCell) -> list[list[GenoEdge]]:
    return [list(cell.incoming(n)) for n in range(cell.n_inputs, cell.n_states)]


def _is_complete(cell: GenoCell) -> bool:
    """Every node lists every earlier state exactly once (NB201, SNAS edge_all)."""
    return all(sorted(e.input for e in group) == list(range(cell.n_inputs + k))
               for k, group in enumerate(_by_node(cell)))


def _cell_order(g: Genotype) -> list[str]:
    return [n for n in ("normal", "reduce") if n in g.cells] + [n for n in g.cells if n not in ("normal", "reduce")]


def to_darts(g: Genotype) -> str:
    """DARTS notation, `Genotype(normal=[(op, input), ...], normal_concat=[...], ...)`."""
    if g.layers:
        raise GenotypeError("DARTS notation holds cells only, and this genotype has searchable layers")
    if not g.cells:
        raise GenotypeError("DARTS notation needs at least one cell, and this genotype has none")
    parts = []
    for name in _cell_order(g):
        cell = g.cells[name]
        if not name.isidentifier() or keyword.iskeyword(name):
            raise GenotypeError(f"cell name {name!r} cannot be a DARTS field name (DARTS notation is a Python "
                                "call, whose keyword names must be identifiers and not Python keywords); write it as JSON")
        if name.endswith("_concat") or name == "layout":  # a reader takes these fields for another cell's concat
            raise GenotypeError(f"cell name {name!r} cannot be a DARTS field name: DARTS notation reads "
                                "'<cell>_concat' as a cell's output states and 'layout' as sharpDARTS' layout; "
                                "write it as JSON")
        if cell.n_inputs != 2:
            raise GenotypeError(f"cell {name!r} has {cell.n_inputs} input(s); DARTS notation assumes 2 "
                                "(the two previous cells); write it as JSON, or as an NB201 string if it is one")
        groups = _by_node(cell)
        edge_all = tuple(len(gr) for gr in groups) == _EDGE_ALL_COUNTS and _is_complete(cell)
        bad = [(cell.n_inputs + k, len(gr)) for k, gr in enumerate(groups) if len(gr) != 2]
        if bad and not edge_all:
            node, count = bad[0]
            raise GenotypeError(f"cell {name!r}: DARTS notation needs exactly 2 incoming edges per node (pairs 2i "
                                f"and 2i+1 feed node 2+i), but node {node} has {count}; write it as JSON")

        def pairs(es: list[GenoEdge]) -> str:
            return ", ".join(f"({e.op!r}, {e.input})" for e in es)

        # 7 nodes x 2 pairs is also 14 entries: write per-node lists when a reader would take it for edge_all.
        if len(groups) == 7 and max(cell.concat) <= 5:
            body = "[" + ", ".join(f"[{pairs(gr)}]" for gr in groups) + "]"
        else:
            body = f"[{pairs([e for gr in groups for e in gr])}]"
        parts += [f"{name}={body}", f"{name}_concat={list(cell.concat)}"]
    if g.space == SHARPDARTS_SPACE:  # as sharpDARTS writes it; without it the text reads back as DARTS' ops
        parts.append("layout='cell'")
    return f"Genotype({', '.join(parts)})"


# ---------------------------------------------------------------- NAS-Bench-201


def _nerr(msg: str) -> GenotypeError:
    return GenotypeError(f"invalid NB201 arch string: {msg}")


def from_nb201(text: str, *, cell_name: str = "cell", space: str | None = None) -> Genotype:
    """Read `|op~0|+|op~0|op~1|+...`: node i lists each earlier node j exactly once, in any order."""
    s = text.strip()
    if not s:
        raise _nerr("empty string")
    parts = s.split("+")
    edges: list[GenoEdge] = []
    for i, part in enumerate(parts, start=1):
        if len(part) < 2 or not part.startswith("|") or not part.endswith("|"):
            raise _nerr(f"node {i}: expected '|op~j|op~j|...|', got {part!r}")
        chosen: dict[int, str] = {}
        for entry in part[1:-1].split("|"):
            m = _NB201_ENTRY.fullmatch(entry)
            if not m:
                raise _nerr(f"node {i}: bad entry {entry!r}, expected 'op~j' (op name, '~', input node)")
            op, j = m[1], int(m[2])
            if j >= i:
                raise _nerr(f"node {i}: input {j} is not an earlier node (expected 0..{i - 1})")
            if j in chosen:
                raise _nerr(f"node {i}: input {j} is listed twice")
            chosen[j] = op
        missing = [j for j in range(i) if j not in chosen]
        if missing:
            raise _nerr(f"node {i}: no entry for input(s) {missing}; NB201 nodes list every earlier node")
        # Input order carries no meaning in NB201, so store edges sorted: equal cells compare equal.
        edges += [GenoEdge(node=i, input=j, op=chosen[j]) for j in sorted(chosen)]
    cell = GenoCell(n_inputs=1, n_nodes=len(parts), edges=edges, concat=(len(parts),))
    return Genotype(space=space, cells={cell_name: cell})


def to_nb201(g: Genotype) -> str:
    """The NAS-Bench-201 arch string of a one-cell, one-input, complete-DAG genotype."""
    if g.layers or len(g.cells) != 1:
        raise GenotypeError(f"an NB201 string holds exactly one cell and no layers; this genotype has "
                            f"{len(g.cells)} cell(s) and {len(g.layers)} layer(s)")
    ((name, cell),) = g.cells.items()
    if cell.n_inputs != 1:
        raise GenotypeError(f"cell {name!r} has {cell.n_inputs} inputs; an NB201 cell has 1")
    if cell.concat != (cell.n_nodes,):
        raise GenotypeError(f"cell {name!r} outputs states {list(cell.concat)}; an NB201 cell outputs "
                            f"its last node only ([{cell.n_nodes}])")
    if not _is_complete(cell):
        raise GenotypeError(f"cell {name!r} is not a complete DAG; an NB201 string gives every node one "
                            "edge from each earlier node (use op 'none' for a missing one)")
    for e in cell.edges:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", e.op):
            raise GenotypeError(f"op {e.op!r} cannot appear in an NB201 string")
    return "+".join("|" + "".join(f"{e.op}~{e.input}|" for e in sorted(group, key=lambda e: e.input))
                    for group in _by_node(cell))


# ---------------------------------------------------------------- any text


def to_text(g: Genotype) -> str:
    """The customary text form: DARTS notation, an NB201 string, or else JSON."""
    if g.cells and not g.layers:
        cells = list(g.cells.values())
        if all(c.n_inputs == 2 for c in cells) or (len(cells) == 1 and cells[0].n_inputs == 1):
            with contextlib.suppress(GenotypeError):
                return to_darts(g) if cells[0].n_inputs == 2 else to_nb201(g)
    return json.dumps(to_json(g), indent=2)


def parse_any(text: str, *, space: str | None = None) -> Genotype:
    """Read JSON, an NB201 string (starts with '|') or DARTS notation, detected from the text."""
    s = text.strip()
    if not s:
        raise GenotypeError("empty genotype text")
    if s.startswith("{"):
        try:
            data = json.loads(s)
        except json.JSONDecodeError as e:
            with contextlib.suppress(GenotypeError):  # a Python dict, as AutoDL's NASNet-space searches log it
                return from_darts(s, space=space)
            raise GenotypeError(f"invalid genotype JSON: {e.msg} (line {e.lineno}, col {e.colno})") from None
        except ValueError:  # the one other ValueError: an integer longer than Python converts
            raise GenotypeError(f"invalid genotype JSON: a number has more than {sys.get_int_max_str_digits():,} "
                                "digits") from None
        except RecursionError:  # the json module recurses once per nested array or object
            raise GenotypeError("invalid genotype JSON: nested too deeply") from None
        return from_json(data)
    try:  # JSON, but not an object ([1, 2], null): no other notation parses as JSON
        data = json.loads(s)
    except ValueError:
        pass
    except RecursionError:
        raise GenotypeError("invalid genotype JSON: nested too deeply", hint=JSON_LAYOUT) from None
    else:
        raise _layout_error(data)
    if s.startswith("|"):
        return from_nb201(s, space=space)
    return from_darts(s, space=space)


def canonical_str(g: Genotype) -> str:
    """One line naming the architecture only, equal for equal architectures (for logs and hashes).

    Edges are sorted within each node: DARTS lists them by strength, which is how
    the search ranked them, not part of the architecture.
    """
    parts = []
    if g.cells:
        cells = {n: attrs.evolve(c, edges=sorted(c.edges, key=lambda e: (e.node, e.input, e.op)))
                 for n, c in g.cells.items()}
        text = to_text(Genotype(cells=cells))
        if text.startswith("{"):
            text = json.dumps(to_json(Genotype(cells=cells))["cells"], sort_keys=True, separators=(",", ":"))
        parts.append(text)
    if g.layers:
        parts.append("|".join(f"{layer}:{op}" for layer, op in g.layers))
    return " ; ".join(parts)


# ---------------------------------------------------------------- space check

CellShape = tuple[int, int, "dict[tuple[int, int], set[str]] | None"]


def check_against(g: Genotype, cells: Mapping[str, CellShape],
                  layers: Mapping[str, set[str]] | None = None) -> None:
    """Raise one GenotypeError listing every way `g` does not fit the space's shape.

    `cells` maps each cell name to (n_inputs, n_nodes, candidate ops per (node, input)
    edge, or None when every DAG edge exists and any op is allowed); `layers` maps
    each searchable layer to its candidate ops.
    """
    problems: list[str] = []
    for name, cell in g.cells.items():
        if name not in cells:
            hint = did_you_mean(name, cells)
            problems.append(f"unknown cell {name!r}" + (f" ({hint})" if hint else "")
                            + f"; the space's cells are {sorted(cells)}")
            continue
        n_inputs, n_nodes, allowed = cells[name]
        if (cell.n_inputs, cell.n_nodes) != (n_inputs, n_nodes):
            problems.append(f"cell {name!r} has {cell.n_inputs} inputs and {cell.n_nodes} nodes; "
                            f"the space's has {n_inputs} inputs and {n_nodes} nodes")
            continue
        seen: dict[tuple[int, int], str] = {}
        for e in cell.edges:
            key, label = (e.node, e.input), f"{e.node}<-{e.input}"
            if key in seen:
                problems.append(f"cell {name!r}: edge {label} is chosen twice ({seen[key]} and {e.op}); a space has "
                                "one edge per (input, node) pair, so two ops on one pair (as in ENAS' and NASNet's "
                                "published cells) cannot be built")
                continue
            seen[key] = e.op
            if allowed is None:
                continue
            if key not in allowed:
                into = sorted(i for n, i in allowed if n == e.node)
                problems.append(f"cell {name!r}: edge {label} does not exist in the space; "
                                f"node {e.node} takes inputs {into}")
            elif e.op not in allowed[key]:
                hint = did_you_mean(e.op, allowed[key])
                problems.append(f"cell {name!r}, edge {label}: op {e.op!r} is not a candidate"
                                + (f" ({hint})" if hint else "") + f"; candidates: {', '.join(sorted(allowed[key]))}")
    problems += [f"missing cell {name!r}: the space has it, the genotype does not" for name in cells
                 if name not in g.cells]
    space_layers = layers or {}
    for layer, op in g.layers:
        if layer not in space_layers:
            hint = did_you_mean(layer, space_layers)
            problems.append(f"unknown layer {layer!r}" + (f" ({hint})" if hint else "")
                            + (f"; the space's searchable layers are {sorted(space_layers)}" if space_layers
                               else "; the space has no searchable layers"))
        elif op not in space_layers[layer]:
            hint = did_you_mean(op, space_layers[layer])
            problems.append(f"layer {layer!r}: op {op!r} is not a candidate" + (f" ({hint})" if hint else "")
                            + f"; candidates: {', '.join(sorted(space_layers[layer]))}")
    chosen = {layer for layer, _ in g.layers}
    problems += [f"missing layer {layer!r}: the space searches it, the genotype has no op for it"
                 for layer in space_layers if layer not in chosen]
    if problems:
        raise GenotypeError("genotype does not fit the space:\n  " + "\n  ".join(problems))


def _existing(source: str) -> Path | None:
    """`source` as a path if it names an existing file or directory (a long genotype string is no path)."""
    try:
        path = Path(source)
        return path if path.exists() else None
    except (OSError, ValueError):
        return None


def read_source(source: str) -> tuple[Genotype, dict | None]:
    """A genotype from a file, a run directory (with the run's config.json) or a genotype string."""
    if not source.strip():
        raise GenotypeError("no genotype given (an empty argument)",
                            hint="give a genotype file, a run directory, or a DARTS / NB201 genotype string")
    path = _existing(source)
    if path is not None and path.is_dir():
        config = None
        if (path / "config.json").is_file():
            try:
                config = json.loads((path / "config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise GenotypeError(f"cannot read {path / 'config.json'}: {e}") from None
            wrong = wrong_type(config)  # an edited config.json: callers read its entries as nasc wrote them
            if wrong is not None:
                raise GenotypeError(f"{path / 'config.json'} is not a nasc run config: {wrong}",
                                    hint="nasc search and nasc train write it when a run starts; was it edited?")
        gfile = path / "genotype.json"
        if not gfile.is_file() and config is None:  # `nasc viz .`, a folder above the run: no search to wait for
            raise GenotypeError(f"{path} is not a nasc run directory (no config.json, no genotype.json)",
                                hint="give the run directory nasc search or nasc train made (runs/NAME), "
                                     "a genotype file, or a DARTS / NB201 genotype string")
        if not gfile.is_file():
            raise GenotypeError(f"{path} has no genotype.json", hint="is the search finished?")
        return load(gfile), config
    if path is not None:
        return load(path), None
    file, _, name = source.rpartition(":")  # FILE:NAME, one genotype of a genotypes.py
    named = _existing(file) if file and name.isidentifier() else None
    if named is not None and named.is_file():
        return load(named, name), None
    text = source.strip()
    if text.startswith(("|", "{")) or "Genotype(" in text:
        return parse_any(text), None
    # say what was looked for: a README-style `darts/cnn/genotypes.py:DARTS_V2` names a file of the
    # official code that a fresh checkout does not have, which the bare message leaves unexplained
    if file and name.isidentifier():
        hint = (f"there is no file {file}: FILE:NAME reads the genotype NAME from a genotypes.py"
                " (e.g. cnn/genotypes.py of a clone of the official DARTS code)")
    elif "/" in source or Path(source).suffix:
        hint = f"there is no file or directory {source}"
    else:
        hint = "give a genotype file, a run directory, or a DARTS / NB201 genotype string"
    raise GenotypeError(f"{source!r} is neither a file, a run directory nor a genotype string", hint=hint)
