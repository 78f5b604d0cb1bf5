"""A run directory: the artefact that makes a search reproducible and resumable.

    run/
      config.json       space file, fingerprint, parameters, every setting, seed, versions, device
      space.ir.json     the compiled IR the run searched
      metrics.jsonl     one JSON object per step and per epoch (deterministic: no wall-clock values)
      timing.jsonl      wall-clock figures, kept apart so metrics compare byte for byte
      checkpoint.pt     written atomically at the end of every epoch
      genotype.json     the result (never overwritten by `nasc select`, which writes beside it)

Nothing here is written partially: files are replaced atomically, and a
resumed run first cuts metrics back to the last checkpoint so the finished
file equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from nasc import __version__
from nasc.atomic import write_text_atomic
from nasc.errors import SearchError

CHECKPOINT_FORMAT = "nasc-checkpoint/1"


def versions() -> dict[str, str]:
    return {"nasc": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


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

    def create(self) -> None:
        """A new run: the directory must be absent or empty (existing runs are never overwritten)."""
        if self.path.exists() and not self.path.is_dir():
            raise SearchError(f"run directory {self.path} exists and is not a directory")
        if self.path.is_dir() and any(self.path.iterdir()):
            if self.config.is_file() and not self.checkpoint.is_file():  # stopped in its first epoch
                raise SearchError(f"run directory {self.path} already holds a run that never finished an epoch",
                                  hint=f"delete {self.path} or choose another --run-dir")
            raise SearchError(f"run directory {self.path} already contains a run",
                              hint=f"resume it with `nasc search --resume {self.path}` or choose another --run-dir")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise SearchError(f"cannot write to run directory {self.path}: {e.strerror or e}",
                              hint="choose a writable --run-dir") from None

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

    def append(self, target: Path, record: dict[str, Any]) -> None:
        with open(target, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def metrics_size(self) -> int:
        return self.metrics.stat().st_size if self.metrics.exists() else 0

    def truncate_metrics(self, size: int) -> None:
        if self.metrics.exists():
            with open(self.metrics, "r+b") as f:
                f.truncate(size)

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        tmp = self.checkpoint.with_name(".checkpoint.pt.tmp")
        try:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
            os.replace(tmp, self.checkpoint)
        except OSError as e:
            raise SearchError(f"cannot write checkpoint {self.checkpoint}: {e.strerror or e}") from None

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


def unused_path(base: Path) -> Path:
    """`base`, or `base-2`, `base-3`, ... : the first that does not exist yet."""
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def default_run_path(name: str, seed: int) -> Path:
    """runs/<name>-<date>-<time>-s<seed>, never an existing directory."""
    return unused_path(Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-s{seed}")


def environment() -> dict[str, Any]:
    return {"argv": sys.argv[1:], **versions()}
