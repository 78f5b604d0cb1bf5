"""Semantic errors: the class, the message, the line/col and the hint the user sees."""

import pytest

from nasc.compiler.build_ir import eval_params
from nasc.compiler.pipeline import PassContext, compile_space
from nasc.compiler.resolve import resolve_path, resolve_source
from nasc.errors import NasSemanticError, NasSyntaxError

# A small DARTS-like space. Line numbers below refer to this text (line 1 is `space t ...`).
BASE = """space t(C = 16, classes = 10)
op sep_conv_{k}x{k} = relu > dw_conv(k, stride) > conv(1) > bn
op skip_connect = identity | on stride 2: factorized_reduce
op none = zero(stride)
op dw(k) = dw_conv(k, stride)
ops base_ops = [none, skip_connect, sep_conv_3x3]
cell normal(s0, s1):
    nodes n0..n1 = sum
    edges dense: CANDS
    output concat(n0..n1)
cell reduce = normal with stride 2 on inputs
network:
    stem conv(3, out = 3 * C) > bn
    preprocess relu > conv(1) > bn | on stride 2: factorized_reduce
    stack 3 x STACK, reduce at [1], widen 2 at reduce
    head global_avg_pool > linear(classes)
"""
CANDS_COL = 18  # column of CANDS on line 9
LIST_COL = 19  # column of the first candidate inside `[...]` on line 9


def space(cands="base_ops", stack="normal", extra=""):
    return BASE.replace("CANDS", cands).replace("STACK", stack) + extra


def where(err):
    return err.span.line, err.span.col


def test_base_space_compiles(compile_text):
    ir = compile_text(space())
    assert ir.alpha_groups["normal"]["rows"][0]["ops"] == ["none", "skip_connect", "sep_conv_3x3"]


# ---- names ------------------------------------------------------------------------------

def test_unknown_op_suggests_the_family_member(semantic_error):
    err = semantic_error(space("[none, sep_conv3x3]"))
    assert err.message == "unknown op 'sep_conv3x3'"
    assert where(err) == (9, LIST_COL + 6)
    assert err.hint == "did you mean 'sep_conv_3x3'?"
    assert err.render(space("[none, sep_conv3x3]")).splitlines()[0] == \
        "t.nas:9:25: error: unknown op 'sep_conv3x3'"


def test_every_unknown_op_of_a_list_is_reported(semantic_error):
    """One compile shows every misspelt candidate, not one per run."""
    err = semantic_error(space("[none, sep_conv3x3, skip_conect]"))
    assert [(e.message, where(e)) for e in err.errors] == [
        ("unknown op 'sep_conv3x3'", (9, LIST_COL + 6)),
        ("unknown op 'skip_conect'", (9, LIST_COL + 19)),
    ]
    assert err.errors[1].hint == "did you mean 'skip_connect'?"


def test_unknown_op_inside_an_op_body(semantic_error):
    err = semantic_error(space(extra="op bad = relu > batchnorm\nops more = [bad]\n").replace(
        "edges dense: base_ops", "edges dense: more"))
    assert err.message == "unknown op 'batchnorm'"
    assert where(err) == (17, 17)


def test_unknown_cell_in_stack(semantic_error):
    err = semantic_error(space(stack="norml"))
    assert err.message == "unknown cell 'norml'"
    assert where(err) == (15, 5)
    assert err.hint == "did you mean 'normal'?"


def test_unknown_ops_set(semantic_error):
    err = semantic_error(space("base_opz"))
    assert err.message == "unknown op 'base_opz'"
    assert where(err) == (9, CANDS_COL)
    assert err.hint == "did you mean 'base_ops'?"


def test_unknown_name_in_an_expression(semantic_error):
    err = semantic_error(space().replace("out = 3 * C", "out = 3 * CC"))
    assert err.message == "unknown name 'CC'"
    assert where(err) == (13, 28)
    assert err.hint == "did you mean 'C'?"


def test_op_set_that_includes_itself(semantic_error):
    err = semantic_error(space().replace("ops base_ops = [none, skip_connect, sep_conv_3x3]",
                                         "ops base_ops = [none, more]\nops more = [skip_connect, base_ops]"))
    assert err.message == "op set 'base_ops' includes itself (base_ops -> more -> base_ops)"
    assert where(err) == (7, 27)


def test_op_defined_in_terms_of_itself(semantic_error):
    err = semantic_error(space("[a]", extra="op a = relu > b\nop b = bn > a\n"))
    assert err.message == "op 'a' is defined in terms of itself (a -> b -> a)"



def test_a_stride_alternative_given_twice(semantic_error):
    """The second `on stride 2:` was silently ignored, in an op and in `preprocess` alike."""
    err = semantic_error(space("[c3]", extra="op c3 = conv(3, stride) | on stride 2: identity | on stride 2: zero(2)\n"))
    assert err.message == "a second `on stride 2:` alternative"
    assert where(err) == (17, 49)
    assert err.hint == "only the first, at 17:25, would be used; keep one"
    err = semantic_error(space().replace("on stride 2: factorized_reduce\n    stack",
                                         "on stride 2: factorized_reduce | on stride 1: bn | on stride 2: bn\n    stack"))
    assert (err.message, where(err)) == ("a second `on stride 2:` alternative", (14, 87))

# ---- arity and types ----------------------------------------------------------------------

def test_op_missing_argument(semantic_error):
    err = semantic_error(space("[dw()]"))
    assert err.message == "op 'dw' needs argument(s) k"
    assert where(err) == (9, LIST_COL)

