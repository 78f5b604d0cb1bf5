"""Bundled spaces compile to the published facts; tiny spaces have hand-computed parameter counts."""

import pytest

from nasc.compiler.count import count_architectures
from nasc.compiler.pipeline import compile_space
from nasc.compiler.summary import summarise


def _params(ir) -> int:
    return ir.meta["costs"]["total_without_aux"]["params"]


def test_every_bundled_space_compiles(bundled_space, spaces_dir):
    # ctx=None: relaxation/selector names are not checked (pcdarts' partial-channel may not be registered yet)
    ir = compile_space(spaces_dir / f"{bundled_space}.nas")
    assert ir.meta["fingerprint"]
    assert count_architectures(ir) >= 1
    summary = summarise(ir)
    assert summary["supernet_params"] > 0

def test_subset_products_is_the_sum_over_k_subsets_of_their_products():
    from itertools import combinations
    from math import prod

    from nasc.compiler.count import subset_products

    xs = [3, 1, 4, 1, 5, 9, 2]
    for k in range(len(xs) + 1):
        assert subset_products(xs, k) == sum(prod(s) for s in combinations(xs, k))


def test_top_k_of_a_large_cell_is_counted_without_listing_the_subsets(compile_text):
    """`select top 12 per node` on a 40-node cell listed C(41, 12) = 7e9 subsets: the compiler hung."""
    from math import comb, prod

    ir = compile_text("space big(C = 4)\nop none = zero(stride)\ncell c(s0, s1):\n    nodes n0..n39\n"
                      "    edges dense: [none, identity, max_pool(3)]\n    output n39\nnetwork:\n    input 3 x 8 x 8\n"
                      "    stem conv(3, out = C) > bn\n    stack 1 x c\n    head global_avg_pool > linear(10)\n"
                      "select top 12 per node excluding none\n")
    # node i reads 2 + i states; it keeps min(12, 2 + i) of those edges, with one of 2 ops on each
    assert count_architectures(ir) == prod(comb(2 + i, min(12, 2 + i)) * 2 ** min(12, 2 + i) for i in range(40))


def test_bundled_name_resolves_without_a_path():
    assert compile_space("darts").name == "darts"


def test_nb201_facts(spaces_dir):
    ir = compile_space(spaces_dir / "nb201.nas")
    assert count_architectures(ir) == 5 ** 6 == 15625
    assert list(ir.alpha_groups) == ["cell"]
    assert len(ir.alpha_groups["cell"]["rows"]) == 6
    assert len(ir.alpha_groups["cell"]["layers"]) == 15
    # AutoDL-Projects' NB201 DARTS search model (C = 16, N = 5, CIFAR-10) has 1,692,826 weights
    assert _params(ir) == 1692826


def test_darts_facts(spaces_dir):
    ir = compile_space(spaces_dir / "darts.nas")
    for cell in ("normal", "reduce"):
        edges = ir.cell_edges(cell)
        assert len(edges) == 14
        assert all(len(e.candidates) == 8 for e in edges)
        rows = ir.alpha_groups[cell]["rows"]
        assert len(rows) == 14 and all(len(r["ops"]) == 8 for r in rows)
    assert ir.cells["reduce"].graph["input_stride"] == 2
    assert [e.stride for e in ir.cell_edges("reduce")][:2] == [2, 2]
    assert [l.cell for l in ir.layers() if l.kind == "cell"] == ["normal"] * 2 + ["reduce"] + ["normal"] * 2 + \
        ["reduce"] + ["normal"] * 2
    # quark0/darts cnn/model_search.py Network(C=16, num_classes=10, layers=8): 1,930,618 weights
    assert _params(ir) == 1930618


def test_darts_variants_share_the_macro_network(spaces_dir):
    base = compile_space(spaces_dir / "darts.nas")
    s2 = compile_space(spaces_dir / "darts_s2.nas")
    assert [l.id for l in s2.layers()] == [l.id for l in base.layers()]
    assert {r["ops"] == ["skip_connect", "sep_conv_3x3"] for r in s2.alpha_groups["normal"]["rows"]} == {True}
    assert s2.search["order"] == 2 and s2.search["epochs"] == 50


def _space_lines(path) -> int:
    """Non-empty lines of the search space: the `train:` block (the evaluation protocol) is not counted."""
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("train:"):
            while lines and lines[-1].startswith("#"):  # its own comment
                lines.pop()
            break
        if line.strip():
            lines.append(line)
    return len(lines)


def test_space_files_stay_short(spaces_dir):
    # the paper's space in about 40 lines; RobustDARTS S2 as "DARTS with another op set"
    assert _space_lines(spaces_dir / "darts.nas") < 45
    assert _space_lines(spaces_dir / "darts_s2.nas") < 10


# ---- hand-computed parameter counts -------------------------------------------------------------

ONE_EDGE = """space tiny(C = 4)
op conv_3x3 = BODY
cell c(x):
    nodes n0
    edge x -> n0: [conv_3x3]
    output n0
network:
    input 3 x 8 x 8
    stem conv(3, out = C) > bn
    stack 1 x c
    head global_avg_pool > linear(10)
"""
# stem: conv 3->4, 3x3: 4*3*9 = 108; bn (affine outside cells): 2*4 = 8     -> 116
# head: linear 4->10 with bias: 4*10 + 10 = 50                            ->  50
FIXED = 108 + 8 + 50


