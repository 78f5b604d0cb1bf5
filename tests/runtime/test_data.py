"""The data layer: loaders on tiny fake files in the real formats, the DARTS split, Batches and Augment."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from pathlib import Path

import attrs
import numpy as np
import pytest
import torch

from nasc.errors import DataError, RegistryError
from nasc.runtime import data as D
from nasc.runtime.augment import Augment, cutout_mask
from nasc.runtime.data import Batches, Dataset, ImageSet, load_dataset, split_indices

# ------------------------------------------------------------------------------------------- fake files


def _cifar_batch(path: Path, n: int, label_key: bytes, classes: int, seed: int) -> None:
    rng = np.random.RandomState(seed)
    obj = {b"data": rng.randint(0, 256, (n, 3072)).astype(np.uint8),
           label_key: [int(v) for v in rng.randint(0, classes, n)], b"batch_label": b"fake"}
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _fake_cifar10(folder: Path, n: int = 4) -> Path:
    folder.mkdir(parents=True)
    for i in range(1, 6):
        _cifar_batch(folder / f"data_batch_{i}", n, b"labels", 10, i)
    _cifar_batch(folder / "test_batch", n, b"labels", 10, 9)
    return folder


def _idx(path: Path, arr: np.ndarray, magic: bytes | None = None) -> None:
    head = magic or bytes((0, 0, 8, arr.ndim))
    raw = head + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def _fake_mnist(folder: Path, gz: bool = False, n_train: int = 12, n_test: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _idx(folder / f"{prefix}-images-idx3-ubyte{ext}", rng.randint(0, 256, (n, 28, 28)))
        _idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", rng.randint(0, 10, n))
    return folder


# ---------------------------------------------------------------------------------------------- loaders


def test_digits_shapes_split_and_stats():
    ds = load_dataset()
    assert ds.name == "digits" and ds.classes == 10 and ds.shape == (1, 8, 8)
    assert (len(ds.train), len(ds.test)) == (1437, 360)
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    assert int(ds.train.images.max()) == 255 and not ds.flip and ds.crop_pad == 1
    assert set(ds.train.labels.tolist()) == set(range(10))
    x = ds.train.images.double() / 255
    assert ds.mean[0] == pytest.approx(x.mean().item()) and ds.std[0] == pytest.approx(x.std(unbiased=False).item())
    again = load_dataset("digits")
    assert torch.equal(again.test.images, ds.test.images)  # the split is fixed


def test_the_data_fingerprint_changes_with_any_pixel_or_label_and_only_then():
    digits = load_dataset("digits")
    assert digits.fingerprint == load_dataset("digits").fingerprint and len(digits.fingerprint) == 16

    def changed(split: str, what: str) -> Dataset:
        part = getattr(digits, split)
        images, labels = part.images.clone(), part.labels.clone()
        if what == "images":
            images[3, 0, 4, 4] ^= 1
        else:
            labels[3] = (labels[3] + 1) % 10
        return attrs.evolve(digits, **{split: ImageSet(images=images, labels=labels)})

    prints = {changed(split, what).fingerprint for split in ("train", "test") for what in ("images", "labels")}
    assert len(prints) == 4 and digits.fingerprint not in prints
    assert attrs.evolve(digits, test=None).fingerprint != digits.fingerprint


def test_unknown_dataset_suggests():
    with pytest.raises(RegistryError) as info:
        load_dataset("cifar1O")
    assert "cifar10" in (info.value.hint or "")


@pytest.mark.parametrize("inner", [True, False], ids=["parent_dir", "batches_dir"])
def test_cifar10_loads(tmp_path, inner):
    folder = _fake_cifar10(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", folder.parent if inner else folder, download=False)
    assert ds.shape == (3, 32, 32) and ds.classes == 10 and ds.flip and ds.crop_pad == 4
    assert (len(ds.train), len(ds.test)) == (20, 4)
    assert ds.mean == (0.4914, 0.4822, 0.4465)
    raw = pickle.loads((folder / "data_batch_1").read_bytes(), encoding="bytes")
    assert torch.equal(ds.train.images[0], torch.from_numpy(raw[b"data"][0].reshape(3, 32, 32)))


def test_cifar100_loads_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    _cifar_batch(folder / "train", 20, b"fine_labels", 100, 1)
    _cifar_batch(folder / "test", 5, b"fine_labels", 100, 2)
    ds = load_dataset("cifar100", tmp_path, download=False)
    assert ds.classes == 100 and (len(ds.train), len(ds.test)) == (20, 5) and ds.std == (0.2673, 0.2564, 0.2762)


def test_cifar_labels_pickled_as_numpy_integers_load(tmp_path):
    """A CIFAR-format file saved from Python 3 with `list(labels)` holds numpy scalars, not ints."""
    folder = _fake_cifar10(tmp_path / "cifar-10-batches-py")
    labels = np.arange(4, dtype=np.int64) + 3
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8),
                                                      b"labels": list(labels)}))
    assert load_dataset("cifar10", tmp_path, download=False).test.labels.tolist() == [3, 4, 5, 6]


@pytest.mark.parametrize("corrupt", ["truncated", "garbage", "wrong_size", "label_count", "code"])
def test_corrupt_cifar_names_file(tmp_path, corrupt):
    folder = _fake_cifar10(tmp_path / "cifar-10-batches-py")
    bad = folder / "data_batch_3"
    if corrupt == "truncated":
        bad.write_bytes(bad.read_bytes()[:100])
    elif corrupt == "garbage":
        bad.write_bytes(b"not a pickle at all")
    elif corrupt == "wrong_size":
        bad.write_bytes(pickle.dumps({b"data": np.zeros((4, 3000), np.uint8), b"labels": [0] * 4}))
    elif corrupt == "label_count":
        bad.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 3}))
    else:  # a pickle that would run code must be refused, not executed
        bad.write_bytes(pickle.dumps(attrs.evolve))
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", tmp_path, download=False)
    assert "data_batch_3" in info.value.message


def test_cifar_missing_dir_and_files(tmp_path):
    with pytest.raises(DataError, match="does not exist") as info:
        load_dataset("cifar10", tmp_path / "nope", download=False)
    assert "on a machine with internet" in info.value.hint and "data_batch_1" in info.value.message
    with pytest.raises(DataError, match="lacks"):
        load_dataset("cifar100", tmp_path, download=False)


def test_a_data_dir_that_is_a_file_or_cannot_be_created_is_a_data_error(tmp_path):
    """`--data-dir` naming a file used to end in an internal FileExistsError from the download's mkdir."""
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_dataset("cifar10", afile)  # download allowed: it must not try to mkdir a file
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_dataset("mnist", afile)
    with pytest.raises(DataError, match="cannot write the download into") as info:
        load_dataset("cifar100", afile / "sub")  # its parent is a file: mkdir fails before any fetch
    assert "writable --data-dir" in info.value.hint