def test_an_op_parameter_named_like_its_family_variable(semantic_error):
    """`pool_3(5)` was a 5x5 pool: the argument silently overrode the k its name binds."""
    err = semantic_error(space("[pool_3(5)]", extra="op pool_{k}(k) = max_pool(k, stride)\n"))
    assert err.message == "op 'pool_{k}': parameter 'k' has the name of a family variable"
    assert where(err) == (17, 1)


def test_primitive_missing_argument(semantic_error):
    err = semantic_error(space("[dw_conv()]"))
    assert err.message == "dw_conv needs its 'k' argument"
    assert where(err) == (9, LIST_COL)
    assert err.hint == "dw_conv(k, stride, dilation, pad, bias)"


def test_op_too_many_arguments(semantic_error):
    err = semantic_error(space("[dw(3, 5)]"))
    assert err.message == "op 'dw' takes 1 argument(s), got 2"
    assert where(err) == (9, LIST_COL)
    assert err.hint == "defined at line 5"


def test_primitive_too_many_arguments(semantic_error):
    err = semantic_error(space("[max_pool(3, 1, 1, 1)]"))
    assert err.message == "max_pool takes at most 3 positional argument(s), got 4"
    assert err.hint == "max_pool(k, stride, pad)"


def test_unknown_keyword_argument(semantic_error):
    err = semantic_error(space("[dw(kk = 3)]"))
    assert err.message == "op 'dw' has no parameter 'kk'"
    assert where(err) == (9, LIST_COL + 8)  # at the value
    assert err.hint == "did you mean 'k'?"
    err = semantic_error(space("[conv(3, dilaton = 2)]"))
    assert err.message == "conv has no parameter 'dilaton'"
    assert err.hint == "did you mean 'dilation'?"


def test_wrong_argument_type(semantic_error):
    err = semantic_error(space("[conv(1.5)]"))
    assert err.message == "conv: 'k' must be an integer, got 1.5"
    assert where(err) == (9, LIST_COL)
    err = semantic_error(space('[conv(3, bias = "yes")]'))
    assert err.message == "conv: 'bias' must be true or false, got 'yes'"


def test_empty_candidate_list(semantic_error):
    err = semantic_error(space("[]"))
    assert err.message == "empty candidate set"
    assert where(err) == (9, CANDS_COL)
    assert "at least one op" in err.hint


def test_candidate_listed_twice(semantic_error):
    err = semantic_error(space("[none, none]"))
    assert err.message == "candidate 'none' is listed twice"
    assert where(err) == (9, LIST_COL + 6)


def test_several_independent_errors_are_reported_together(semantic_error):
    text = space("[nonee]").replace("    edges dense: [nonee]", "    edges dense: [nonee]\n") + \
        "cell other(x):\n    nodes a\n    edge x -> a: [skip_conect]\n"
    err = semantic_error(text)
    assert [e.message for e in err.errors] == ["unknown op 'nonee'", "unknown op 'skip_conect'"]
    assert len(err.render(text).split("error:")) == 3


# ---- graph structure ----------------------------------------------------------------------

NET = """network:
    stem conv(3, out = C) > bn
    stack 2 x c
    head global_avg_pool > linear(10)
"""


def test_cycle_in_a_cell(semantic_error):
    err = semantic_error("space t(C = 8)\ncell c(x):\n    nodes a, b\n    edge x -> a: [identity]\n"
                         "    edge b -> a: [identity]\n    edge a -> b: [identity]\n    output b\n" + NET)
    assert err.message == "cell 'c': edge b -> a closes a cycle (a -> b -> a)"
    assert where(err) == (5, 5)
    assert err.hint == "edges must go from earlier states to later nodes"


def test_edge_from_a_later_node(semantic_error):
    # acyclic, but against declaration order: was a KeyError in shape inference
    err = semantic_error("space t(C = 8)\ncell c(x):\n    nodes a, b\n    edge x -> b: [identity]\n"
                         "    edge b -> a: [identity]\n    output a\n" + NET)
    assert err.message == "cell 'c': edge b -> a goes from a later node to an earlier one"
    assert where(err) == (5, 5)
    assert err.hint == "edges must go from earlier states to later nodes; declare 'b' before 'a'"


def test_node_that_reaches_no_output(semantic_error):
    err = semantic_error("space t(C = 8)\ncell c(x):\n    nodes a, b\n    edge x -> a: [identity]\n"
                         "    edge x -> b: [identity]\n    output b\n" + NET)
    assert err.message == "cell 'c': node 'a' does not reach the cell output"
    assert where(err) == (3, 5)
    assert "output concat" in err.hint


def test_node_with_no_input(semantic_error):
    err = semantic_error("space t(C = 8)\ncell c(x):\n    nodes a, b\n    edge x -> b: [identity]\n"
                         "    output concat(a, b)\n" + NET)
    assert err.message == "cell 'c': node 'a' has no incoming edge"
    assert where(err) == (3, 5)
    assert err.hint == "add `edge <state> -> a: <ops>` or `edges dense: <ops>`"


def test_edge_into_a_cell_input(semantic_error):
    err = semantic_error("space t(C = 8)\ncell c(x, y):\n    nodes a\n    edge x -> y: [identity]\n" + NET)
    assert err.message == "'y' is a cell input; edges must end at a node"
    assert where(err) == (4, 5)


