"""Datasets held in memory as uint8 tensors, the DARTS train/val split, and a resumable batch iterator.

Every dataset nasc searches on is small enough to sit in memory (CIFAR is
150 MB as uint8), so there is no `DataLoader` or worker pool: a batch is one
index into a tensor and augmentation runs batched on the device
(`augment.py`). That keeps a run reproducible from `(seed, epoch)` alone,
which is what lets a search resume mid-run and replay exactly.

Loaders never let a raw exception escape: a missing, truncated or corrupt file
ends in a `DataError` that names the file and says how to fix it.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import importlib.util
import logging
import math
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor

from nasc.errors import DataError
from nasc.runtime.augment import Augment
from nasc.runtime.registry import Registry, call_problem

__all__ = ["ImageSet", "Dataset", "DATASETS", "load_dataset", "recorded_data_dir", "check_same_data", "split_indices",
           "Batches", "Augment", "CIFAR"]

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 20  # per blocking socket call; an offline machine should fail fast, not hang


@attrs.frozen(kw_only=True)
class ImageSet:
    """One split held in memory."""

    images: Tensor  # uint8 (N, C, H, W)
    labels: Tensor  # int64 (N,)

    def __attrs_post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise DataError(f"labels must be int64 ({self.images.shape[0]},), "
                            f"got {self.labels.dtype} {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return self.images.shape[0]


@attrs.frozen(kw_only=True)
class Dataset:
    """A named dataset: splits plus what augmentation and normalisation need to know about it."""

    name: str
    train: ImageSet
    test: ImageSet | None
    classes: int
    mean: tuple[float, ...]  # per channel, in [0, 1] units
    std: tuple[float, ...]
    flip: bool  # whether a horizontal flip keeps the label (not for digits)
    crop_pad: int  # default random-crop padding: 4 for 32x32, 2 for 28x28, 1 for 8x8

    def __attrs_post_init__(self) -> None:
        c = self.train.images.shape[1]
        if len(self.mean) != c or len(self.std) != c or min(self.std) <= 0:
            raise DataError(f"{self.name}: need {c} means and {c} positive stds, got {self.mean} / {self.std}")
        if self.test is not None and self.test.images.shape[1:] != self.train.images.shape[1:]:
            raise DataError(f"{self.name}: test images {tuple(self.test.images.shape[1:])} "
                            f"differ from train images {tuple(self.train.images.shape[1:])}")
        # a plugin's labels past `classes` would surface as cross-entropy's IndexError mid-search
        # (on a GPU, a device-side assert), far from the loader that got them wrong
        for split, part in (("train", self.train), ("test", self.test)):
            if part is None or not len(part):
                continue
            lo, hi = int(part.labels.min()), int(part.labels.max())
            if lo < 0 or hi >= self.classes:
                raise DataError(f"{self.name}: {split} labels span {lo}..{hi}, "
                                f"outside 0..{self.classes - 1} for {self.classes} classes",
                                hint="fix the loader's labels or its `classes`")

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        _, c, h, w = self.train.images.shape
        return (c, h, w)

    @functools.cached_property
    def fingerprint(self) -> str:
        """A hash of every split's images and labels, as loaded: the name and data dir a run records say
        where the data was looked for, not what it was (a re-extracted, subsetted or relabelled copy in the
        same folder, a plugin's loader that changed). Run records compare it; CIFAR hashes in well under
        a second."""
        digest = hashlib.sha256()
        for part in (self.train, self.test):
            if part is None:
                digest.update(b"no split")
                continue
            for t in (part.images, part.labels):
                t = t.detach().cpu().contiguous()
                digest.update(f"{t.dtype} {tuple(t.shape)};".encode())
                digest.update(t.numpy().reshape(-1).view(np.uint8))
        return digest.hexdigest()[:16]

    def record(self) -> dict[str, Any]:
        """What a run's config.json says about its data: enough to tell whether a later run used the same."""
        return {"name": self.name, "fingerprint": self.fingerprint, "shape": list(self.shape),
                "classes": self.classes, "train_images": len(self.train),
                "test_images": None if self.test is None else len(self.test)}


Loader = Callable[[Path | None, bool], Dataset]
DATASETS: Registry[Loader] = Registry("dataset",
                                      accepts=(callable, "a loader function (data_dir, download) -> Dataset"),
                                      calls=lambda f: call_problem(f, None, True))


def load_dataset(name: str = "digits", data_dir: str | Path | None = None, *, download: bool = True) -> Dataset:
    """Load a registered dataset; `data_dir` defaults to $NASC_DATA or ~/.cache/nasc/data."""
    loader = DATASETS.get(name)  # RegistryError with did-you-mean for unknown names
    return loader(None if data_dir is None else Path(data_dir).expanduser(), download)


def recorded_data_dir(data_dir: str | None) -> str | None:
    """The data dir a run records: `--data-dir`, else $NASC_DATA when set. The environment is not in
    config.json, so a run that read $NASC_DATA and recorded None was trained (`nasc train RUN`) or
    resumed elsewhere from ~/.cache/nasc/data, or whatever $NASC_DATA said there."""
    return data_dir if data_dir is not None else os.environ.get("NASC_DATA") or None


def check_same_data(recorded: Any, dataset: Dataset, run: Path) -> None:
    """Refuse to continue a run on other data than it started on (same name, other images or labels): its
    metrics and checkpoint would mix two datasets without a trace. Runs written before data fingerprints
    were recorded have none and are not checked."""
    old = recorded.get("fingerprint") if isinstance(recorded, dict) else None
    if old is None or old == dataset.fingerprint:
        return
    raise DataError(f"the run in {run} started on other data: {dataset.name} now has fingerprint "
                    f"{dataset.fingerprint} ({len(dataset.train):,} training images), the run recorded {old} "
                    f"({recorded.get('train_images', '?')} training images)",
                    hint="the dataset's files changed since the run started (or $NASC_DATA points elsewhere); "
                         "restore them, or start a new run")


def split_indices(n: int, portion: float) -> tuple[Tensor, Tensor]:
    """The DARTS search split: the first floor(n * portion) indices train weights, the rest train alphas."""
    if not 0.0 < portion < 1.0:
        raise DataError(f"train portion must be in (0, 1), got {portion}")
    split = int(math.floor(n * portion))
    if split == 0 or split == n:
        raise DataError(f"train portion {portion} of {n} images leaves one side of the split empty")
    return torch.arange(split), torch.arange(split, n)


class Batches:
    """Seeded epochs of uint8 batches over `indices` of an ImageSet.

    The order of an epoch depends only on `(seed, epoch)`, never on how many
    epochs ran before in this process, so resuming at an epoch boundary (or
    at batch `start` of an epoch) replays an uninterrupted run exactly.

    `drop_single` (training) skips a last batch of one image after full ones:
    batch norm in training mode cannot normalise one sample at 1x1 resolution
    (a MobileNet-style chain on 8x8 digits gets there), and one image is no
    gradient estimate worth a step.
    """

    def __init__(self, data: ImageSet, indices: Tensor, batch_size: int, *, shuffle: bool, seed: int,
                 drop_last: bool = False, drop_single: bool = False):
        indices = torch.as_tensor(indices, dtype=torch.long)
        if indices.dim() != 1:
            raise DataError(f"indices must be 1-D, got shape {tuple(indices.shape)}")
        if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= len(data)):
            raise DataError(f"indices out of range for a split of {len(data)} images")
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")
        self.data, self.indices, self.batch_size = data, indices, batch_size
        self.shuffle, self.seed, self.drop_last, self.drop_single = shuffle, seed, drop_last, drop_single

    def __len__(self) -> int:
        n = len(self.indices)
        if self.drop_last or (self.drop_single and n > self.batch_size and n % self.batch_size == 1):
            return n // self.batch_size
        return math.ceil(n / self.batch_size)

    def order(self, epoch: int) -> Tensor:
        """The indices in the order epoch `epoch` visits them."""
        if not self.shuffle:
            return self.indices
        # SeedSequence mixes (seed, epoch) into independent streams; seed + epoch would alias runs.
        state = np.random.SeedSequence([self.seed % 2**64, epoch]).generate_state(1, np.uint64)[0]
        gen = torch.Generator().manual_seed(int(state) & (2**63 - 1))
        return self.indices[torch.randperm(len(self.indices), generator=gen)]

    def epoch(self, epoch: int, *, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (uint8 images (B, C, H, W), int64 labels (B,)) for one epoch, from batch `start` on."""
        if epoch < 0:
            raise DataError(f"epoch must be >= 0, got {epoch}")
        order = self.order(epoch)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]  # (B,)
            yield self.data.images[idx], self.data.labels[idx]


@contextlib.contextmanager
def normalisable(batch: int) -> Iterator[None]:
    """A training pass on a batch of one image fails in batch norm once the network reaches a 1x1 map (one
    value per channel): a MobileNet-style chain on 8x8 digits, DARTS' auxiliary head. torch's ValueError
    reached the command line as an internal error; it is the batch size's fault, and said so."""
    try:
        yield
    except ValueError as e:
        if batch != 1 or "Expected more than 1 value per channel" not in str(e):
            raise
        raise DataError("batch norm cannot normalise a batch of one image in training: the network reaches a 1x1 "
                        "map, where each channel has a single value", hint="use a batch of 2 or more (--batch)") from None


# ---------------------------------------------------------------------------------------------- helpers


def _data_root(data_dir: Path | None) -> Path:
    if data_dir is not None:
        return data_dir
    return Path(os.environ.get("NASC_DATA", "~/.cache/nasc/data")).expanduser()


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn whatever a corrupt file raises (EOFError, UnpicklingError, BadGzipFile, ...) into a DataError."""
    try:
        yield
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a file boundary: every failure is the file's fault
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}",
                        hint="the file looks corrupt or truncated; delete it and fetch it again") from exc


def _check_labels(path: Path, labels: np.ndarray, n: int, classes: int) -> None:
    if labels.shape != (n,):
        raise DataError(f"{path}: {n} images but {labels.size} labels")
    if n == 0:
        raise DataError(f"{path}: holds no images")
    if labels.min() < 0 or labels.max() >= classes:
        raise DataError(f"{path}: labels outside 0..{classes - 1}")


def _concat(parts: list[ImageSet]) -> ImageSet:
    return ImageSet(images=torch.cat([p.images for p in parts]), labels=torch.cat([p.labels for p in parts]))


# ----------------------------------------------------------------------------------------------- digits


def _digits_table() -> np.ndarray:
    """The (1797, 65) table behind `sklearn.datasets.load_digits`, read without importing sklearn.datasets.

    Importing sklearn.datasets costs about a second (it pulls in scipy); the
    CSV it reads ships in the wheel and parses in ~20 ms.
    """
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is not None and path.is_file():
        with _reading(path), gzip.open(path) as f:
            return np.loadtxt(f, delimiter=",", dtype=np.float64)
    from sklearn.datasets import load_digits  # fallback if the wheel layout ever changes

    bunch = load_digits()
    return np.concatenate([bunch.data, bunch.target[:, None]], axis=1)


@DATASETS.register("digits")
def _load_digits(data_dir: Path | None, download: bool) -> Dataset:
    """scikit-learn's 1797 8x8 handwritten digits; bundled, no download, trains in seconds on a CPU."""
    table = _digits_table()
    pixels = np.floor(table[:, :64] * 255.0 / 16.0 + 0.5).astype(np.uint8).reshape(-1, 1, 8, 8)  # (N, 1, 8, 8)
    labels = table[:, 64].astype(np.int64)  # (N,)
    # numpy's legacy RandomState stream is frozen across versions, so the split never moves.
    perm = np.random.RandomState(0).permutation(len(labels))
    n_train = int(math.floor(len(labels) * 0.8))
    tr, te = perm[:n_train], perm[n_train:]
    train = ImageSet(images=torch.from_numpy(pixels[tr]), labels=torch.from_numpy(labels[tr]))
    test = ImageSet(images=torch.from_numpy(pixels[te]), labels=torch.from_numpy(labels[te]))
    x = train.images.double() / 255.0
    return Dataset(name="digits", train=train, test=test, classes=10, mean=(x.mean().item(),),
                   std=(x.std(unbiased=False).item(),), flip=False, crop_pad=1)


# ------------------------------------------------------------------------------------------------ CIFAR


@attrs.frozen(kw_only=True)
class CifarSpec:
    """Where a CIFAR variant lives and what its files hold."""

    name: str
    folder: str  # the folder the official tarball unpacks to
    url: str
    md5: str | None  # of the tarball; None skips the check (tests)
    train: tuple[str, ...]
    test: str
    label_key: str
    classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


CIFAR: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        name="cifar10", folder="cifar-10-batches-py", url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a", train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test="test_batch", label_key="labels", classes=10,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    "cifar100": CifarSpec(
        name="cifar100", folder="cifar-100-python", url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85", train=("train",), test="test", label_key="fine_labels",
        classes=100, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and scalars, lists and dicts only: a data file must not be able to run code.

    Scalars because a CIFAR-format file written from Python 3 (a subset, a relabelled copy) often
    holds its labels as `list(array)`, a list of numpy integers; `scalar` only rebuilds one value."""

    def find_class(self, module: str, name: str) -> object:
        core = getattr(np, "_core", None) or np.core
        allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                   ("numpy.core.multiarray", "_reconstruct"): core.multiarray._reconstruct,
                   ("numpy._core.multiarray", "_reconstruct"): core.multiarray._reconstruct,
                   ("numpy.core.multiarray", "scalar"): core.multiarray.scalar,
                   ("numpy._core.multiarray", "scalar"): core.multiarray.scalar,
                   ("_codecs", "encode"): __import__("codecs").encode}
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return allowed[(module, name)]


def _read_cifar(path: Path, spec: CifarSpec) -> ImageSet:
    with _reading(path):
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
        if not isinstance(obj, dict):
            raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
        got = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
        if "data" not in got or spec.label_key not in got:
            raise DataError(f"{path}: missing key b'data' or b'{spec.label_key}'")
        data, labels = np.asarray(got["data"]), np.asarray(got[spec.label_key], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{path}: data must be uint8 (N, 3072), got {data.dtype} {data.shape}")
        _check_labels(path, labels, len(data), spec.classes)
        images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())  # (N, 3, 32, 32)
        return ImageSet(images=images, labels=torch.from_numpy(labels.copy()))


def _manual_hint(spec: CifarSpec, root: Path) -> str:
    return (f"download {spec.url} on a machine with internet, extract it and copy the folder "
            f"{spec.folder}/ into {root}")


def _safe_members(tar: tarfile.TarFile, folder: str) -> list[tarfile.TarInfo]:
    """Members of `tar`, refusing anything but plain files and dirs under `folder/` (no traversal, no links)."""
    members = tar.getmembers()
    for m in members:
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts or p.parts[:1] != (folder,) or not (m.isfile() or m.isdir()):
            raise DataError(f"unsafe or unexpected archive member {m.name!r}")
    return members


def _download_cifar(spec: CifarSpec, root: Path) -> None:
    """Fetch and unpack the tarball into root/spec.folder atomically: a failure leaves nothing behind."""
    created = not root.exists()
    try:  # a read-only or full disk fails here, before anything is fetched
        root.mkdir(parents=True, exist_ok=True)
        fd, part = tempfile.mkstemp(prefix=f".{spec.folder}-", suffix=".tar.gz.part", dir=root)
    except OSError as exc:
        raise DataError(f"{spec.name}: cannot write the download into {root}: {exc.strerror or exc}",
                        hint=f"choose a writable --data-dir, or {_manual_hint(spec, root)}") from exc
    log.info("downloading %s into %s", spec.url, root)
    staging: Path | None = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{spec.folder}-", dir=root))
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(spec.url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                out.write(chunk)
                digest.update(chunk)
        if spec.md5 is not None and digest.hexdigest() != spec.md5:
            raise DataError(f"{spec.url}: checksum mismatch (truncated download?)")
        with tarfile.open(part, "r:gz") as tar:
            members = _safe_members(tar, spec.folder)
            extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(staging, members=members, **extra)
        os.replace(staging / spec.folder, root / spec.folder)
    except Exception as exc:  # noqa: BLE001 - offline, proxy, bad archive: all end the same way
        reason = exc.message if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}"
        raise DataError(f"{spec.name}: could not download {spec.url} into {root}: {reason}",
                        hint=_manual_hint(spec, root)) from exc
    finally:
        Path(part).unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if created and not any(root.iterdir()):
            root.rmdir()  # a failed first download leaves no trace


def _find_cifar(spec: CifarSpec, root: Path, download: bool) -> Path:
    """The folder holding the batch files: root/spec.folder or root itself; downloads if allowed."""
    names = (*spec.train, spec.test)
    if root.exists() and not root.is_dir():
        raise DataError(f"{spec.name}: data dir {root} is a file, not a folder",
                        hint=f"name the folder that holds {spec.folder}/ with --data-dir")
    for folder in (root / spec.folder, root):
        if all((folder / n).is_file() for n in names):
            return folder
    expected = f"{', '.join(names)} in {root / spec.folder} (or directly in {root})"
    if (root / spec.folder).exists():
        raise DataError(f"{spec.name}: {root / spec.folder} is incomplete; expected {expected}",
                        hint=f"delete it and retry, or {_manual_hint(spec, root)}")
    if not download:
        what = "does not exist" if not root.exists() else "lacks the dataset"
        raise DataError(f"{spec.name}: data dir {root} {what}; expected {expected}", hint=_manual_hint(spec, root))
    _download_cifar(spec, root)
    return root / spec.folder


def _load_cifar(name: str, data_dir: Path | None, download: bool) -> Dataset:
    spec = CIFAR[name]  # looked up at call time so tests can point it at a local archive
    folder = _find_cifar(spec, _data_root(data_dir), download)
    train = _concat([_read_cifar(folder / n, spec) for n in spec.train])
    test = _read_cifar(folder / spec.test, spec)
    return Dataset(name=name, train=train, test=test, classes=spec.classes, mean=spec.mean, std=spec.std,
                   flip=True, crop_pad=4)


@DATASETS.register("cifar10")
def _load_cifar10(data_dir: Path | None, download: bool) -> Dataset:
    """CIFAR-10 (python pickles), 50k/10k 32x32 colour images; downloads if missing."""
    return _load_cifar("cifar10", data_dir, download)


@DATASETS.register("cifar100")
def _load_cifar100(data_dir: Path | None, download: bool) -> Dataset:
    """CIFAR-100 (python pickles, fine labels), 50k/10k 32x32 colour images; downloads if missing."""
    return _load_cifar("cifar100", data_dir, download)


# ------------------------------------------------------------------------------------------------ MNIST

_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """A uint8 IDX array (magic 0x0000080N) with its header and size checked."""
    with _reading(path):
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            raw = f.read()
        head = 4 + 4 * ndim
        if len(raw) < head:
            raise DataError(f"{path}: truncated IDX header")
        if raw[:4] != bytes((0, 0, 0x08, ndim)):
            raise DataError(f"{path}: bad IDX magic {raw[:4].hex()}, expected 000008{ndim:02x}")
        shape = struct.unpack(f">{ndim}I", raw[4:head])
        if len(raw) - head != math.prod(shape):
            raise DataError(f"{path}: header says {shape} = {math.prod(shape)} bytes, file has {len(raw) - head}")
        return np.frombuffer(raw, np.uint8, offset=head).reshape(shape).copy()


def _find_idx(root: Path, subdirs: tuple[str, ...]) -> list[Path] | None:
    for folder in (*(root / s for s in subdirs), root):
        found = [next((p for p in (folder / n, folder / f"{n}.gz") if p.is_file()), None) for n in _IDX]
        if all(found):
            return found  # type: ignore[return-value]
    return None


def _load_idx(name: str, data_dir: Path | None, subdirs: tuple[str, ...], mean: float, std: float) -> Dataset:
    root = _data_root(data_dir)
    if not root.is_dir():  # the default ~/.cache/nasc/data too: say what to put where, not only that it is missing
        raise DataError(f"{name}: data dir {root} {'is a file, not a folder' if root.exists() else 'does not exist'}",
                        hint=f"nasc does not download {name}; put its four IDX files ({', '.join(_IDX)}, "
                             f"each optionally .gz) in {root} or name their folder with --data-dir")
    paths = _find_idx(root, subdirs)
    if paths is None:
        where = ", ".join(str(root / s) for s in (*subdirs, "."))
        raise DataError(f"{name}: expected {', '.join(_IDX)} (each optionally .gz) in one of {where}",
                        hint=f"nasc does not download {name}; fetch the four IDX files and copy them there")
    splits = []
    for img_path, lab_path in (paths[:2], paths[2:]):
        images, labels = _read_idx(img_path, 3), _read_idx(lab_path, 1).astype(np.int64)
        _check_labels(lab_path, labels, len(images), 10)
        splits.append(ImageSet(images=torch.from_numpy(images)[:, None], labels=torch.from_numpy(labels)))
    if splits[0].images.shape[1:] != splits[1].images.shape[1:]:
        raise DataError(f"{name}: {paths[0]} and {paths[2]} hold images of different sizes")
    pad = 2 if splits[0].images.shape[-1] >= 28 else 1
    return Dataset(name=name, train=splits[0], test=splits[1], classes=10, mean=(mean,), std=(std,),
                   flip=False, crop_pad=pad)


@DATASETS.register("mnist")
def _load_mnist(data_dir: Path | None, download: bool) -> Dataset:
    """MNIST from the four IDX files (plain or .gz); 60k/10k 28x28 digits; not downloaded."""
    return _load_idx("mnist", data_dir, ("mnist", "MNIST/raw"), 0.1307, 0.3081)


@DATASETS.register("fashion_mnist")
def _load_fashion_mnist(data_dir: Path | None, download: bool) -> Dataset:
    """Fashion-MNIST from the four IDX files (plain or .gz); 60k/10k 28x28 clothes; not downloaded."""
    return _load_idx("fashion_mnist", data_dir, ("fashion_mnist", "FashionMNIST/raw"), 0.2860, 0.3530)
