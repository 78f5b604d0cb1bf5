"""A run directory: the artefact that makes a search reproducible and resumable.

    run/
      config.json       space file, fingerprint, parameters, every setting, seed, versions (and the git
                        commit of a checkout), device,
                        the data (name, sizes, a fingerprint of its images and labels: --resume checks it)
      space.ir.json     the compiled IR the run searched
      space/            copies of the .nas file(s) the space was read from (a search; the space and what it extends)
      metrics.jsonl     one JSON object per step and per epoch (deterministic: no wall-clock values)
      timing.jsonl      wall-clock figures, kept apart so metrics compare byte for byte
      resumes.jsonl     one record per --resume: the epoch it continued from and the environment it ran in
      checkpoint.pt     written atomically at the end of every epoch
      genotype.json     the result (never overwritten by `nasc select`, which writes beside it)
      .nasc.lock        only while a process writes the run: its pid (see `RunDir.writing`)

Nothing here is written partially: files are replaced atomically, and a
resumed run first cuts metrics back to the last checkpoint so the finished
file equals an uninterrupted run's. One process at a time writes a run: two
would interleave metrics.jsonl and overwrite each other's checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from nasc import __version__
from nasc.atomic import write_text_atomic
from nasc.compiler.run_config import wrong_type
from nasc.errors import SearchError

CHECKPOINT_FORMAT = "nasc-checkpoint/1"
LOCK_FILE = ".nasc.lock"

#: the run directories this process holds the lock of: resolved path -> [lock file descriptor, nesting depth]
_held: dict[Path, list[int]] = {}


def versions() -> dict[str, Any]:
    return {"nasc": __version__, "nasc_git": source_revision(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


@functools.cache
def source_revision() -> dict[str, Any] | None:
    """The git commit of the nasc code that ran, and whether it had uncommitted changes, when nasc runs from
    a git checkout (`pip install -e .`): its version number stays 0.1.0 from commit to commit, so only the
    commit says which code a run's numbers came from. None for an installed wheel or without git."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():  # a directory in a clone, a file in a worktree
        return None

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


_CONFIG_HINT = "nasc search and nasc train write config.json when a run starts; was it edited or written by hand?"