def test_edge_from_an_unknown_state(semantic_error):
    err = semantic_error("space t(C = 8)\ncell c(x):\n    nodes a\n    edge z -> a: [identity]\n" + NET)
    assert err.message == "cell 'c' has no input or node 'z'"
    assert where(err) == (4, 5)


def test_channel_conflict_without_preprocess(semantic_error):
    err = semantic_error("space t(C = 8)\ncell c(x):\n    nodes a\n    edge x -> a: [identity]\n    output a\n"
                         + NET.replace("out = C", "out = 2 * C"))
    assert err.message == ("cell input 'x' receives 16 channels at 32x32 but the cell expects 8 at 32x32 "
                           "(in cell0, cell 'c')")
    assert where(err) == (8, 5)  # the `stack` line
    assert "preprocess" in err.hint


def test_stride_conflict_between_edges_into_one_node(semantic_error):
    text = ("space t(C = 8)\ncell c(x):\n    nodes a, b\n    edge x -> a: [identity]\n"
            "    edge x -> b: [conv(3, stride = 2)]\n    edge a -> b: [identity]\n    output b\n" + NET)
    err = semantic_error(text)
    assert err.message.startswith("inputs of node 'b' disagree in shape (in cell0, cell 'c'): ")
    assert "identity from a: 8x32x32" in err.message and "conv(3, stride=2) from x: 8x16x16" in err.message
    assert where(err) == (5, 5)
    assert err.hint == "edges into one node need the same channels and stride"


def test_head_missing(semantic_error):
    err = semantic_error("space t(C = 8)\ncell c(x):\n    nodes a\n    edge x -> a: [identity]\n"
                         "network:\n    stem conv(3, out = C) > bn\n    stack 2 x c\n")
    assert err.message == "the network has no `head`"
    assert where(err) == (5, 1)
    assert "global_avg_pool" in err.hint


def test_two_heads(semantic_error):
    err = semantic_error(space().replace("    head global_avg_pool > linear(classes)\n",
                                         "    head global_avg_pool > linear(classes)\n" * 2))
    assert err.message == "the network has more than one `head`"
    assert where(err) == (17, 5)


def test_network_missing(semantic_error):
    err = semantic_error("space t(C = 8)\ncell c(x):\n    nodes a\n    edge x -> a: [identity]\n")
    assert err.message == "space 't' has no `network:` block"
    assert "add `network:`" in err.hint


def test_library_file_checked_alone_is_pointed_at_import(semantic_error):
    """A headless file of ops is meant for `import`: asking it for a network would mislead."""
    err = semantic_error("op conv_bn = relu > conv(3) > bn\nops mine = [conv_bn, identity]\n")
    assert "has no `network:` block" in err.message
    assert "`import` it from a space" in err.hint


def test_head_that_does_not_classify(semantic_error):
    err = semantic_error(space().replace("head global_avg_pool > linear(classes)", "head relu"))
    assert err.message == "the head ends with a 64x16x16 feature map, not class scores"
    assert where(err) == (16, 5)


def test_input_too_small(semantic_error):
    text = space().replace("    stem", "    input 3 x 2 x 2\n    stem").replace(
        "    head", "    layer max_pool(3, pad = 0)\n    head")
    err = semantic_error(text)
    assert err.message == "max_pool shrinks the feature map below 1x1 (input 1x1) (in layer0)"
    assert where(err) == (17, 11)
    assert err.hint == "the input resolution is too small for this network"


def test_input_too_small_for_the_aux_head(spaces_dir):
    """DARTS' auxiliary head needs 8x8 at its cell; on a 2x2 input it is dropped with a clear warning."""
    ir = compile_space(spaces_dir / "darts.nas", input_shape=(3, 2, 2))
    assert "aux" not in ir.macro
    assert ir.meta["warnings"] == ["auxiliary head dropped: avg_pool shrinks the feature map below 1x1 "
                                   "(input 1x1) (in aux)"]


# ---- methods and settings -------------------------------------------------------------------

CTX = PassContext(relaxations=frozenset({"softmax"}), selectors=frozenset({"magnitude"}))


def test_unknown_relaxation_lists_registered_names(semantic_error):
    err = semantic_error(space(extra="relax gumbel(tau = 10 -> 0.1)\n"), ctx=CTX)
    assert err.message == "unknown relaxation 'gumbel'"
    assert where(err) == (17, 1)
    assert err.hint == "registered: softmax"
    err = semantic_error(space(extra="relax sofmax\n"), ctx=CTX)
    assert err.hint == "did you mean 'softmax'? (registered: softmax)"


def test_unknown_selector(semantic_error):
    err = semantic_error(space(extra="select perturbation(k = 2)\n"), ctx=CTX)
    assert err.message == "unknown selector 'perturbation'"
    assert err.hint == "registered: magnitude"


def test_without_ctx_names_are_not_checked(compile_text):
    assert compile_text(space(extra="relax gumbel(tau = 10 -> 0.1)\n")).relax.name == "gumbel"


@pytest.mark.parametrize("select, message", [
    ('select top "a" per node', "select: k must be an integer ≥ 1, got 'a'"),
    ("select top 0 per node", "select: k must be an integer ≥ 1, got 0"),
    ("select argmax per cell", "select: cannot select per 'cell'"),
    ("select magnitude(exclude = 3)", "select: exclude must name ops, got 3"),
    ("select magnitude(kk = 3)", "selector 'magnitude' has no option 'kk'"),
])
def test_bad_selection_rule(semantic_error, select, message):
    err = semantic_error(space(extra=select + "\n"))
    assert err.message == message
    assert where(err) == (17, 1)