@pytest.mark.parametrize("body, extra, edge", [
    # conv 4->4, 3x3, no bias: 4*4*9 = 144; bn inside a cell while searching is affine-free: 0
    ("relu > conv(3) > bn", "", 144 + 0),
    # bn(affine = true) forces γ and β: 2*4 = 8
    ("relu > conv(3) > bn(affine = true)", "", 144 + 8),
    # `affine = true` in the search block turns on affine BN in every cell
    ("relu > conv(3) > bn", "search:\n    affine = true\n", 144 + 8),
    # a bias adds one weight per output channel: 144 + 4
    ("conv(3, bias = true)", "", 144 + 4),
    # depthwise 3x3 (4*9 = 36) then pointwise 4->4 (16)
    ("dw_conv(3) > conv(1)", "", 36 + 16),
])
def test_one_edge_parameter_counts(compile_text, body, extra, edge):
    ir = compile_text(ONE_EDGE.replace("BODY", body) + extra)
    assert ir.meta["costs"]["total"]["params"] == FIXED + edge
    assert ir.meta["costs"]["layers"]["cell0"]["edges"]["n0<-x"]["conv_3x3"]["params"] == edge


STRIDED = """space strided(C = 4)
op skip = identity | on stride 2: factorized_reduce
cell normal(x):
    nodes n0
    edge x -> n0: [skip]
    output n0
cell reduce = normal with stride 2 on inputs
network:
    input 3 x 8 x 8
    stem conv(3, out = C) > bn
    stack 2 x normal, reduce at [1]
    head global_avg_pool > linear(10)
"""


def test_strided_edge_uses_factorized_reduce(compile_text):
    ir = compile_text(STRIDED)
    # stem 108 + 8; cell0: identity, 0; cell1: factorized_reduce 4->4 = two 1x1 convs 4->2 (2*4*2 = 16)
    # and an affine-free BN (0); head 4*10 + 10 = 50
    assert ir.meta["costs"]["total"]["params"] == 108 + 8 + 0 + 16 + 50 == 182
    assert ir.meta["shapes"]["cell1"]["h_out"] == 4


PREPROCESSED = """space pre(C = 4)
cell c(s0, s1):
    nodes n0
    edge s0, s1 -> n0: [identity]
    output concat
network:
    input 3 x 8 x 8
    stem conv(3, out = 3 * C) > bn
    preprocess relu > conv(1) > bn | on stride 2: factorized_reduce
    stack 2 x c
    head global_avg_pool > linear(10)
"""


def test_preprocess_rule(compile_text):
    ir = compile_text(PREPROCESSED)
    # stem: conv 3->12: 12*3*9 = 324, bn 2*12 = 24                        -> 348
    # cell0: s0 = s1 = stem (12 ch): two 1x1 convs 12->4: 2*48; cell BN 0  ->  96
    # cell1: s0 = stem (12 ch): 48; s1 = cell0 (4 ch): 4*4 = 16           ->  64
    # head: 4*10 + 10                                                     ->  50
    assert ir.meta["costs"]["total"]["params"] == 348 + 96 + 64 + 50 == 558
    assert ir.meta["shapes"]["cell1"]["pre"] == [1, 1]


REDUCING = """space red(C = 4)
op skip = identity | on stride 2: factorized_reduce
cell c(s0, s1):
    nodes n0
    edge s0, s1 -> n0: [skip]
    output concat
cell reduce = c with stride 2 on inputs
network:
    input 3 x 8 x 8
    stem conv(3, out = 2 * C) > bn
    preprocess relu > conv(1) > bn | on stride 2: factorized_reduce
    stack 3 x c, reduce at [1], widen 2 at reduce
    head global_avg_pool > linear(10)
"""


def test_reduction_cell_and_strided_preprocess(compile_text):
    ir = compile_text(REDUCING)
    # stem: conv 3->8: 8*3*9 = 216, bn 16                                    -> 232
    # cell0 (width 4, 8x8): preprocess 8->4 twice: 2*32                      ->  64
    # cell1 (reduce, width 8): preprocess 8->8 (64) and 4->8 (32);
    #        two stride-2 skip edges = factorized_reduce 8->8: 2*8*4 = 64 each -> 96 + 128
    # cell2 (width 8, 4x4): s0 = cell0 at 8x8 is reduced by the stride-2 rule,
    #        factorized_reduce 4->8: 2*4*4 = 32; s1 = cell1: 1x1 conv 8->8 = 64 ->  96
    # head: 8*10 + 10                                                        ->  90
    assert ir.meta["costs"]["total"]["params"] == 232 + 64 + 96 + 128 + 96 + 90 == 706
    assert ir.meta["shapes"]["cell2"]["pre"] == [2, 1]
    assert ir.impls["skip@2"][0].prim == "factorized_reduce"


def test_summary_names_each_cell_type_at_its_positions(compile_text):
    # a stack of a third cell type after normal/reduce cells is not a reduction at its position
    text = REDUCING.replace("cell reduce =", "cell light = c\ncell reduce =").replace(
        "    head", "    stack 1 x light\n    head")
    ir = compile_text(text)
    assert [l.cell for l in ir.layers() if l.kind == "cell"] == ["c", "reduce", "c", "light"]
    assert summarise(ir)["network"] == "stem > 4 x c (reduce at 1; light at 3) > head"
    assert summarise(compile_text(REDUCING))["network"] == "stem > 3 x c (reduce at 1) > head"
