"""The grammar: bundled spaces parse, syntax errors point at the right place, expressions evaluate like Python."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasc.compiler.build_ir import eval_params
from nasc.compiler.resolve import resolve_source
from nasc.errors import NasSemanticError, NasSyntaxError
from nasc.grammar import ast as A
from nasc.grammar.parser import parse, parse_file


def test_every_bundled_space_parses(bundled_space, spaces_dir):
    tree = parse_file(str(spaces_dir / f"{bundled_space}.nas"))
    assert isinstance(tree, A.SpaceFile)
    assert tree.header is not None and tree.header.name == bundled_space
    assert tree.statements


def test_darts_ast_shape(spaces_dir):
    tree = parse_file(str(spaces_dir / "darts.nas"))
    kinds = [type(s).__name__ for s in tree.statements]
    assert kinds.count("OpDef") == 6 and kinds.count("CellDef") == 1 and kinds.count("CellDerive") == 1
    assert [p.name for p in tree.header.params] == ["C", "layers", "classes"]
    sep = next(s for s in tree.statements if isinstance(s, A.OpDef) and s.name.startswith("sep_conv"))
    assert sep.is_pattern and len(sep.body.pipeline.steps) == 8
    assert sep.span.line == 7 and sep.span.col == 1
    cell = next(s for s in tree.statements if isinstance(s, A.CellDef))
    assert cell.inputs == ("s0", "s1")
    assert cell.body[0].names == ("n0", "n1", "n2", "n3")


def test_layout_is_free():
    """Whitespace (tabs included) and newlines carry no meaning; lists may span lines."""
    a = parse("op x = relu > bn\nops s = [x, relu]\n")
    b = parse("op   x\t=\n  relu\n  > bn   # comment\n\n\nops s = [\n x,\n relu\n]")
    strip = lambda t: [(type(s).__name__, s.name) for s in t.statements]  # noqa: E731
    assert strip(a) == strip(b)


# (source, message start, line, col, hint fragment or None)
SYNTAX_ERRORS = [
    pytest.param("space s(a = 1\nop x = relu\n", "unexpected 'op'; expected ')'", 2, 1,
                 "statement before 'op' looks unfinished", id="missing-paren"),
    pytest.param("op x = relu >", "unexpected end of file; expected a name", 1, 14, "not finished",
                 id="unfinished-pipeline-eof"),
    pytest.param("op x = relu >\nops y = [x]\n", "unexpected 'y'", 2, 5, None, id="unfinished-pipeline"),
    pytest.param("space s extends 'darts.nas'\n", "unexpected character \"'\"", 1, 17, "double quotes",
                 id="single-quotes"),
    pytest.param("cell c(x):\n    nodes n3..n1\n", "cannot expand the range n3..n1", 2, 11, "n0..n3", id="bad-range"),
    pytest.param("cell c(x):\n    nodes n0..m3\n", "cannot expand the range n0..m3", 2, 11, "one prefix",
                 id="range-prefixes"),
    pytest.param("op x = relu\x01\n", "unexpected character '\\x01'", 1, 12, "control or binary character",
                 id="control-char"),
    pytest.param("cell c(x):\n    nodes a\n    node b\n", "unexpected 'node'", 3, 5, None, id="unknown-keyword"),
    pytest.param("alpha shared per edge\n", "unexpected 'edge'; expected 'cell'", 1, 18, None, id="wrong-keyword"),
    pytest.param("op x = relu > bn = 3\n", "unexpected '='", 1, 18, "'=' is only used", id="stray-equals"),
    pytest.param("op x = relu >> bn\n", "unexpected '>'; expected a name", 1, 14, None, id="double-arrow"),
    pytest.param("op x = relu\nop y = relu if\n", "unexpected end of file", 2, 15, "not finished",
                 id="unfinished-guard"),
    pytest.param("select argmax per node\n", "`select argmax per node` is not a selection rule", 1, 19,
                 "`select top 1 per node`", id="argmax-per-node"),
]


@pytest.mark.parametrize("text, message, line, col, hint", SYNTAX_ERRORS)
def test_syntax_errors(text, message, line, col, hint):
    with pytest.raises(NasSyntaxError) as info:
        parse(text, "bad.nas")
    err = info.value
    assert err.message.startswith(message), err.message
    assert (err.span.file, err.span.line, err.span.col) == ("bad.nas", line, col)
    if hint is not None:
        assert hint in err.hint
    rendered = err.render(text)
    assert rendered.startswith(f"bad.nas:{line}:{col}: error: ")
    assert "^" in rendered.splitlines()[2]


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.nas"
    path.write_bytes(b"op x = relu\nop y = \xe9\n")
    with pytest.raises(NasSyntaxError) as info:
        parse_file(str(path))
    err = info.value
    assert err.message == "the file is not valid UTF-8"
    assert (err.span.line, err.span.col) == (2, 8)
    assert "UTF-8" in err.hint


def test_missing_file(tmp_path):
    with pytest.raises(NasSyntaxError, match="cannot read"):
        parse_file(str(tmp_path / "nothere.nas"))


def test_truncated_file(spaces_dir):
    text = (spaces_dir / "darts.nas").read_text()
    cut = text[: text.index("output concat(") + len("output concat(n0..")]
    with pytest.raises(NasSyntaxError) as info:
        parse(cut, "darts.nas")
    err = info.value
    lines = cut.splitlines()
    assert err.message == "unexpected end of file; expected a name"
    assert (err.span.line, err.span.col) == (len(lines), len(lines[-1]) + 1)
    assert err.hint == "a statement or list is not finished"


# ---- expressions evaluate as in Python -------------------------------------------------------

PARAMS = {"p": 7, "q": -3, "r": 12}


def _expr(depth: int):
    leaf = st.one_of(st.integers(0, 50).map(str), st.sampled_from(sorted(PARAMS)))
    if depth == 0:
        return leaf
    sub = _expr(depth - 1)
    return st.one_of(
        leaf,
        st.tuples(sub, st.sampled_from(["+", "-", "*", "//"]), sub).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        sub.map(lambda s: f"({s})"),
        sub.map(lambda s: f"-{s}" if not s.startswith("-") else f"-({s})"),
        st.tuples(leaf, st.integers(0, 3)).map(lambda t: f"{t[0]} ** {t[1]}"),
    )


@settings(max_examples=150, deadline=None)
@given(_expr(4))
def test_arithmetic_matches_python(text):
    header = ", ".join(f"{k} = {v}" for k, v in PARAMS.items())
    decl = resolve_source(f"space s({header}, a = {text})")
    try:
        expected = eval(text, {}, dict(PARAMS))  # noqa: S307 - text is built from digits, names and operators
    except ZeroDivisionError:
        with pytest.raises(NasSemanticError, match="division by zero"):
            eval_params(decl, {})
        return
    assert eval_params(decl, {})["a"] == expected


def test_power_is_one_token_and_right_associative():
    decl = resolve_source("space s(a = 2 ** 3 ** 2, b = -2 ** 2, c = 2 * 3 ** 2)")
    assert eval_params(decl, {}) == {"a": 512, "b": -4, "c": 18}


def test_runaway_numbers_are_errors():
    with pytest.raises(NasSemanticError, match="number too large") as info:
        eval_params(resolve_source("space s(a = 10 ** 10 ** 10)"), {})
    assert (info.value.span.line, info.value.span.col) == (1, 13)


def test_huge_node_range():
    with pytest.raises(NasSyntaxError, match=r"the range n0..n99999999 names more than 1000 nodes"):
        parse("cell c(x):\n    nodes n0..n99999999\n")


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(NasSyntaxError, match="nested too deeply"):
        parse("space s(a = " + "-" * 5000 + "1)")


def test_parameters_see_earlier_parameters_and_overrides():
    decl = resolve_source("space s(C = 16, layers = 8, wide = 2 * C, red = [layers // 3, 2 * layers // 3])")
    assert eval_params(decl, {}) == {"C": 16, "layers": 8, "wide": 32, "red": (2, 5)}
    assert eval_params(decl, {"C": 8})["wide"] == 16