@pytest.mark.parametrize("k", ["0", "2.5", "true"])
def test_partial_channel_k_that_the_costs_cannot_divide_by(semantic_error, k):
    """`relax partial-channel(k = 0)` in a file was an internal ZeroDivisionError in compute_costs."""
    err = semantic_error(space(extra=f"relax partial-channel(k = {k})\n"))
    assert err.message.startswith("partial-channel option k must be a positive integer, got ")
    assert where(err) == (17, 1)


def test_partial_channel_k_that_does_not_divide_the_channels_is_reported_at_the_relax_line(semantic_error):
    """It was 'factorized_reduce needs an even channel count, got 21' inside darts.nas, which never names k."""
    err = semantic_error('space p(C = 16) extends "pcdarts.nas"\nrelax partial-channel(k = 3)\n')
    assert err.message.startswith("partial-channel with k = 3 needs edge channels divisible by 3, got 16 on edge ")
    assert where(err) == (2, 1) and err.hint == "change C or k"


def test_aux_weight_must_be_a_number(semantic_error):
    err = semantic_error(space().replace("    head global_avg_pool > linear(classes)\n",
                                         "    head global_avg_pool > linear(classes)\n"
                                         '    aux global_avg_pool > linear(classes) after 1, weight "high"\n'))
    assert err.message == "the aux weight must be a number, got 'high'"
    assert where(err) == (17, 59)


def test_aux_weight_must_not_be_negative(semantic_error):
    """`weight -1` compiled and checked clean, then `nasc train` stopped with 'aux_weight must be ≥ 0' at no line."""
    err = semantic_error(space().replace("    head global_avg_pool > linear(classes)\n",
                                         "    head global_avg_pool > linear(classes)\n"
                                         "    aux global_avg_pool > linear(classes) after 1, weight -1\n"))
    assert err.message == "the aux weight must be a finite number ≥ 0, got -1"
    assert where(err) == (17, 59)


def test_context_arithmetic_that_fails_on_an_edge(semantic_error):
    err = semantic_error(space("[dw_half]", extra="op dw_half = dw_conv(3, stride, pad = 2 // (stride - 1))\n"))
    assert err.message == "dw_conv: its arguments cannot be computed at stride 1 (integer division or modulo by zero)"
    assert where(err) == (17, 14)


def test_argument_given_twice(semantic_error):
    err = semantic_error(space("[dw(3, k = 5)]"))
    assert err.message == "op 'dw' got 'k' twice"
    err = semantic_error(space("[conv(3, k = 5)]"))
    assert err.message == "conv got 'k' twice"


def test_unknown_search_setting(semantic_error):
    err = semantic_error(space(extra="search:\n    epochs = 3\n    bacth = 64\n"))
    assert err.message == "unknown search setting 'bacth'"
    assert where(err) == (19, 5)
    assert err.hint == "did you mean 'batch'?"


def test_wrong_search_setting_type(semantic_error):
    err = semantic_error(space(extra="search:\n    epochs = 2.5\n    weights = adamw(lr = 1)\n"))
    assert [e.message for e in err.errors] == ["search setting 'epochs' has the wrong type (float)",
                                               "weights = adamw(...) is not supported"]


def test_wrong_train_setting_type_names_the_train_block(semantic_error):
    err = semantic_error(space(extra='train:\n    cutout = "16"\n'))
    assert err.message == "train setting 'cutout' has the wrong type (str)"


def test_a_bare_word_for_a_string_setting_asks_for_quotes(semantic_error):
    """`memory = recompute` is a missing pair of quotes, not an unknown parameter."""
    err = semantic_error(space(extra="search:\n    memory = recompute\n    precision = bf16\n"))
    assert [e.message for e in err.errors] == [
        "search setting 'memory' takes a string, not the name 'recompute'",
        "search setting 'precision' takes a string, not the name 'bf16'"]
    assert err.hint == 'quote it: memory = "recompute"'
    assert where(err) == (18, 14)


def test_runaway_counts(semantic_error):
    err = semantic_error(space(stack="normal").replace("stack 3 x", "stack 99999999999 x"))
    assert err.message == "a cell count must be at most 10000, got 99999999999"
    assert where(err) == (15, 11)


def test_long_sums_do_not_crash(semantic_error):
    err = semantic_error(space().replace("out = 3 * C", "out = C" + " + 1" * 3000))
    assert "nested too deeply" in err.message


# ---- files, parameters --------------------------------------------------------------------

def test_missing_import(semantic_error):
    err = semantic_error('space t\nimport "nothere.nas"\n')
    assert err.message == "cannot find 'nothere.nas'"
    assert where(err) == (2, 1)
    assert "darts.nas" in err.hint


def test_unusable_file_names(semantic_error):
    err = semantic_error('space t extends "' + "a" * 5000 + '.nas"\n')
    assert err.message.startswith("cannot find 'aaaa")
    assert where(err) == (1, 1)
    # an empty name is a missing file, as in `import ""`; `extends ""` was silently no base at all
    err = semantic_error('space t extends ""\n')
    assert (err.message, where(err)) == ("cannot find ''", (1, 1))


