"""Writing a user's file: atomic for regular files, and never replacing a link or a device."""

import os
import stat
import threading

from typer.testing import CliRunner

from nasc.atomic import write_text_atomic
from nasc.cli import app


def test_a_new_file_gets_the_text_and_the_usual_mode(tmp_path):
    target = tmp_path / "out.json"
    write_text_atomic(target, "one\n")
    assert target.read_text() == "one\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left behind


def test_replacing_keeps_the_mode_of_the_old_file(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    target.chmod(0o600)
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_symlink_is_followed_not_replaced(tmp_path):
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    write_text_atomic(link, "new")
    assert link.is_symlink() and real.read_text() == "new"


def test_compile_into_a_fifo_writes_through_it_and_leaves_it_a_fifo(tmp_path, spaces_dir):
    """`-o /dev/null` once replaced /dev/null by a regular file; a FIFO is the same case, made safely."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(open(fifo, encoding="utf-8").read()), daemon=True)
    reader.start()
    result = CliRunner().invoke(app, ["compile", str(spaces_dir / "darts.nas"), "-o", str(fifo)])
    reader.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert received and '"format": "nasc-ir/1"' in received[0]
