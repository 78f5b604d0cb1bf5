"""Writing a user's file so that an interruption never leaves half of it.

A temporary file beside the target, flushed to disk, then renamed over it: the
reader sees the old text or the new, never a mix. Two cases must not be
renamed over, since the rename would replace the thing itself: a symbolic link
(the user means the file it points to) and anything that is not a regular file
(`-o /dev/null`, a FIFO, a terminal), which is written in place.

Imports no other nasc module, so every layer can use it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> None:
    """Replace `path`'s contents with `text` (UTF-8) atomically; raises OSError."""
    target = Path(os.path.realpath(path))
    if target.exists() and not target.is_file():
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)
        return
    # mkstemp files are 0600; keep the mode of the file being replaced, else the usual 0644 under the umask.
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