def test_a_misspelt_bundled_space_is_named():
    """`nasc search dartz` listed the twelve bundled files without saying which was meant, where a misspelt
    op, option or relaxation gets a "did you mean"; a name close to none (or a path) still gets the list only."""
    for typed, meant in (("dartz", "'darts'"), ("nb210", "'nb201'"), ("pc-darts.nas", "'pcdarts.nas'")):
        with pytest.raises(NasSemanticError) as info:
            resolve_path(typed)
        assert info.value.hint.startswith(f"did you mean {meant}?"), info.value.hint
        assert "bundled spaces: darts.nas" in info.value.hint
    with pytest.raises(NasSemanticError) as info:
        resolve_path("qqqq")
    assert info.value.hint.startswith("bundled spaces:")


def test_missing_file_on_the_command_line():
    with pytest.raises(NasSyntaxError, match="no such file"):
        resolve_path("/nonexistent/dir/x.nas")


def test_a_directory_on_the_command_line_is_not_called_missing(tmp_path):
    (tmp_path / "mine.nas").write_text("")
    with pytest.raises(NasSyntaxError, match="it is a directory") as info:
        resolve_path(tmp_path)
    assert "mine.nas" in info.value.hint


def test_circular_extends(tmp_path):
    (tmp_path / "a.nas").write_text('space a extends "b.nas"\n')
    (tmp_path / "b.nas").write_text('# b\nspace b extends "a.nas"\n')
    with pytest.raises(NasSemanticError) as info:
        compile_space(tmp_path / "a.nas")
    err = info.value
    assert err.message == "circular import or extends: a.nas -> b.nas -> a.nas"
    assert (err.span.file, err.span.line, err.span.col) == (str(tmp_path / "b.nas"), 2, 1)


def test_circular_import(tmp_path):
    (tmp_path / "a.nas").write_text('import "b.nas"\n')
    (tmp_path / "b.nas").write_text('import "a.nas"\n')
    with pytest.raises(NasSemanticError, match=r"circular import or extends: a.nas -> b.nas -> a.nas"):
        compile_space(tmp_path / "a.nas")



def test_a_parameter_of_an_imported_file_is_not_in_scope_and_the_hint_says_why(tmp_path):
    (tmp_path / "lib.nas").write_text("space lib(k2 = 5)\nop wide = relu\n")
    (tmp_path / "main.nas").write_text(
        'space main(C = 8)\nimport "lib.nas"\ncell c(x0):\n    nodes x1 = sum\n'
        "    edge x0 -> x1: [conv(k2, stride), wide]\n    output x1\nnetwork:\n    stem conv(3, out = C) > bn\n"
        "    stack 1 x c, width C\n    head global_avg_pool > linear(10)\n")
    with pytest.raises(NasSemanticError) as info:
        compile_space(tmp_path / "main.nas")
    err = info.value
    assert err.message == "unknown name 'k2'" and (err.span.line, err.span.col) == (5, 26)
    assert "'k2' is a parameter of lib.nas" in err.hint and "`import` brings definitions, not parameters" in err.hint
    (tmp_path / "main.nas").write_text((tmp_path / "main.nas").read_text().replace("space main(C = 8)",
                                                                                   "space main(C = 8, k2 = 3)"))
    assert compile_space(tmp_path / "main.nas").name == "main"  # declared here: in scope

def test_duplicate_definition_in_one_file(semantic_error):
    err = semantic_error(space(extra="op none = zero(stride)\n"))
    assert err.message == "op 'none' is defined twice in this file"
    assert where(err) == (17, 1)
    assert err.hint == "the first definition is at line 4"


def test_redefinition_through_extends_is_allowed(compile_text):
    ir = compile_text('space s extends "darts.nas"\nop none = zero(stride)\n')
    assert ir.name == "s"


def test_unknown_parameter_override(spaces_dir):
    with pytest.raises(NasSemanticError) as info:
        eval_params(resolve_path(spaces_dir / "darts.nas"), {"CC": 3})
    assert info.value.message == "space 'darts' has no parameter 'CC'"
    assert info.value.hint == "did you mean 'C'?"
    with pytest.raises(NasSemanticError, match="has no parameter 'CC'"):
        compile_space(spaces_dir / "darts.nas", params={"CC": 3})


def test_division_by_zero_in_a_parameter():
    with pytest.raises(NasSemanticError) as info:
        eval_params(resolve_source("space s(a = 4,\n  b = a // (a - 4))"), {})
    assert info.value.message == "division by zero"
    assert (info.value.span.line, info.value.span.col) == (2, 7)


def test_derived_cell_overrides_existing_edges_only(compile_text):
    with pytest.raises(NasSemanticError, match="derived cell 'reduce' has no edge n1 -> n0 to change"):
        compile_text(space().replace("cell reduce = normal with stride 2 on inputs",
                                     "cell reduce = normal with stride 2 on inputs:\n    edge n1 -> n0: [none]"))

SPARSE = """space sparse(C = 4, classes = 10)
op skip = identity | on stride 2: factorized_reduce
op c3 = relu > conv(3, stride) > bn
cell normal(s0, s1):
    nodes n0, n1
    edge s0 -> n0: [skip, c3]
    edge s1, n0 -> n1: [skip, c3]
    output concat
cell reduce = normal with stride 2 on inputs:
    edges dense: [c3, skip]
network:
    stem conv(3, out = 2 * C) > bn
    preprocess relu > conv(1) > bn | on stride 2: factorized_reduce
    stack 3 x normal, reduce at [1], widen 2 at reduce
    head global_avg_pool > linear(classes)
"""


