"""Every `nas` example in docs/language.md is valid.

A block whose first line starts with `space` must compile; a block whose first line is `# error: MESSAGE` must
fail with that message; every other block must parse.
"""

import re
from pathlib import Path

import pytest

from nasc.compiler.pipeline import compile_space
from nasc.errors import NascError
from nasc.grammar.parser import parse

DOC = Path(__file__).resolve().parents[2] / "docs" / "language.md"
BLOCKS = re.findall(r"^```nas\n(.*?)^```", DOC.read_text(encoding="utf-8"), flags=re.S | re.M)


def _first_line(block: str) -> str:
    return block.splitlines()[0]


def _id(block: str) -> str:
    return _first_line(block)[:40]


def test_the_document_has_examples():
    kinds = [_first_line(b).split()[0] for b in BLOCKS]
    assert kinds.count("space") >= 8
    assert sum(1 for b in BLOCKS if b.startswith("# error:")) >= 4


@pytest.mark.parametrize("block", BLOCKS, ids=[_id(b) for b in BLOCKS])
def test_example(block, tmp_path):
    first = _first_line(block)
    if first.startswith("space"):
        ir = compile_space(tmp_path / "example.nas", text=block)
        assert ir.meta["fingerprint"]
    elif first.startswith("# error:"):
        expected = first[len("# error:"):].strip()
        with pytest.raises(NascError) as info:
            compile_space(tmp_path / "example.nas", text=block)
        assert info.value.message == expected
    else:
        parse(block, "example.nas")
