"""Shared fixtures. NASC_LINT=1 makes `run_passes` lint the IR after every pass in every test."""

import os

os.environ["NASC_LINT"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SPACES = REPO / "spaces"
BUNDLED = sorted(p.stem for p in SPACES.glob("*.nas"))


def pytest_generate_tests(metafunc):
    """A test that takes `bundled_space` runs once per bundled `.nas` file."""
    if "bundled_space" in metafunc.fixturenames:
        metafunc.parametrize("bundled_space", BUNDLED)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def spaces_dir() -> Path:
    return SPACES


@pytest.fixture(scope="session")
def bundled_names() -> list[str]:
    return list(BUNDLED)


@pytest.fixture
def compile_text():
    """Compile source text as if it were the file `t.nas` (imports resolve from the cwd, then bundled)."""
    from nasc.compiler.pipeline import compile_space

    def run(text: str, file: str = "t.nas", **kw):
        return compile_space(file, text=text, **kw)

    return run


@pytest.fixture
def semantic_error(compile_text):
    """Compile text that must fail; returns the `NasSemanticError`."""
    from nasc.errors import NasSemanticError

    def run(text: str, **kw):
        with pytest.raises(NasSemanticError) as info:
            compile_text(text, **kw)
        return info.value

    return run


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny tensors gain nothing from intra-op threads, and the suite may share its cores with other work."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