def test_edges_dense_in_a_derived_cell_changes_its_edges_and_adds_none(compile_text):
    """It added s1 -> n0 and s0 -> n1, which the base cell lacks and `edge s1 -> n0: ...` may not add."""
    ir = compile_text(SPARSE)
    edges = {c: [(e.src, e.dst, e.candidates) for e in ir.cell_edges(c)] for c in ("normal", "reduce")}
    assert [(s, d) for s, d, _ in edges["reduce"]] == [(s, d) for s, d, _ in edges["normal"]] == [
        ("s0", "n0"), ("s1", "n1"), ("n0", "n1")]
    assert {c for _, _, c in edges["reduce"]} == {("c3", "skip")}


# ---- input shapes ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 32, 16), [1, 28, 14]])
def test_a_non_square_input_shape_from_python_is_refused(semantic_error, shape):
    err = semantic_error(space(), input_shape=shape)
    assert err.message == f"only square inputs are supported, got {shape[0]}x{shape[1]}x{shape[2]}"
    assert err.span is None  # not in the file: the argument is at fault
    assert err.hint.startswith(f"use the same height and width, e.g. {shape[0]}x{shape[1]}x{shape[1]}")


@pytest.mark.parametrize("shape", [(3, 32), (3, 0, 0), (3, 32.5, 32.5), "3x32x32"])
def test_a_malformed_input_shape_from_python_is_refused(semantic_error, shape):
    err = semantic_error(space(), input_shape=shape)
    assert err.message.startswith("an input shape is three positive integers C x H x W, got ")


def test_the_input_statement_refuses_non_square_shapes_with_the_same_message(semantic_error):
    err = semantic_error(space().replace("network:\n", "network:\n    input 3 x 32 x 16\n"))
    assert err.message == "only square inputs are supported, got 3x32x16"
    assert where(err) == (13, 5)


# ---- selection ------------------------------------------------------------------------------

@pytest.mark.parametrize("select, col", [
    ("select top 2 per node excluding nnone", 33),
    ("select argmax per edge excluding skip_connect, nnone", 48),
    ('select magnitude(k = 2, per = "node", exclude = ["nnone"])', 50),
])
def test_excluding_an_unknown_op(semantic_error, select, col):
    err = semantic_error(space(extra=select + "\n"))
    assert err.message == "unknown op 'nnone' in `excluding`"
    assert where(err) == (17, col)
    assert err.hint == "did you mean 'none'?"


def test_excluding_an_op_the_space_defines_but_does_not_use(compile_text):
    ir = compile_text(space("[skip_connect, sep_conv_3x3]", extra="select top 2 per node excluding none, sep_conv_5x5\n"))
    assert dict(ir.select.options)["exclude"] == ("none", "sep_conv_5x5")


def test_two_op_families_matching_one_name_are_ambiguous(semantic_error):
    err = semantic_error(space("[none, a_3x3]", extra="op a_{k}x3 = conv(k) > bn\nop a_3x{j} = conv(1) > bn\n"))
    assert err.message == "op 'a_3x3' is ambiguous: it matches both families 'a_3x{j}' and 'a_{k}x3'"
    assert where(err) == (9, LIST_COL + 6)
    assert "`op a_3x3 = ...` takes precedence" in err.hint


def test_a_defined_op_takes_precedence_over_a_family(compile_text):
    ir = compile_text(space("[none, sep_conv_3x3]", extra="op sep_conv_3x3 = relu > conv(3, stride) > bn\n"))
    assert [s.prim for s in ir.impls["sep_conv_3x3@1"]] == ["relu", "conv", "bn"]


@pytest.mark.parametrize("select, col", [("select argmax per layer", 19), ('select magnitude(per = "layer")', 24)])
def test_selection_per_layer_needs_choice_layers(semantic_error, select, col):
    err = semantic_error(space(extra=select + "\n"))
    assert err.message == "selection per layer, but the network has no `choice` layers"
    assert where(err) == (17, col)
    assert "`select argmax per edge`" in err.hint


# ---- network --------------------------------------------------------------------------------

@pytest.mark.parametrize("layer, word, line", [("stack 3 x normal, reduce at [1], widen 2 at reduce", "stack", 16),
                                               ("layer conv(1) > bn", "layer", 17)])
def test_a_layer_after_the_head_is_an_error(semantic_error, layer, word, line):
    head = "    head global_avg_pool > linear(classes)\n"
    text = space().replace("    stack 3 x normal, reduce at [1], widen 2 at reduce\n" + head,
                           "    stack 3 x normal, reduce at [1], widen 2 at reduce\n" * (word == "layer") + head
                           + f"    {layer}\n")
    err = semantic_error(text)
    assert err.message == f"`{word}` after the head: the head must be the network's last layer"
    assert where(err) == (line, 5)
    assert "only `aux` heads may follow it" in err.hint


# ---- duplicates: each name once per file, each candidate once per list -----------------------

@pytest.mark.parametrize("cands, message, col", [
    ("[dw(3), dw(k = 3)]", "candidate 'dw(k=3)' is listed twice (also as 'dw(3)')", LIST_COL + 7),
    ("[conv(3), conv(k = 3, stride = 1)]", "candidate 'conv(k=3, stride=1)' is listed twice (also as 'conv(3)')",
     LIST_COL + 9),
    ("[base_ops, skip_connect]", "candidate 'skip_connect' is listed twice", LIST_COL + 10),
])
def test_the_same_candidate_spelled_differently(semantic_error, cands, message, col):
    err = semantic_error(space(cands))
    assert err.message == message
    assert where(err) == (9, col)
    assert err.hint == "a candidate may appear only once per list"


