"""Tests of spikeloom.model.data on tiny datasets written in the official layouts."""

from __future__ import annotations

import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spikeloom.model.data import (
    Dataset,
    Split,
    load_cifar,
    load_dataset,
    load_digits,
    load_image_folder,
    standardise,
)
from spikeloom.model.errors import ConfigError, DatasetError, InputError

# --------------------------------------------------------------------------- fixtures

PER_BATCH = 20


def _dump(path: Path, obj: object) -> None:
    # protocol 2 with bytes keys, as close to the Python-2 originals as Python 3 can write
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


@pytest.fixture
def cifar10(tmp_path: Path) -> tuple[Path, dict]:
    """A CIFAR-10 folder: five training batches and a test batch of 20 images each."""
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(1)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer",
             b"dog", b"frog", b"horse", b"ship", b"truck"]
    _dump(root / "batches.meta",
          {b"num_cases_per_batch": PER_BATCH, b"label_names": names, b"num_vis": 3072})
    written = {}
    for f in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
              "test_batch"]:
        data = _images(rng, PER_BATCH)
        labels = [int(v) for v in rng.permutation(np.arange(PER_BATCH) % 10)]
        _dump(root / f, {b"batch_label": f.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"img%d.png" % i for i in range(PER_BATCH)]})
        written[f] = (data, np.array(labels))
    return root, written