def _tarball(path: Path, members: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar_download_from_archive(tmp_path, monkeypatch):
    src = _fake_cifar10(tmp_path / "src" / "cifar-10-batches-py")
    archive = tmp_path / "cifar.tar.gz"
    md5 = _tarball(archive, {f"cifar-10-batches-py/{p.name}": p.read_bytes() for p in src.iterdir()})
    spec = attrs.evolve(D.CIFAR["cifar10"], url=archive.as_uri(), md5=md5)
    monkeypatch.setitem(D.CIFAR, "cifar10", spec)
    ds = load_dataset("cifar10", tmp_path / "dl")
    assert len(ds.train) == 20
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["cifar-10-batches-py"]  # no temp files left


@pytest.mark.parametrize("problem", ["traversal", "checksum", "unreachable"])
def test_cifar_download_failures_leave_nothing(tmp_path, monkeypatch, problem):
    archive = tmp_path / "evil.tar.gz"
    md5 = _tarball(archive, {"cifar-10-batches-py/../../evil": b"x", "cifar-10-batches-py/test_batch": b"y"})
    url = archive.as_uri() if problem != "unreachable" else (tmp_path / "absent.tar.gz").as_uri()
    spec = attrs.evolve(D.CIFAR["cifar10"], url=url, md5=md5 if problem == "traversal" else "0" * 32)
    monkeypatch.setitem(D.CIFAR, "cifar10", spec)
    root = tmp_path / "dl"
    root.mkdir()
    with pytest.raises(DataError, match="could not download") as info:
        load_dataset("cifar10", root)
    assert "on a machine with internet" in info.value.hint
    assert list(root.iterdir()) == [] and not (tmp_path / "evil").exists()


@pytest.mark.parametrize("layout", ["", "mnist", "MNIST/raw"])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_mnist_loads(tmp_path, layout, gz):
    _fake_mnist(tmp_path / layout, gz=gz)
    ds = load_dataset("mnist", tmp_path)
    assert ds.shape == (1, 28, 28) and (len(ds.train), len(ds.test)) == (12, 6)
    assert not ds.flip and ds.crop_pad == 2 and ds.test.labels.dtype == torch.int64


def test_fashion_mnist_layout(tmp_path):
    _fake_mnist(tmp_path / "FashionMNIST" / "raw", gz=True)
    assert load_dataset("fashion_mnist", tmp_path).classes == 10


@pytest.mark.parametrize("corrupt", ["magic", "truncated", "count", "gz"])
def test_corrupt_mnist_names_file(tmp_path, corrupt):
    folder = _fake_mnist(tmp_path, gz=corrupt == "gz")
    name = "t10k-images-idx3-ubyte" + (".gz" if corrupt == "gz" else "")
    bad = folder / name
    if corrupt == "magic":
        _idx(bad, np.zeros((6, 28, 28)), magic=b"\x00\x00\x08\x01")
    elif corrupt in ("truncated", "gz"):
        bad.write_bytes(bad.read_bytes()[:-50])
    else:
        _idx(bad, np.zeros((5, 28, 28)))  # 5 images, 6 labels
        name = "t10k-labels-idx1-ubyte"
    with pytest.raises(DataError) as info:
        load_dataset("mnist", tmp_path)
    assert name in info.value.message


def test_mnist_missing(tmp_path):
    with pytest.raises(DataError, match="does not exist") as info:
        load_dataset("mnist", tmp_path / "nope")
    # a newcomer's `--data mnist` lands here (no ~/.cache/nasc/data): the hint says nasc will not download it
    assert "does not download" in info.value.hint and "train-images-idx3-ubyte" in info.value.hint
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_dataset("fashion_mnist", tmp_path)


# ------------------------------------------------------------------------------------- split and batches


def test_split_indices_is_the_darts_rule():
    train, val = split_indices(10, 0.55)
    assert train.tolist() == list(range(5)) and val.tolist() == list(range(5, 10))
    train, val = split_indices(50000, 0.5)
    assert len(train) == len(val) == 25000 and int(val[0]) == 25000
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(DataError):
            split_indices(10, bad)


def _toy(n: int = 23) -> ImageSet:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    return ImageSet(images=images, labels=torch.arange(n))


def test_batches_cover_every_index_once_and_are_seeded():
    data = _toy()
    idx = torch.arange(3, 20)
    loader = Batches(data, idx, 5, shuffle=True, seed=7)
    assert len(loader) == 4 and len(Batches(data, idx, 5, shuffle=True, seed=7, drop_last=True)) == 3
    seen = [lab for _, lab in loader.epoch(0)]
    assert [len(s) for s in seen] == [5, 5, 5, 2]
    assert sorted(torch.cat(seen).tolist()) == idx.tolist()
    images, labels = next(loader.epoch(0))
    assert images.dtype == torch.uint8 and torch.equal(images[:, 0, 0, 0].long(), labels)
    fresh = Batches(data, idx, 5, shuffle=True, seed=7)  # a resumed run starting at epoch 3
    assert torch.equal(torch.cat([lab for _, lab in fresh.epoch(3)]), torch.cat([lab for _, lab in loader.epoch(3)]))
    assert not torch.equal(loader.order(0), loader.order(1))
    assert not torch.equal(loader.order(0), Batches(data, idx, 5, shuffle=True, seed=8).order(0))
    assert [lab.tolist() for _, lab in loader.epoch(2, start=2)] == [s.tolist() for s in list(
        lab for _, lab in loader.epoch(2))[2:]]


def test_training_batches_drop_a_last_batch_of_one_image_only():
    """Batch norm in training mode cannot normalise one sample at 1x1 resolution: that step used to crash."""
    data = _toy()
    train = Batches(data, torch.arange(21), 10, shuffle=True, seed=3, drop_single=True)  # 21 = 2 * 10 + 1
    assert len(train) == 2 and [len(y) for _, y in train.epoch(0)] == [10, 10]
    assert len(Batches(data, torch.arange(21), 10, shuffle=True, seed=3)) == 3  # evaluation keeps every image
    assert len(Batches(data, torch.arange(22), 10, shuffle=True, seed=3, drop_single=True)) == 3
    assert len(Batches(data, torch.arange(1), 10, shuffle=True, seed=3, drop_single=True)) == 1  # nothing else


def test_batches_unshuffled_and_drop_last():
    loader = Batches(_toy(), torch.arange(10), 4, shuffle=False, seed=0, drop_last=True)
    assert [lab.tolist() for _, lab in loader.epoch(5)] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(DataError):
        Batches(_toy(), torch.arange(30), 4, shuffle=False, seed=0)


# ---------------------------------------------------------------------------------------------- augment


def _rgb(n: int = 16, size: int = 32) -> tuple[Dataset, torch.Tensor]:
    images = torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    ds = Dataset(name="fake", train=ImageSet(images=images, labels=torch.zeros(n, dtype=torch.long)), test=None,
                 classes=10, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), flip=True, crop_pad=4)
    return ds, images


