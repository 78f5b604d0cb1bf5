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
from nasc.runtime.config import check_space_settings

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
        check_space_settings(ir)  # what `nasc check` adds: values and relax options a search would refuse
    elif first.startswith("# error:"):
        expected = first[len("# error:"):].strip()
        with pytest.raises(NascError) as info:
            compile_space(tmp_path / "example.nas", text=block)
        assert info.value.message == expected
    else:
        parse(block, "example.nas")


def test_settings_tables_are_complete():
    from nasc.compiler.settings import SEARCH_SETTINGS, TRAIN_SETTINGS

    text = DOC.read_text(encoding="utf-8")
    search = text[text.index("## Search settings"):text.index("## Training settings")]
    train = text[text.index("## Training settings"):text.index("## Errors")]
    assert [k for k in SEARCH_SETTINGS if f"| `{k}` |" not in search] == []
    assert [k for k in TRAIN_SETTINGS if f"| `{k}` |" not in train] == []


def test_primitive_table_is_complete():
    from nasc.compiler.primitives import PRIMITIVES

    text = DOC.read_text(encoding="utf-8")
    table = text[text.index("## Primitives"):text.index("## Op sets")]
    assert [p for p in PRIMITIVES if f"`{p}`" not in table] == []
