"""The fingerprint hashes what a space means, not how it is written."""

from nasc.compiler.ir import fingerprint, to_json_dict


def _darts(spaces_dir) -> str:
    return (spaces_dir / "darts.nas").read_text()


def _statements(text: str) -> list[str]:
    """Top-level statements: a line at column 0 (not a comment) starts one; indented lines continue it."""
    chunks: list[list[str]] = []
    for line in text.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            chunks.append([])
        if chunks and line.strip() and not line.lstrip().startswith("#"):
            chunks[-1].append(line)
    return ["\n".join(c) for c in chunks]


def _reordered(text: str) -> str:
    """The header first, then every statement in reverse order, settings reversed, network lines moved."""
    stmts = _statements(text)
    header = [s for s in stmts if s.startswith("space ")]
    rest = [s for s in stmts if not s.startswith("space ")][::-1]
    out = []
    for s in rest:
        lines = s.splitlines()
        if lines[0] in ("search:", "train:"):
            s = "\n".join([lines[0], *lines[:0:-1]])
        elif lines[0] == "network:":
            body = s.split("\n", 1)[1]
            network = {key: "" for key in ("input", "stem", "preprocess", "stack", "head", "aux")}
            for line in body.splitlines():
                key = line.split()[0] if not line.startswith("        ") else "aux"
                network[key] += line + "\n"
            # commuting statements moved: input after stem, aux before head, preprocess last
            s = "network:\n" + "".join(network[k] for k in ("stem", "input", "stack", "aux", "head", "preprocess"))
        out.append(s)
    return "\n".join(header + out) + "\n"


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
    text = _reordered(_darts(spaces_dir))
    assert text.index("\nop sep_conv") > text.index("\ncell normal") > text.index("\nnetwork:")
    assert text.index("    aux") < text.index("    head")
    moved = compile_text(text, file="darts.nas")
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


def test_train_block_is_not_part_of_the_fingerprint(compile_text, spaces_dir):
    text = _darts(spaces_dir)
    assert "epochs = 600" in text
    a = compile_text(text, file="darts.nas")
    b = compile_text(text.replace("epochs = 600", "epochs = 10"), file="darts.nas")
    assert a.train["epochs"] == 600 and b.train["epochs"] == 10
    assert fingerprint(a) == fingerprint(b)