def test_a_dataset_whose_labels_exceed_its_classes_is_refused_when_built():
    """A plugin's loader with labels past `classes` ended mid-search in cross-entropy's IndexError."""
    ds, images = _rgb()
    bad = ImageSet(images=images, labels=torch.arange(16) % 12)  # labels 0..11 for 10 classes
    with pytest.raises(DataError, match=r"train labels span 0..11, outside 0..9"):
        attrs.evolve(ds, train=bad)
    with pytest.raises(DataError, match="test labels"):
        attrs.evolve(ds, test=ImageSet(images=images, labels=torch.full((16,), -1)))


def test_eval_is_plain_normalisation():
    ds, images = _rgb()
    out = Augment(ds, cutout=8, train=False)(images)
    mean, std = torch.tensor(ds.mean).view(1, 3, 1, 1), torch.tensor(ds.std).view(1, 3, 1, 1)
    assert out.dtype == torch.float32 and out.shape == images.shape
    assert torch.allclose(out, (images.float() / 255 - mean) / std)


def test_train_is_seeded_and_keeps_shape():
    ds, images = _rgb()
    aug = Augment(ds, cutout=8)
    a = aug(images, torch.Generator().manual_seed(3))
    b = aug(images, torch.Generator().manual_seed(3))
    c = aug(images, torch.Generator().manual_seed(4))
    assert a.shape == images.shape and torch.equal(a, b) and not torch.equal(a, c)