@pytest.fixture
def cifar100(tmp_path: Path) -> tuple[Path, dict]:
    """A CIFAR-100 folder: 50 training and 20 test images, labels from 5 of the 100 classes."""
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    rng = np.random.default_rng(2)
    fine = [b"fine%02d" % i for i in range(100)]
    _dump(root / "meta", {b"fine_label_names": fine,
                          b"coarse_label_names": [b"coarse%02d" % i for i in range(20)]})
    written = {}
    for f, n in (("train", 50), ("test", 20)):
        data = _images(rng, n)
        fine_labels = [int(v) * 7 for v in np.arange(n) % 5]
        _dump(root / f, {b"filenames": [b"x.png"] * n, b"batch_label": f.encode(),
                         b"fine_labels": fine_labels, b"coarse_labels": [v // 5 for v in fine_labels],
                         b"data": data})
        written[f] = (data, np.array(fine_labels))
    return root, written


COLOURS = {"ant": 40, "bee": 120, "cat": 200}  # red channel per class


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three classes x 6 solid-colour images of different sizes: 5 PNGs and one JPEG each.

    The red channel gives the class and the green channel the file's index, so both survive
    resizing (bilinear resizing keeps a solid colour).
    """
    root = tmp_path / "scenes"
    # created out of order: classes must come back sorted by name
    for cls in ("cat", "ant", "bee"):
        d = root / cls
        d.mkdir(parents=True)
        for i in range(6):
            colour = (COLOURS[cls], 30 * i, 77)
            size = (8 + 3 * i, 10 + 2 * i)
            if i == 5:
                Image.new("RGB", size, colour).save(d / f"img{i}.JPG", quality=95)
            elif i == 4:
                Image.new("RGBA", size, colour + (255,)).save(d / f"img{i}.png")
            else:
                Image.new("RGB", size, colour).save(d / f"img{i}.png")
        (d / "readme.txt").write_text("not an image")
        (d / ".hidden.png").write_bytes(b"not an image either")
    (root / "LICENSE").write_text("a file next to the class folders")
    return root


def _rows(x: np.ndarray) -> Counter:
    return Counter(row.tobytes() for row in x.reshape(len(x), -1))


# --------------------------------------------------------------------------- Dataset


def test_dataset_shape_flat_subset():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5) / 120
    d = Dataset("t", x, np.array([0, 1], dtype=np.int64), ("a", "b"))
    assert d.shape == (3, 4, 5)
    assert len(d) == 2
    assert d.flat().shape == (2, 60)
    np.testing.assert_array_equal(d.flat()[1], x[1].ravel())
    s = d.subset([1])
    assert s.x.shape == (1, 3, 4, 5) and s.y.tolist() == [1] and s.classes == ("a", "b")
    assert d.subset(np.array([False, True])).y.tolist() == [1]
    assert len(d.subset([])) == 0
    assert len(d.subset(0)) == 1
    with pytest.raises(AttributeError):
        d.name = "other"  # frozen


def test_dataset_rejects_bad_arrays():
    with pytest.raises(InputError):
        Dataset("t", np.zeros((2, 4, 4), np.float32), np.zeros(2, np.int64), ("a",))
    with pytest.raises(InputError):
        Dataset("t", np.zeros((2, 1, 4, 4), np.float64), np.zeros(2, np.int64), ("a",))
    with pytest.raises(InputError):
        Dataset("t", np.zeros((2, 1, 4, 4), np.float32), np.zeros(3, np.int64), ("a",))


# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> Split:
    return load_digits(seed=0)


def test_digits_sizes_range_and_partition(digits: Split):
    from sklearn import datasets

    tr, va, te = digits.train, digits.val, digits.test
    assert len(tr) + len(va) + len(te) == 1797
    assert len(te) == 360 and len(va) == 360
    for d in (tr, va, te):
        assert d.name == "digits"
        assert d.shape == (1, 8, 8)
        assert d.x.dtype == np.float32 and d.y.dtype == np.int64
        assert d.x.min() >= 0.0 and d.x.max() <= 1.0
        np.testing.assert_array_equal(d.x * 16, np.round(d.x * 16))  # exactly k / 16
        assert d.classes == tuple(str(i) for i in range(10))
    # the three splits together are exactly the whole data set (as a multiset of rows)
    full = datasets.load_digits()
    whole = np.concatenate([full.images.reshape(-1, 64) / 16, full.target[:, None]], axis=1)
    parts = np.concatenate([np.concatenate([d.flat(), d.y[:, None]], axis=1) for d in (tr, va, te)])
    assert _rows(parts.astype(np.float64)) == _rows(whole.astype(np.float64))


def test_digits_stratified(digits: Split):
    overall = np.bincount(np.concatenate([digits.train.y, digits.val.y, digits.test.y]))
    for d in (digits.test, digits.val):
        counts = np.bincount(d.y, minlength=10)
        assert (counts > 0).all()
        assert np.all(np.abs(counts - overall * 0.2) <= 1)


def test_digits_deterministic(digits: Split):
    again = load_digits(seed=0)
    for a, b in zip((digits.train, digits.val, digits.test), (again.train, again.val, again.test)):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
    other = load_digits(seed=1)
    assert not np.array_equal(other.test.x, digits.test.x)


def test_digits_fractions():
    s = load_digits(val_fraction=0.1, test_fraction=0.3)
    assert (len(s.train), len(s.val), len(s.test)) == (1077, 180, 540)
    s = load_digits(val_fraction=0.0, test_fraction=0.5)
    assert len(s.val) == 0 and s.val.shape == (1, 8, 8)
    with pytest.raises(ConfigError):
        load_digits(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError):
        load_digits(test_fraction=-0.1)


def test_standardise(digits: Split):
    z, mean, std = standardise(digits)
    assert mean.shape == std.shape == (1,)
    assert abs(float(z.train.x.mean())) < 1e-4
    assert abs(float(z.train.x.std()) - 1) < 1e-3
    np.testing.assert_allclose(z.test.x, (digits.test.x - mean[0]) / std[0], rtol=1e-6)
    np.testing.assert_array_equal(z.test.y, digits.test.y)
    assert digits.train.x.min() >= 0  # input untouched
    const = Dataset("c", np.full((4, 2, 2, 2), 0.5, np.float32), np.zeros(4, np.int64), ("a",))
    z, mean, std = standardise(Split(const, const.subset([]), const))
    assert np.isfinite(z.train.x).all() and std.tolist() == [1.0, 1.0]


# --------------------------------------------------------------------------- CIFAR


def _find_rows(data: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Row of `data` (uint8, N x 3072) for each image in `x` (float, N x 3 x 32 x 32)."""
    index = {row.tobytes(): i for i, row in enumerate(data)}
    back = np.round(x.reshape(len(x), -1) * 255).astype(np.uint8)
    return np.array([index[row.tobytes()] for row in back])


def test_cifar10_reads_back_exactly(cifar10):
    root, written = cifar10
    s = load_cifar(root, seed=0, val_fraction=0.1)
    assert s.train.classes[:3] == ("airplane", "automobile", "bird") and len(s.train.classes) == 10
    assert s.train.name == "cifar10"
    assert (len(s.train), len(s.val), len(s.test)) == (90, 10, 20)
    assert sorted(s.val.y.tolist()) == list(range(10))  # stratified: one per class
    for d in (s.train, s.val, s.test):
        assert d.x.shape[1:] == (3, 32, 32) and d.x.dtype == np.float32
        assert d.x.min() >= 0 and d.x.max() <= 1
    # the test set comes back in file order, pixel for pixel
    data, labels = written["test_batch"]
    np.testing.assert_array_equal(s.test.y, labels)
    np.testing.assert_array_equal(s.test.x, data.reshape(-1, 3, 32, 32).astype(np.float32) / 255)
    # channel-first layout: first 1024 bytes are the red plane
    assert s.test.x[0, 0, 0, 1] == np.float32(data[0, 1]) / 255
    assert s.test.x[0, 1, 0, 0] == np.float32(data[0, 1024]) / 255
    assert s.test.x[0, 2, 31, 31] == np.float32(data[0, 3071]) / 255
    # train + val are the five batches, each image with its label
    all_data = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    all_labels = np.concatenate([written[f"data_batch_{i}"][1] for i in range(1, 6)])
    rows = np.concatenate([_find_rows(all_data, d.x) for d in (s.train, s.val)])
    assert sorted(rows.tolist()) == list(range(100))
    np.testing.assert_array_equal(np.concatenate([s.train.y, s.val.y]), all_labels[rows])
    # deterministic, and the parent folder works too
    again = load_cifar(root.parent)
    np.testing.assert_array_equal(again.val.x, s.val.x)


def test_cifar100_reads_back_exactly(cifar100):
    root, written = cifar100
    s = load_cifar(root, val_fraction=0.2)
    assert s.train.name == "cifar100"
    assert s.train.classes == tuple("fine%02d" % i for i in range(100))
    assert (len(s.train), len(s.val), len(s.test)) == (40, 10, 20)
    data, labels = written["test"]
    np.testing.assert_array_equal(s.test.y, labels)
    np.testing.assert_array_equal(s.test.x, data.reshape(-1, 3, 32, 32).astype(np.float32) / 255)
    train_data, train_labels = written["train"]
    rows = np.concatenate([_find_rows(train_data, d.x) for d in (s.train, s.val)])
    assert sorted(rows.tolist()) == list(range(50))
    np.testing.assert_array_equal(np.concatenate([s.train.y, s.val.y]), train_labels[rows])
    assert set(s.val.y.tolist()) == {0, 7, 14, 21, 28}


def test_cifar_missing_batch(cifar10):
    root, _ = cifar10
    (root / "data_batch_4").unlink()
    with pytest.raises(DatasetError, match="data_batch_4") as e:
        load_cifar(root)
    assert str(root) in str(e.value)


def test_cifar100_missing_meta(cifar100):
    root, _ = cifar100
    (root / "meta").unlink()
    with pytest.raises(DatasetError, match="meta"):
        load_cifar(root)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_cifar_corrupt_pickle(cifar10, damage):
    root, _ = cifar10
    f = root / "data_batch_3"
    raw = f.read_bytes()
    f.write_bytes({"truncate": raw[: len(raw) // 2], "garbage": b"\x00not a pickle" * 10,
                   "empty": b""}[damage])
    with pytest.raises(DatasetError, match="data_batch_3") as e:
        load_cifar(root)
    assert str(f) in str(e.value)
    assert e.value.__cause__ is not None


def test_cifar_wrong_contents(cifar10):
    root, _ = cifar10
    _dump(root / "test_batch", {b"labels": [0, 1], b"data": np.zeros((2, 100), np.uint8)})
    with pytest.raises(DatasetError, match="test_batch"):
        load_cifar(root)
    _dump(root / "test_batch", {b"labels": [0, 12], b"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(DatasetError, match="test_batch"):
        load_cifar(root)
    _dump(root / "test_batch", [1, 2, 3])
    with pytest.raises(DatasetError, match="test_batch"):
        load_cifar(root)


def test_cifar_refuses_code_in_pickle(cifar10, tmp_path):
    root, _ = cifar10

    class Marker:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "pwned"),))

    _dump(root / "batches.meta", {b"label_names": [Marker()]})
    with pytest.raises(DatasetError, match="batches.meta"):
        load_cifar(root)
    assert not (tmp_path / "pwned").exists()


def test_cifar_bad_paths(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as e:
        load_cifar(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(e.value)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(DatasetError, match="not a directory") as e:
        load_cifar(f)
    assert str(f) in str(e.value)
    with pytest.raises(DatasetError, match="not a CIFAR folder") as e:
        load_cifar(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_cifar_too_few_for_val(cifar100):
    root, _ = cifar100
    with pytest.raises(DatasetError, match="50 samples") as e:
        load_cifar(root, val_fraction=0.05)  # 3 validation images for 5 classes
    assert str(root) in str(e.value)


# --------------------------------------------------------------------------- image folders


def test_folder_loads_resizes_and_labels(folder):
    s = load_image_folder(folder, size=16, seed=3)
    assert s.train.classes == ("ant", "bee", "cat")
    assert s.train.name == "scenes"
    assert (len(s.train), len(s.val), len(s.test)) == (10, 4, 4)
    for d in (s.train, s.val, s.test):
        assert d.x.shape[1:] == (3, 16, 16) and d.x.dtype == np.float32
        assert d.x.flags["C_CONTIGUOUS"]
        assert d.x.min() >= 0 and d.x.max() <= 1
        # solid images: the red channel names the class (JPEG within a few levels)
        red = d.x[:, 0].mean(axis=(1, 2)) * 255
        expected = np.array([COLOURS[c] for c in ("ant", "bee", "cat")])[d.y]
        np.testing.assert_allclose(red, expected, atol=4)
        assert np.allclose(d.x[:, 2] * 255, 77, atol=4)
    assert set(s.test.y.tolist()) == {0, 1, 2}
    # all 18 images once: (class, file index) pairs from red and green
    seen = sorted(
        (int(y), int(round(g / 30)))
        for d in (s.train, s.val, s.test)
        for y, g in zip(d.y, d.x[:, 1].mean(axis=(1, 2)) * 255)
    )
    assert seen == [(c, i) for c in range(3) for i in range(6)]


def test_folder_exact_pixels_and_size(tmp_path):
    root = tmp_path / "ds"
    rng = np.random.default_rng(0)
    pixels = {}
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            arr = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
            pixels[arr.tobytes()] = cls
    s = load_image_folder(root, size=6, val_fraction=0.2, test_fraction=0.4)
    for d in (s.train, s.val, s.test):
        for x, y in zip(d.x, d.y):
            back = np.round(x.transpose(1, 2, 0) * 255).astype(np.uint8).tobytes()
            assert pixels[back] == d.classes[y]


def test_folder_max_per_class_and_determinism(folder):
    s = load_image_folder(folder, size=8, max_per_class=4)
    assert len(s.train) + len(s.val) + len(s.test) == 12
    greens = np.concatenate([d.x[:, 1].mean(axis=(1, 2)) for d in (s.train, s.val, s.test)]) * 255
    assert sorted(set(np.round(greens / 30).astype(int).tolist())) == [0, 1, 2, 3]
    again = load_image_folder(folder, size=8, max_per_class=4)
    np.testing.assert_array_equal(s.test.x, again.test.x)
    np.testing.assert_array_equal(s.test.y, again.test.y)
    with pytest.raises(ConfigError):
        load_image_folder(folder, max_per_class=0)
    with pytest.raises(ConfigError):
        load_image_folder(folder, size=0)


def test_folder_bad_paths(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match="does not exist") as e:
        load_image_folder(missing)
    assert str(missing) in str(e.value)
    f = tmp_path / "file.png"
    f.write_bytes(b"x")
    with pytest.raises(DatasetError, match="not a directory") as e:
        load_image_folder(f)
    assert str(f) in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "loose.png").write_bytes(b"x")
    with pytest.raises(DatasetError, match="no class subfolders") as e:
        load_image_folder(empty)
    assert str(empty) in str(e.value)


def test_folder_class_without_images(folder):
    bare = folder / "dog"
    bare.mkdir()
    (bare / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="no images") as e:
        load_image_folder(folder)
    assert str(bare) in str(e.value)


@pytest.mark.parametrize("content", ["garbage", "truncated"])
def test_folder_unreadable_image(folder, content):
    bad = folder / "bee" / "broken.png"
    if content == "garbage":
        bad.write_bytes(b"this is not a PNG file")
    else:
        Image.new("RGB", (40, 40), (1, 2, 3)).save(bad)
        raw = bad.read_bytes()
        bad.write_bytes(raw[: len(raw) // 2])
    # one unreadable image is left out and counted, with the reason; the others all load
    s = load_image_folder(folder, size=8)
    raw = bad.read_bytes()
    bad.unlink()
    good = load_image_folder(folder, size=8)
    bad.write_bytes(raw)
    assert len(s.train) + len(s.val) + len(s.test) == len(good.train) + len(good.val) + len(good.test)
    assert not good.skipped
    assert len(s.skipped) == 1 and s.skipped[0][0] == str(bad) and s.skipped[0][1]
    # a class whose every image is unreadable is an error naming the folder
    for p in (folder / "bee").iterdir():
        p.write_bytes(b"nothing")
    with pytest.raises(DatasetError, match="no readable image") as e:
        load_image_folder(folder, size=8)
    assert str(folder / "bee") in str(e.value)


def test_folder_too_few_images(tmp_path):
    root = tmp_path / "tiny"
    for cls in ("a", "b", "c"):
        (root / cls).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(root / cls / "only.png")
    with pytest.raises(DatasetError, match="3 samples") as e:
        load_image_folder(root, size=4)
    assert str(root) in str(e.value)


# --------------------------------------------------------------------------- load_dataset


def test_load_dataset_specs(cifar10, cifar100, folder):
    assert len(load_dataset("digits", seed=2).test) == 360
    c10, _ = cifar10
    assert load_dataset(f"cifar:{c10}").train.name == "cifar10"
    assert load_dataset(str(c10)).train.name == "cifar10"
    c100, _ = cifar100
    assert load_dataset(str(c100), val_fraction=0.2).train.name == "cifar100"
    s = load_dataset(f"folder:{folder}", size=12)
    assert s.train.shape == (3, 12, 12)
    assert load_dataset(str(folder), size=12).train.classes == ("ant", "bee", "cat")


def test_load_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist") as e:
        load_dataset(str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in str(e.value)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"cifar:{tmp_path / 'nope'}")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}")
