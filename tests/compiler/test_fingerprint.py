"""The fingerprint hashes what a space means, not how it is written."""

from nasc.compiler.ir import fingerprint, to_json_dict

DARTS_REORDERED = """
search:
    order = 1
    arch = adam(lr = 3e-4, betas = (0.5, 0.999), weight_decay = 1e-3)
    clip = 5
    lr_schedule = cosine(min = 0.001)
    weights = sgd(lr = 0.025, momentum = 0.9, weight_decay = 3e-4)
    train_portion = 0.5
    batch = 64
    epochs = 50
select top 2 per node excluding none
relax softmax
alpha shared per cell
network:
    stem conv(3, out = 3 * C) > bn
    input 3 x 32 x 32
    stack layers x normal, reduce at [layers // 3, 2 * layers // 3], widen 2 at reduce
    aux relu > avg_pool(5, stride = 3, pad = 0) > conv(1, out = 128) > bn > relu
        > conv(2, out = 768) > bn > relu > flatten > linear(classes) after 2 * layers // 3, weight 0.4
    head global_avg_pool > linear(classes)
    preprocess relu > conv(1) > bn | on stride 2: factorized_reduce
cell reduce = normal with stride 2 on inputs
cell normal(s0, s1):
    nodes n0..n3 = sum
    output concat(n0..n3)
    edges dense: darts_ops
ops darts_ops = [none, max_pool_3x3, avg_pool_3x3, skip_connect,
                 sep_conv_3x3, sep_conv_5x5, dil_conv_3x3, dil_conv_5x5]
op none             = zero(stride)
op avg_pool_3x3     = avg_pool(3, stride) > bn if searching
op max_pool_3x3     = max_pool(3, stride) > bn if searching
op skip_connect     = identity | on stride 2: factorized_reduce
op dil_conv_{k}x{k} = relu > dw_conv(k, stride, dilation = 2) > conv(1) > bn
op sep_conv_{k}x{k} = relu > dw_conv(k, stride) > conv(1) > bn > relu > dw_conv(k) > conv(1) > bn
"""


def _darts(spaces_dir) -> str:
    return (spaces_dir / "darts.nas").read_text()


def _reordered(spaces_dir) -> str:
    # the header must come first; everything after it is in a different order
    header = next(line for line in _darts(spaces_dir).splitlines() if line.startswith("space "))
    return header + "\n" + DARTS_REORDERED


def _reformatted(text: str) -> str:
    """Comments dropped and added, indentation and line breaks changed, spacing changed."""
    out = []
    for line in text.splitlines():
        code = line.split("#", 1)[0].rstrip()
        if not code:
            continue
        code = code.replace(" = ", "=").replace(", ", " ,  ").replace(" > ", "\n   >\t")
        out.append(code + "   # a comment that means nothing")
    return "\n\n".join(out) + "\n"


def test_reordering_definitions_keeps_the_fingerprint(compile_text, spaces_dir):
    base = compile_text(_darts(spaces_dir), file="darts.nas")
    moved = compile_text(_reordered(spaces_dir), file="darts.nas")
    assert to_json_dict(moved) == to_json_dict(base)
    assert fingerprint(moved) == fingerprint(base) == base.meta["fingerprint"]


def test_reformatting_keeps_the_fingerprint(compile_text, spaces_dir, bundled_space):
    text = (spaces_dir / f"{bundled_space}.nas").read_text()
    base = compile_text(text, file=str(spaces_dir / f"{bundled_space}.nas"))
    again = compile_text(_reformatted(text), file=str(spaces_dir / f"{bundled_space}.nas"))
    assert fingerprint(again) == fingerprint(base)


def test_explicit_edges_equal_dense_edges(compile_text, spaces_dir):
    dense = _darts(spaces_dir)
    lines = []
    for dst, srcs in (("n0", "s0 s1"), ("n1", "s0 s1 n0"), ("n2", "s0 s1 n0 n1"), ("n3", "s0 s1 n0 n1 n2")):
        # written node by node and in reverse source order: the α row order is canonical anyway
        for src in reversed(srcs.split()):
            lines.append(f"    edge {src} -> {dst}: darts_ops")
    explicit = dense.replace("    edges dense: darts_ops", "\n".join(lines))
    assert explicit != dense
    a = compile_text(dense, file="darts.nas")
    b = compile_text(explicit, file="darts.nas")
    assert fingerprint(a) == fingerprint(b)
    grouped = dense.replace("    edges dense: darts_ops", "    edge s0, s1 -> n0: darts_ops\n"
                            "    edge s0, s1, n0 -> n1: darts_ops\n    edge s0, s1, n0, n1 -> n2: darts_ops\n"
                            "    edge s0, s1, n0, n1, n2 -> n3: darts_ops")
    assert fingerprint(compile_text(grouped, file="darts.nas")) == fingerprint(a)


def test_meaningful_changes_change_the_fingerprint(compile_text, spaces_dir):
    text = _darts(spaces_dir)
    base = fingerprint(compile_text(text, file="darts.nas"))
    variants = {
        "one candidate": text.replace("sep_conv_5x5, dil_conv_3x3", "sep_conv_7x7, dil_conv_3x3"),
        "candidate order": text.replace("[none, max_pool_3x3, avg_pool_3x3", "[none, avg_pool_3x3, max_pool_3x3"),
        "parameter": text.replace("classes = 10)", "classes = 100)"),
        "op body": text.replace("dilation = 2", "dilation = 3"),
        "search setting": text.replace("epochs = 50", "epochs = 51"),
        "selector": text.replace("select top 2 per node", "select top 3 per node"),
    }
    prints = {name: fingerprint(compile_text(v, file="darts.nas")) for name, v in variants.items()}
    assert all(v != text for v in variants.values())
    assert base not in prints.values()
    assert len(set(prints.values())) == len(prints)


def test_parameter_override_changes_the_fingerprint(compile_text, spaces_dir):
    text = _darts(spaces_dir)
    assert fingerprint(compile_text(text, params={"C": 8})) != fingerprint(compile_text(text))
    assert fingerprint(compile_text(text, params={"C": 16})) == fingerprint(compile_text(text))


def test_fingerprint_is_16_hex_digits(compile_text, spaces_dir):
    fp = compile_text(_darts(spaces_dir)).meta["fingerprint"]
    assert len(fp) == 16 and int(fp, 16) >= 0
