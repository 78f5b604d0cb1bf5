"""Golden IR: each bundled space's canonical JSON, reviewed in diffs.

Regenerate after an intended change with `NASC_UPDATE_GOLDEN=1 python -m pytest tests/compiler/test_golden.py`.
"""

import json
import os
from pathlib import Path

from nasc.compiler.ir import to_json_dict
from nasc.compiler.pipeline import compile_space

GOLDEN = Path(__file__).resolve().parent.parent / "golden"


def test_golden_ir(bundled_space, spaces_dir):
    ir = compile_space(spaces_dir / f"{bundled_space}.nas")
    text = json.dumps(to_json_dict(ir), indent=1, sort_keys=True) + "\n"
    path = GOLDEN / f"{bundled_space}.ir.json"
    if os.environ.get("NASC_UPDATE_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"no golden file {path.name}; run with NASC_UPDATE_GOLDEN=1"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"{bundled_space}: IR differs from {path.name} (NASC_UPDATE_GOLDEN=1 to accept)"
    assert json.loads(expected)["meta"]["fingerprint"] == ir.meta["fingerprint"]