def test_different_arguments_are_different_candidates(compile_text):
    ir = compile_text(space("[dw(3), dw(k = 5), conv(3, stride), conv(3, stride, dilation = 2)]"))
    assert len(ir.alpha_groups["normal"]["rows"][0]["ops"]) == 4


def test_candidates_with_context_arguments_are_named_as_written(compile_text):
    # a context name used to show as its internal tree: "conv(3, ['var', 'stride'])"
    ir = compile_text(space("[conv(3, stride), conv(k = 5, stride = stride, dilation = 2), dw(3), "
                            "conv(1, stride, bias = not searching)]"))
    assert ir.alpha_groups["normal"]["rows"][0]["ops"] == [
        "conv(3, stride)", "conv(k=5, stride=stride, dilation=2)", "dw(3)", "conv(1, stride, bias=not searching)"]


def test_a_parameter_declared_twice(semantic_error):
    err = semantic_error(space().replace("space t(C = 16, classes = 10)", "space t(C = 16, classes = 10, C = 8)"))
    assert err.message == "parameter 'C' is declared twice"
    assert where(err) == (1, 31)
    assert err.hint == "the first declaration is at column 9"


def test_an_op_and_an_op_set_with_one_name(semantic_error):
    err = semantic_error(space(extra="ops dw = [none]\n"))
    assert err.message == "'dw' is defined twice in this file (as an op and an op set)"
    assert where(err) == (17, 1)
    assert err.hint == "the first definition is at line 5"


def test_an_op_set_overrides_an_inherited_op_of_that_name(compile_text):
    ir = compile_text('space s extends "darts.nas"\nops skip_connect = [none, avg_pool_3x3]\n'
                      "ops darts_ops = [skip_connect, max_pool_3x3]\n")
    assert ir.alpha_groups["normal"]["rows"][0]["ops"] == ["none", "avg_pool_3x3", "max_pool_3x3"]
    assert "skip_connect" not in ir.ops


@pytest.mark.parametrize("output, message", [
    ("    output concat(n0..n1)\n    output n1\n", "cell 'normal' has more than one `output`"),
    ("    output concat(n1, n0, n1)\n", "the output of cell 'normal' names 'n1' twice"),
])
def test_one_output_per_cell_each_node_once(semantic_error, output, message):
    err = semantic_error(space().replace("    output concat(n0..n1)\n", output))
    assert err.message == message
    assert where(err) == (10 + output.count("\n") - 1, 5)


# ---- primitive arguments that torch would refuse ---------------------------------------------

@pytest.mark.parametrize("body, message, hint", [
    ("dropout(p = 2)", "dropout: p = 2 is not a probability", "between 0 and 1"),
    ("dropout(p = -0.5)", "dropout: p = -0.5 is not a probability", "between 0 and 1"),
    ("max_pool(3, pad = 2)", "max_pool: pad = 2 is more than half the kernel (k = 3)", "pads at most k // 2 = 1"),
    ("avg_pool(5, stride, pad = 3)", "avg_pool: pad = 3 is more than half the kernel (k = 5)", "k // 2 = 2"),
])
def test_primitive_arguments_are_checked_where_written(semantic_error, body, message, hint):
    err = semantic_error(space("[none, cand]", extra=f"op cand = relu > {body}\n"))
    assert err.message == message
    assert where(err) == (17, 18)
    assert hint in err.hint


def test_primitive_arguments_known_only_on_the_edge_are_checked_there(semantic_error):
    # `pad = stride` is 1 on normal edges (fine) and 2 on the reduction cell's input edges
    err = semantic_error(space("[none, cand]", extra="op cand = max_pool(3, stride, pad = stride)\n"))
    assert err.message.startswith("max_pool: pad = 2 is more than half the kernel (k = 3) (op 'cand' on edge ")
    assert where(err) == (17, 11)


# ---- one error, where it is -------------------------------------------------------------------

@pytest.mark.parametrize("kw, message, col", [
    ({"text_c": "8.5"}, "conv: 'out' must be an integer, got 25.5", 10),
    ({"params": {"C": 8.5}}, "conv: 'out' must be an integer, got 25.5", 10),
    ({"params": {"C": "abc"}}, "operator '*' does not apply to int and str", 24),
])
def test_an_unusable_width_parameter_reports_only_the_real_error(semantic_error, kw, message, col):
    text = space()
    if "text_c" in kw:
        text = text.replace("space t(C = 16,", f"space t(C = {kw['text_c']},")
    err = semantic_error(text, **({"params": kw["params"]} if "params" in kw else {}))
    assert err.message == message
    assert where(err) == (13, col)
    assert len(err.errors) == 1  # no "`stack` needs a width ... declare a parameter C" as well


def test_a_declared_width_parameter_that_is_not_a_positive_integer(semantic_error):
    err = semantic_error(space().replace("out = 3 * C", "out = 48"), params={"C": 0})
    assert err.message == "`stack` needs a width: the parameter C is 0, not a positive integer"
    assert where(err) == (15, 5)
    assert len(err.errors) == 1