class RunDir:
    """Creates, validates and appends to one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def timing(self) -> Path:
        return self.path / "timing.jsonl"

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

    @contextlib.contextmanager
    def writing(self, *, new: bool = False) -> Iterator[None]:
        """Hold the run's writer lock while the block writes it; `new` first creates the run (see `create`).

        A second process writing the same run (another `nasc search --run-dir`, a `--resume` or a
        `nasc select` while the run goes on) fails here at once instead of interleaving metrics.jsonl
        and overwriting the checkpoint. The lock is an advisory flock on `.nasc.lock`, which the OS
        drops when its holder exits however it exits, so a killed run never leaves a stale lock; the
        file goes when the lock is released. Nested blocks in one process (resume -> run_search)
        share it; readers (viz, export, training from a run's genotype) take none.
        """
        if new:
            self.create()
        elif not self.config.is_file():  # resuming a folder that is no run: say that, not that it cannot be locked
            raise SearchError(f"{self.path} is not a nasc run directory (no config.json)")
        self._acquire()
        try:
            if new:
                self._refuse_taken()  # a run that came and went between create() and the lock
            yield
        finally:
            self._release()

    def _acquire(self) -> None:
        key = self.path.resolve()
        if key in _held:
            _held[key][1] += 1
            return
        while True:
            try:
                fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise SearchError(f"cannot write to run directory {self.path}: {e.strerror or e}",
                                  hint=self._kept_hint()) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._busy() from None
            except OSError:  # a file system without flock (say, Lustre mounted without it): unguarded, as before
                break
            with contextlib.suppress(OSError):
                here = os.fstat(fd)
                there = os.stat(self.lock_file)
                if (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino):
                    break
            os.close(fd)  # the holder released and removed the file as we opened it: lock the current one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        _held[key] = [fd, 1]

    def _release(self) -> None:
        key = self.path.resolve()
        held = _held[key]
        held[1] -= 1
        if held[1] == 0:
            del _held[key]
            with contextlib.suppress(OSError):
                self.lock_file.unlink()  # while still locked: a process that opened it re-checks the inode
            os.close(held[0])

    def _in_use(self) -> bool:
        """Whether another process holds the lock (probes without creating the file)."""
        if self.path.resolve() in _held or not self.lock_file.is_file():
            return False
        try:
            fd = os.open(self.lock_file, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:  # no flock on this file system
            return False
        finally:
            os.close(fd)
        return False

    def _busy(self) -> SearchError:
        holder = ""
        with contextlib.suppress(OSError, ValueError):
            pid, host = self.lock_file.read_text(encoding="utf-8").split()
            holder = f" (pid {int(pid)}{'' if host == socket.gethostname() else f' on {host}'})"
        return SearchError(f"run directory {self.path} is in use: another nasc process{holder} is writing it",
                           hint="wait for that run to finish (a search or training run interrupted with Ctrl-C "
                                "continues with --resume), or use another --run-dir")

    @property
    def resumes(self) -> Path:
        return self.path / "resumes.jsonl"

    def record_resume(self, epoch: int, device: Any, **where: Any) -> None:
        """Where a resumed run continued and in what environment: config.json describes the machine the run
        started on, and the epochs after a resume may have run with another torch, thread count or GPU."""
        self.append(self.resumes, {**where, "epoch": epoch, "device": str(device), **environment()})

    def create(self) -> None:
        """A new run: the directory must be absent or empty (existing runs are never overwritten)."""
        if self.path.exists() and not self.path.is_dir():
            raise SearchError(f"run directory {self.path} exists and is not a directory")
        self._refuse_taken()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise SearchError(f"cannot write to run directory {self.path}: {e.strerror or e}",
                              hint="choose a writable --run-dir") from None

    def _refuse_taken(self) -> None:
        """An error unless the directory is absent or empty but for the lock (a run in progress first)."""
        if self.path.is_dir() and any(p.name != LOCK_FILE for p in self.path.iterdir()):
            if self._in_use():
                raise self._busy()
            if self.config.is_file() and not self.checkpoint.is_file():  # stopped in its first epoch
                raise SearchError(f"run directory {self.path} already holds a run that never finished an epoch",
                                  hint=f"delete {self.path} or choose another --run-dir")
            raise SearchError(f"run directory {self.path} already contains a run", hint=self._taken_hint())

    def _taken_hint(self) -> str:
        """What to do with the run already here: resume it with the command that wrote it, unless it is
        finished or not a run at all (`nasc search --resume` on a training run only says it is not a search)."""
        other = "choose another --run-dir"
        try:
            kind = json.loads(self.config.read_text(encoding="utf-8")).get("kind", "search")
        except (OSError, ValueError, AttributeError):
            return f"{other} (it holds files that are not a nasc run)"
        command, result = ("train", "result.json") if kind == "train" else ("search", "genotype.json")
        if (self.path / result).is_file():
            return f"it holds a finished `nasc {command}` run; {other}"
        return f"resume it with `nasc {command} --resume {self.path}` or {other}"

    def read_config(self, *required: str) -> dict[str, Any]:
        """The run's config.json; a key in `required` that it lacks is an error naming the key."""
        if not self.config.is_file():
            raise SearchError(f"{self.path} is not a nasc run directory (no config.json)")
        try:
            config = json.loads(self.config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise SearchError(f"cannot read {self.config}: {e}") from None
        if not isinstance(config, dict):
            raise SearchError(f"{self.config} is not a nasc run config (a JSON {type(config).__name__}, "
                              "not an object)", hint=_CONFIG_HINT)
        self.require(config, *required)
        wrong = wrong_type(config)
        if wrong is not None:
            raise SearchError(f"{self.config}: {wrong}", hint=_CONFIG_HINT)
        return config

    def require(self, config: dict[str, Any], *keys: str) -> None:
        """An error naming the first of `keys` that the run's config lacks (an edited or foreign config.json)."""
        missing = [key for key in keys if key not in config]
        if missing:
            raise SearchError(f"{self.config} is incomplete: it has no {missing[0]!r}"
                              + (f" (nor {', '.join(map(repr, missing[1:]))})" if missing[1:] else "")
                              + ", so it is not a nasc run config", hint=_CONFIG_HINT)

    def write(self, name: str, data: Any) -> None:
        try:
            write_json_atomic(self.path / name, data)
        except OSError as e:
            raise SearchError(f"cannot write {self.path / name}: {e.strerror or e}") from None

    def copy_sources(self, files: Any) -> list[str]:
        """Copy the .nas files a space was read from into space/ and return their paths in the run: config.json
        names them by absolute path on the author's machine, where a reader of the run cannot go, and a file
        edited after the run no longer says what it searched. An unreadable file is skipped."""
        copied: list[str] = []
        for source in files:
            name = f"space/{Path(source).name}"
            if name in copied:  # two extended files of one name in different folders: keep both
                name = f"space/{len(copied)}-{Path(source).name}"
            try:
                text = Path(source).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            try:
                (self.path / "space").mkdir(exist_ok=True)
                write_text_atomic(self.path / name, text)
            except OSError as e:
                raise SearchError(f"cannot write {self.path / name}: {e.strerror or e}") from None
            copied.append(name)
        return copied

    def append(self, target: Path, record: dict[str, Any]) -> None:
        try:
            with open(target, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
        except OSError as e:  # a full disk, a folder made read-only mid-run: not an internal error
            raise SearchError(f"cannot write {target}: {e.strerror or e}", hint=self._kept_hint()) from None

    def metrics_size(self) -> int:
        return self.metrics.stat().st_size if self.metrics.exists() else 0

    def truncate_metrics(self, size: int) -> None:
        """Cut metrics back to `size` bytes: a resumed run's first write (a read-only run dir fails here)."""
        if self.metrics.exists():
            try:
                with open(self.metrics, "r+b") as f:
                    f.truncate(size)
            except OSError as e:
                raise SearchError(f"cannot write {self.metrics}: {e.strerror or e}", hint=self._kept_hint()) from None

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        self.save_torch(self.checkpoint, {"format": CHECKPOINT_FORMAT, **state}, what="checkpoint ")

    def save_torch(self, target: Path, obj: Any, *, what: str = "") -> None:
        """torch.save `obj` to a temporary file, then rename it over `target`.

        torch reports a failed write (a full disk) as a RuntimeError ('unexpected pos ...'), not an
        OSError; either way the half-written temporary file goes (it holds the space the user must
        free) and the previous `target` stays intact.
        """
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            torch.save(obj, tmp)
            os.replace(tmp, target)
        except (OSError, RuntimeError) as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            reason = e.strerror if isinstance(e, OSError) and e.strerror else _write_failure(target.parent, e)
            raise SearchError(f"cannot write {what}{target}: {reason}", hint=self._kept_hint()) from None

    def _kept_hint(self) -> str:
        fix = f"free some disk space or make {self.path} writable"
        if self.checkpoint.is_file():
            return f"{fix}; what it holds is intact, and an unfinished run continues from its last checkpoint " \
                   f"with --resume {self.path}"
        return f"{fix}; it has no checkpoint yet, so delete {self.path} and start again"

    def load_checkpoint(self, fingerprint: str | None = None) -> dict[str, Any]:
        if not self.checkpoint.is_file():
            raise SearchError(f"{self.path} has no checkpoint to resume from",
                              hint="a run writes its first checkpoint at the end of epoch 1; one stopped before that "
                                   f"starts again: delete {self.path} or choose another --run-dir")
        try:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the same user-facing problem
            raise SearchError(f"cannot read checkpoint {self.checkpoint}: {e}") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise SearchError(f"{self.checkpoint} is not a nasc search checkpoint")
        if fingerprint is not None and state.get("fingerprint") != fingerprint:
            raise SearchError(f"checkpoint {self.checkpoint} belongs to another space "
                              f"(fingerprint {state.get('fingerprint')}, this space {fingerprint})",
                              hint="the space file changed since the run started, or the run dir is another run's")
        return state


def _write_failure(folder: Path, error: Exception) -> str:
    """Why torch.save failed, in words: a full disk is the usual reason, and torch does not say it."""
    with contextlib.suppress(OSError):
        if shutil.disk_usage(folder).free < 1 << 20:
            return "no space left on device"
    return f"the write failed ({str(error).strip() or type(error).__name__})"


def unused_path(base: Path, *, claim: bool = False) -> Path:
    """`base`, or `base-2`, `base-3`, ... : the first that does not exist yet.

    `claim` also creates it, with one mkdir: two runs started in the same second with the same name (a
    sweep over methods in one space and seed) picked one folder and wrote it together; the second now
    takes the next name.
    """
    path, i = base, 1
    while True:
        if claim:
            try:
                path.mkdir(parents=True)
                return path
            except FileExistsError:
                pass
            except OSError:  # unwritable: RunDir.create says so, naming the folder
                return path
        elif not path.exists():
            return path
        i += 1
        path = base.with_name(f"{base.name}-{i}")


def default_run_path(name: str, seed: int, *, claim: bool = True) -> Path:
    """runs/<name>-<date>-<time>-s<seed>, never an existing directory; created unless `claim` is False
    (the ranks of a distributed run other than 0, which use rank 0's)."""
    return unused_path(Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-s{seed}", claim=claim)


def environment() -> dict[str, Any]:
    """What a run's numbers depend on beyond its settings. The CPU thread count is among them: float sums
    split over a different number of threads round differently, so the same seed on a machine with
    another core count gives other (equally valid) results."""
    return {"argv": sys.argv[1:], **versions(), "threads": torch.get_num_threads(), **accelerators()}


def accelerators() -> dict[str, Any]:
    """The GPUs a run could use, with the CUDA and cuDNN versions: "device": "cuda" alone does not say which
    GPU, and kernels (cuDNN's autotuned convolutions above all) round differently from one to another."""
    if not torch.cuda.is_available():
        return {}
    return {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