def test_crop_shifts_with_black_padding():
    ds, images = _rgb()
    aug = Augment(ds, flip=False)
    out = aug(images, torch.Generator().manual_seed(0))
    black = aug.normalise(torch.zeros(1, 3, 1, 1, dtype=torch.uint8))
    plain = aug.normalise(images)
    for i in range(len(images)):  # each output is the input shifted by some (dy, dx), black where it left
        hits = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                if torch.allclose(out[i, :, 4:28, 4:28], plain[i, :, 4 + dy:28 + dy, 4 + dx:28 + dx])]
        assert len(hits) == 1
    assert (out == black).all(dim=1).any()  # some padding shows


def test_flip_false_never_flips_and_flip_true_sometimes_does():
    ds, images = _rgb(64)
    plain = Augment(ds, train=False)(images)
    assert torch.equal(Augment(ds, crop_pad=0, flip=False)(images, torch.Generator().manual_seed(0)), plain)
    flipped = Augment(ds, crop_pad=0, flip=True)(images, torch.Generator().manual_seed(0))
    same = [torch.equal(flipped[i], plain[i]) for i in range(64)]
    mirrored = [torch.equal(flipped[i], plain[i].flip(2)) for i in range(64)]
    assert all(s or m for s, m in zip(same, mirrored)) and any(same) and any(mirrored)
    digits = Dataset(name="d", train=ImageSet(images=images[:, :1], labels=torch.zeros(64, dtype=torch.long)),
                     test=None, classes=10, mean=(0.5,), std=(0.25,), flip=False, crop_pad=1)
    assert Augment(digits).flip is False and Augment(digits).crop_pad == 1


def test_cutout_zeroes_one_square_after_normalisation():
    ds, images = _rgb(64)
    out = Augment(ds, crop_pad=0, flip=False, cutout=8)(images, torch.Generator().manual_seed(1))
    zero = (out == 0).all(dim=1)  # (B, H, W); mean/255 is not a pixel value, so only cutout makes zeros
    interior = 0
    for mask in zero:
        ys, xs = mask.nonzero(as_tuple=True)
        assert len(ys) > 0
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        assert mask[y0:y1, x0:x1].all() and len(ys) == (y1 - y0) * (x1 - x0)  # one filled rectangle
        assert y1 - y0 <= 8 and x1 - x0 <= 8
        if 0 < y0 and y1 < 32 and 0 < x0 and x1 < 32:
            assert len(ys) == 64
            interior += 1
    assert interior > 0
    assert not (Augment(ds, crop_pad=0, flip=False)(images) == 0).all(dim=1).any()


def test_cutout_mask_matches_darts_clipping():
    m = cutout_mask(10, 10, torch.tensor([0, 5]), torch.tensor([9, 5]), 4)  # (2, 10, 10)
    assert m[0].sum() == 2 * 3  # rows [0, 2), cols [7, 10)
    assert m[1, 3:7, 3:7].all() and m[1].sum() == 16


def test_augment_rejects_float_input():
    ds, images = _rgb()
    with pytest.raises(DataError):
        Augment(ds)(images.float())