def test_a_space_without_a_network_names_its_file(semantic_error):
    err = semantic_error("space b(C = 8)\nop x = relu\n")
    assert err.message == "space 'b' has no `network:` block"
    assert (err.span.file, *where(err)) == ("t.nas", 1, 1)
    err = semantic_error("# only a comment\n")
    assert (err.span.file, *where(err)) == ("t.nas", 1, 1)


def test_a_byte_order_mark_is_accepted_and_columns_ignore_it(semantic_error, compile_text):
    assert compile_text("\ufeff" + space()).name == "t"
    err = semantic_error("\ufeff" + space("[none, sep_conv3x3]"))
    assert where(err) == (9, LIST_COL + 6)
    text = "\ufeffspace b\nop x = reluu\n"
    err = semantic_error(text)
    assert err.render(text).splitlines()[1:3] == ["  op x = reluu", "         ^^^^^"]



@pytest.mark.parametrize("newline", ["\r", "\r\n"], ids=["classic-mac", "windows"])
def test_carriage_return_line_ends_are_line_ends(newline, semantic_error, compile_text):
    assert compile_text(space().replace("\n", newline)).name == "t"
    text = space("[none, sep_conv3x3]").replace("\n", newline)
    err = semantic_error(text)
    assert where(err) == (9, LIST_COL + 6)
    assert "sep_conv3x3" in err.render(text).splitlines()[1]

# ---- runaway sizes ---------------------------------------------------------------------------

@pytest.mark.parametrize("header, col", [("space t(C = 99999999999999999999999, classes = 10)", 13),
                                         ("space t(C = 16, classes = 2 ** 70)", 27),
                                         ("space t(C = 16, classes = 10, big = 1e400)", 37)])
def test_numbers_beyond_64_bits_are_errors(semantic_error, header, col):
    err = semantic_error(space().replace("space t(C = 16, classes = 10)", header))
    assert err.message == "number too large"
    assert where(err) == (1, col)
    assert "64 bits" in err.hint


def test_too_many_channels_is_an_error_at_the_step(semantic_error):
    err = semantic_error(space(), params={"C": 30_000})
    assert err.message == "conv would produce 90,000 channels, more than the limit of 65,536 (in stem)"
    assert where(err) == (13, 10)
    assert "lower the width" in err.hint


def test_too_many_channels_in_a_cell_output_is_an_error_at_the_output(semantic_error):
    err = semantic_error(space().replace("out = 3 * C", "out = 16"), params={"C": 40_000})
    assert err.message.startswith("the output of cell 'normal' has 80,000 channels, more than the limit of 65,536")
    assert where(err) == (10, 5)


def test_too_many_parameters_is_an_error_at_the_largest_layer(semantic_error):
    text = space("[none, sep_conv_3x3]").replace("out = 3 * C", "out = 16").replace(", widen 2 at reduce", "")
    err = semantic_error(text, params={"C": 25_000})
    assert err.message.startswith("the supernet would hold ")
    assert err.message.endswith(" parameters, more than the limit of 10^10")
    assert where(err) == (15, 5)
    assert err.hint.startswith("cell")


def test_too_many_activations_is_an_error(semantic_error):
    err = semantic_error(space(), input_shape=(3, 60_000, 60_000), params={"C": 4})
    assert err.message.endswith("bytes of activations per sample, more than the limit of 1 TiB")


def test_a_kernel_wider_than_the_input_can_use_is_an_error(semantic_error):
    err = semantic_error(space("[none, sep_conv_999999x999999]"))
    assert err.message.startswith("dw_conv: a 999999x999999 kernel is wider than 65, twice the 32x32 input plus one")
    assert where(err) == (2, 30)
    assert "never touch a pixel" in err.hint


def test_usual_kernels_on_tiny_inputs_stay_legal(compile_text):
    ir = compile_text(space("[none, sep_conv_5x5, dw(k = 11)]"), input_shape=(3, 2, 2))
    assert ir.meta["shapes"]["head"]["c_out"] == 10


def test_an_aux_head_must_end_in_class_scores(semantic_error):
    err = semantic_error(space(extra="    aux relu after 1\n"))
    assert err.message == "the auxiliary head ends with a 64x16x16 feature map, not class scores"
    assert where(err) == (17, 5)


def test_an_aux_head_must_give_as_many_scores_as_the_head(semantic_error):
    err = semantic_error(space(extra="    aux relu > global_avg_pool > linear(7) after 1\n"))
    assert err.message == "the auxiliary head gives 7 scores but the head gives 10"
    assert where(err) == (17, 5) and err.hint == "end both with `linear(classes)`"


@pytest.mark.parametrize("old, new, shown", [
    ("out = 3 * C", "out = int(3 * C)", "conv: 'out' must be an integer, got int(48)"),
    ("stack 3 x", "stack round(3) x", "a cell count must be an integer ≥ 1, got round(3)"),
])
def test_a_call_where_a_number_belongs_is_shown_as_written_with_a_hint(semantic_error, old, new, shown):
    # the language has no int()/round(): a call is a value only for settings such as sgd(...)
    err = semantic_error(space().replace(old, new))
    assert err.message.startswith(shown), err.message
    assert "not a function" in err.hint and "//" in err.hint


def test_a_cell_edge_that_pools_to_a_vector_is_named_at_the_edge(semantic_error):
    err = semantic_error(space("[skip_connect, global_avg_pool]"))
    assert err.message.startswith("op 'global_avg_pool' on edge n0<-s0 turns the feature map into a vector"), err.message
    assert "None" not in err.message and where(err)[0] == 9 and "head" in err.hint
