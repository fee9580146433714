"""Dataset loading: images as float32 arrays in [0, 1], split into train / validation / test.

Every loader returns a :class:`Split` of three :class:`Dataset` objects holding channel-first
images ``x`` of shape ``(N, C, H, W)`` and integer labels ``y``. The splits are stratified and
depend only on the seed, so a run can be repeated exactly. Nothing is ever downloaded: CIFAR and
image-folder datasets are read from local folders, and the 8x8 digits ship with scikit-learn.

Every problem with what the user gave (a missing path, an unreadable file, too few images) raises
:class:`~spikeloom.model.errors.DatasetError` with a message naming the path and the problem.
"""

from __future__ import annotations

import io
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import check_int, check_seed
from .errors import ConfigError, DatasetError, InputError

__all__ = [
    "Dataset",
    "Split",
    "IMAGE_EXTENSIONS",
    "load_digits",
    "load_cifar",
    "load_image_folder",
    "load_dataset",
    "load_npy",
    "standardise",
]

#: Largest side image folders are resized to (``--image-size``).
MAX_IMAGE_SIZE = 1024

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})

_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR100_DIR = "cifar-100-python"
_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR10_FILES = (*_CIFAR10_TRAIN, "test_batch", "batches.meta")
_CIFAR100_FILES = ("train", "test", "meta")
_CIFAR_PIXELS = 3 * 32 * 32


@dataclass(frozen=True, eq=False)
class Dataset:
    """Labelled images.

    Attributes
    ----------
    name : str
        Dataset name, e.g. ``"digits"``.
    x : numpy.ndarray
        Images, float32, shape ``(N, C, H, W)``; values in [0, 1] as loaded (not after
        :func:`standardise`).
    y : numpy.ndarray
        Labels, int64, shape ``(N,)``, indices into `classes`.
    classes : tuple of str
        Class names; label ``k`` is ``classes[k]``.
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.x, np.ndarray) or self.x.ndim != 4 or self.x.dtype != np.float32:
            raise InputError(
                f"dataset {self.name!r}: x must be a float32 array of shape (N, C, H, W), got "
                f"{getattr(self.x, 'dtype', type(self.x).__name__)} {np.shape(self.x)}"
            )
        if not isinstance(self.y, np.ndarray) or self.y.shape != (len(self.x),) or self.y.dtype != np.int64:
            raise InputError(
                f"dataset {self.name!r}: y must be an int64 array of shape ({len(self.x)},), got "
                f"{getattr(self.y, 'dtype', type(self.y).__name__)} {np.shape(self.y)}"
            )
        object.__setattr__(self, "classes", tuple(self.classes))

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n={len(self)}, shape={self.shape}, "
            f"classes={len(self.classes)})"
        )

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one image, ``(C, H, W)``."""
        return tuple(self.x.shape[1:])

    def flat(self) -> np.ndarray:
        """Return the images as rows, shape ``(N, C*H*W)`` (a view where possible)."""
        return self.x.reshape(len(self.x), -1)

    def subset(self, idx: Any) -> Dataset:
        """Return a new dataset with the selected rows.

        Parameters
        ----------
        idx : array_like of int or bool, or slice
            Row indices, a boolean mask of length N, or a slice.
        """
        if not isinstance(idx, slice):
            idx = np.asarray(idx)
            if idx.ndim == 0:
                idx = idx.reshape(1)
            if idx.size == 0:
                idx = idx.astype(np.intp)
        return Dataset(self.name, self.x[idx], self.y[idx], self.classes)


@dataclass(frozen=True, eq=False)
class Split:
    """Train, validation and test sets of one dataset. ``skipped``: ``(path, reason)`` of every
    file the loader could not read and left out (image folders: a corrupt image is skipped and
    counted, not fatal)."""

    train: Dataset
    val: Dataset
    test: Dataset
    skipped: tuple = ()

    def __repr__(self) -> str:
        return f"Split(train={self.train!r}, val={self.val!r}, test={self.test!r})"


# --------------------------------------------------------------------------- splitting


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}"
        )


def _split_indices(
    y: np.ndarray, seed: int, val_fraction: float, test_fraction: float, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded ``(train, val, test)`` row indices; fractions are of the whole."""
    from sklearn.model_selection import train_test_split

    _check_fractions(val_fraction, test_fraction)
    rest = np.arange(len(y))
    test = val = rest[:0]
    try:
        if test_fraction > 0:
            rest, test = train_test_split(
                rest, test_size=test_fraction, stratify=y, random_state=seed
            )
        if val_fraction > 0:
            rest, val = train_test_split(
                rest,
                test_size=val_fraction / (1.0 - test_fraction),
                stratify=y[rest],
                random_state=seed,
            )
    except ValueError as e:
        counts = np.bincount(y) if len(y) else np.zeros(0, np.int64)
        present = counts[counts > 0]
        raise DatasetError(
            f"{where}: too few samples for a stratified split: {len(y)} samples in "
            f"{len(present)} classes (smallest class: {present.min() if len(present) else 0}), "
            f"val_fraction={val_fraction}, test_fraction={test_fraction}; each split needs at "
            f"least one sample per class and each class at least 2 ({e})"
        ) from e
    return rest, val, test


def _make_split(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    classes: tuple[str, ...],
    seed: int,
    val_fraction: float,
    test_fraction: float,
    where: str,
) -> Split:
    full = Dataset(name, x, y, classes)
    train, val, test = _split_indices(y, seed, val_fraction, test_fraction, where)
    return Split(full.subset(train), full.subset(val), full.subset(test))


# --------------------------------------------------------------------------- digits


def load_digits(seed: int = 0, val_fraction: float = 0.2, test_fraction: float = 0.2) -> Split:
    """Load scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes).

    Pixel values 0..16 are divided by 16, so every value is exactly ``k / 16``.

    Parameters
    ----------
    seed : int
        Seed of the stratified split.
    val_fraction, test_fraction : float
        Fractions of all 1797 images held out for validation and test.

    Returns
    -------
    Split
        Images of shape ``(N, 1, 8, 8)``, classes ``"0"`` .. ``"9"``.
    """
    from sklearn import datasets

    bunch = datasets.load_digits()
    x = (bunch.images.astype(np.float32) / np.float32(16.0))[:, None, :, :]
    y = bunch.target.astype(np.int64)
    classes = tuple(str(c) for c in range(10))
    return _make_split("digits", x, y, classes, seed, val_fraction, test_fraction, "digits")


# --------------------------------------------------------------------------- CIFAR

# Official CIFAR pickles hold only dicts, lists, bytes and numpy arrays; refusing every other
# global keeps a tampered file from running code while it is loaded.
_PICKLE_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }
)


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def _read_pickle(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"CIFAR folder {path.parent} is missing the file {path.name}")
    try:
        data = path.read_bytes()
        obj = _CifarUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any failure here means an unreadable file
        raise DatasetError(
            f"cannot read CIFAR file {path}: truncated or corrupt pickle ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(obj, dict):
        raise DatasetError(f"CIFAR file {path} holds a {type(obj).__name__}, not a dict")
    return obj


def _cifar_batch(path: Path, label_key: bytes, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_pickle(path)
    for key in (b"data", label_key):
        if key not in batch:
            raise DatasetError(f"CIFAR file {path} has no {key.decode()!r} entry")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key])
    if data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS:
        raise DatasetError(
            f"CIFAR file {path}: 'data' must have shape (N, {_CIFAR_PIXELS}), got {data.shape}"
        )
    if data.dtype != np.uint8:
        if data.dtype.kind not in "iu" or data.size and (data.min() < 0 or data.max() > 255):
            raise DatasetError(f"CIFAR file {path}: 'data' must be uint8 pixels, got {data.dtype}")
        data = data.astype(np.uint8)
    if labels.shape != (len(data),) or (labels.size and labels.dtype.kind not in "iu"):
        raise DatasetError(
            f"CIFAR file {path}: {len(data)} images but labels of shape {labels.shape} "
            f"and type {labels.dtype}"
        )
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DatasetError(
            f"CIFAR file {path}: labels span {labels.min()}..{labels.max()}, "
            f"but there are {n_classes} class names"
        )
    return data, labels


def _cifar_dir(path: Path) -> Path | None:
    """The CIFAR folder at or directly under `path`, or None when there is none."""
    if not path.is_dir():
        return None
    names = {p.name for p in path.iterdir() if p.is_file()}
    if names & set(_CIFAR10_FILES) or "meta" in names or {"train", "test"} <= names:
        return path
    subdirs = [path / d for d in (_CIFAR10_DIR, _CIFAR100_DIR) if (path / d).is_dir()]
    if len(subdirs) == 1:
        return subdirs[0]
    if len(subdirs) == 2:
        raise DatasetError(
            f"{path} holds both {_CIFAR10_DIR} and {_CIFAR100_DIR}; pass one of them"
        )
    return None


def _check_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise DatasetError(f"{what} {path} does not exist")
    if not path.is_dir():
        raise DatasetError(f"{what} {path} is not a directory")


def _to_float(images: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1], dividing in place to avoid a second full-size copy."""
    x = images.astype(np.float32, order="C")
    np.divide(x, np.float32(255.0), out=x)
    return x


def load_cifar(path: str | Path, seed: int = 0, val_fraction: float = 0.1) -> Split:
    """Load CIFAR-10 or CIFAR-100 from the official python-pickle files.

    Parameters
    ----------
    path : str or Path
        The folder ``cifar-10-batches-py`` (``data_batch_1`` .. ``data_batch_5``,
        ``test_batch``, ``batches.meta``) or ``cifar-100-python`` (``train``, ``test``,
        ``meta``), or a folder holding exactly one of them. Which one is detected from the files.
    seed : int
        Seed of the stratified validation split.
    val_fraction : float
        Fraction of the training images held out for validation.

    Returns
    -------
    Split
        Images of shape ``(N, 3, 32, 32)``; the test set is the official one. CIFAR-100 uses the
        100 fine labels.

    Notes
    -----
    Only plain data is unpickled (dicts, lists, bytes, numpy arrays); a file asking for any
    other Python object is refused as corrupt.
    """
    path = Path(path).expanduser()
    _check_dir(path, "CIFAR folder")
    folder = _cifar_dir(path)
    if folder is None:
        raise DatasetError(
            f"{path} is not a CIFAR folder: expected {', '.join(_CIFAR10_FILES)} (CIFAR-10) or "
            f"{', '.join(_CIFAR100_FILES)} (CIFAR-100)"
        )
    names = {p.name for p in folder.iterdir() if p.is_file()}
    if names & set(_CIFAR10_FILES):
        name, meta_file, names_key, label_key = "cifar10", "batches.meta", b"label_names", b"labels"
        train_files, test_file = _CIFAR10_TRAIN, "test_batch"
    else:
        name, meta_file, names_key, label_key = "cifar100", "meta", b"fine_label_names", b"fine_labels"
        train_files, test_file = ("train",), "test"
    for f in (*train_files, test_file, meta_file):
        if f not in names:
            raise DatasetError(f"CIFAR folder {folder} is missing the file {f}")

    meta_path = folder / meta_file
    meta = _read_pickle(meta_path)
    raw_names = meta.get(names_key)
    if not isinstance(raw_names, (list, tuple)) or not raw_names:
        raise DatasetError(f"CIFAR file {meta_path} has no {names_key.decode()!r} list")
    classes = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in raw_names)

    parts = [_cifar_batch(folder / f, label_key, len(classes)) for f in train_files]
    train_data = np.concatenate([d for d, _ in parts]) if len(parts) > 1 else parts[0][0]
    train_y = np.concatenate([y for _, y in parts])
    del parts
    test_data, test_y = _cifar_batch(folder / test_file, label_key, len(classes))

    # Rows are the R, G and B planes of 32x32 pixels one after another, i.e. already (3, 32, 32).
    train = Dataset(name, _to_float(train_data.reshape(-1, 3, 32, 32)), train_y, classes)
    del train_data
    test = Dataset(name, _to_float(test_data.reshape(-1, 3, 32, 32)), test_y, classes)
    tr, va, _ = _split_indices(train_y, seed, val_fraction, 0.0, str(folder))
    return Split(train.subset(tr), train.subset(va), test)


# --------------------------------------------------------------------------- image folders


def _class_images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def _read_image(path: Path, size: int, channels: int = 3) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if channels == 3 else "L")
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8).reshape(size, size, channels)
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad files
        raise DatasetError(f"cannot read image {path}: {type(e).__name__}: {e}") from e


def load_image_folder(
    path: str | Path,
    size: int = 64,
    channels: int = 3,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    max_per_class: int | None = None,
) -> Split:
    """Load a one-folder-per-class image dataset (UC Merced, AID, NWPU-RESISC45, EuroSAT RGB).

    Parameters
    ----------
    path : str or Path
        Folder whose immediate subfolders are the classes, sorted by name. Files with the
        extensions in :data:`IMAGE_EXTENSIONS` (any case) are images; other files, hidden files
        and deeper folders are ignored.
    size : int
        Images are converted to RGB (``channels`` 3) or grey levels (``channels`` 1) and resized
        (bilinear) to ``size x size``.
    seed : int
        Seed of the stratified split.
    val_fraction, test_fraction : float
        Fractions of all images held out for validation and test.
    max_per_class : int, optional
        Keep only the first `max_per_class` images (sorted by file name) of each class.

    Returns
    -------
    Split
        Images of shape ``(N, channels, size, size)``, named after the folder.
    """
    path = Path(path).expanduser()
    _check_dir(path, "image folder")
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ConfigError(f"size must be a positive integer, got {size!r}")
    if max_per_class is not None and (
        not isinstance(max_per_class, (int, np.integer)) or max_per_class < 1
    ):
        raise ConfigError(f"max_per_class must be a positive integer or None, got {max_per_class!r}")

    class_dirs = sorted(
        (p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    if not class_dirs:
        raise DatasetError(f"image folder {path} has no class subfolders")
    if len(class_dirs) < 2:
        raise DatasetError(f"image folder {path} has 1 class folder ({class_dirs[0].name!r}); a classifier "
                           "needs at least 2 (one subfolder per class)")
    files: list[list[Path]] = []
    for d in class_dirs:
        imgs = _class_images(d)
        if not imgs:
            raise DatasetError(
                f"class folder {d} has no images (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        files.append(imgs[:max_per_class] if max_per_class is not None else imgs)

    n = sum(len(f) for f in files)
    pixels = np.empty((n, size, size, channels), dtype=np.uint8)
    y = np.repeat(np.arange(len(files), dtype=np.int64), [len(f) for f in files])
    ok = np.ones(n, dtype=bool)
    skipped = []
    for i, f in enumerate(p for group in files for p in group):
        try:
            pixels[i] = _read_image(f, size, channels)
        except DatasetError as e:  # one unreadable file is left out and counted, not the end of the load
            ok[i] = False
            skipped.append((str(f), str(e).split(": ", 1)[-1]))
    for k, d in enumerate(class_dirs):
        if not ok[y == k].any():
            raise DatasetError(f"class folder {d} has no readable image ({len(files[k])} unreadable, e.g. "
                               f"{files[k][0].name}: {skipped[[s[0] for s in skipped].index(str(files[k][0]))][1]})")
    x = _to_float(pixels[ok].transpose(0, 3, 1, 2))
    del pixels
    classes = tuple(d.name for d in class_dirs)
    split = _make_split(path.name, x, y[ok], classes, seed, val_fraction, test_fraction, str(path))
    return Split(split.train, split.val, split.test, skipped=tuple(skipped))


# --------------------------------------------------------------------------- .npy arrays


def load_npy(path: str | Path, what: str = "--input") -> np.ndarray:
    """Read a ``.npy`` array of numbers (never Python objects) given by the user.

    The header's shape and type are checked against the file's size before anything is
    allocated, so a file that declares a huge array is refused at once. Every problem raises
    :class:`~spikeloom.model.errors.InputError` naming ``what`` (the option) and the path.
    """
    path = Path(path)
    where = f"{what} {path}"
    if not path.exists():
        raise InputError(f"{where}: does not exist")
    if not path.is_file():
        raise InputError(f"{where}: is not a file")
    try:
        size = path.stat().st_size
        if size == 0:
            raise InputError(f"{where}: empty file (0 bytes); expected a .npy array")
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            header = {(1, 0): np.lib.format.read_array_header_1_0,
                      (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if header is None:
                raise InputError(f"{where}: .npy format version {version} is not supported (1.0 or 2.0)")
            shape, _, dtype = header(f)
            if dtype.hasobject:
                raise InputError(f"{where}: holds Python objects (dtype {dtype}); expected an array of integers")
            need, held = int(np.prod(shape, dtype=object)) * dtype.itemsize, size - f.tell()
            if need != held:
                raise InputError(f"{where}: the header declares shape {shape} of {dtype} ({need} bytes) but the "
                                 f"file holds {held} bytes after it (truncated, or not a .npy file)")
            f.seek(0)
            return np.lib.format.read_array(f, allow_pickle=False)
    except InputError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{where}: not a .npy file ({e})") from None


# --------------------------------------------------------------------------- helpers


def standardise(split: Split) -> tuple[Split, np.ndarray, np.ndarray]:
    """Standardise every channel with the mean and standard deviation of the training set.

    For float-only experiments: the hardware pipeline expects inputs in [0, 1], so do not feed
    standardised data to it.

    Parameters
    ----------
    split : Split
        Data to standardise; it is not modified.

    Returns
    -------
    split : Split
        The three datasets with ``(x - mean) / std``.
    mean, std : numpy.ndarray
        Float32 arrays of shape ``(C,)``. A constant channel gets ``std = 1``.
    """
    x = split.train.x
    if len(x) == 0:
        raise DatasetError(f"dataset {split.train.name!r}: cannot standardise an empty training set")
    # float64 accumulation: float32 sums over millions of pixels lose digits
    mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
    std = x.std(axis=(0, 2, 3), dtype=np.float64)
    std[std == 0] = 1.0
    mean32, std32 = mean.astype(np.float32), std.astype(np.float32)

    def apply(d: Dataset) -> Dataset:
        z = (d.x - mean32[None, :, None, None]) / std32[None, :, None, None]
        return Dataset(d.name, z.astype(np.float32, copy=False), d.y, d.classes)

    return Split(apply(split.train), apply(split.val), apply(split.test), split.skipped), mean32, std32


def load_dataset(spec: str, size: int | None = None, channels: int | None = None, **kw: Any) -> Split:
    """Load a dataset from a short specification.

    Parameters
    ----------
    spec : str
        ``"digits"``; ``"cifar:PATH"``; ``"folder:PATH"``; or a plain ``PATH``, read as CIFAR
        when it holds the CIFAR files (or one CIFAR folder), else as an image folder.
    size : int, optional
        Image folders only: the side images are resized to (default: :func:`load_image_folder`'s);
        given for digits or CIFAR, whose images have a fixed size, it is an error.
    channels : int, optional
        Image folders only: 3 (RGB, the default) or 1 (grey levels); like ``size``, an error for
        digits or CIFAR.
    **kw
        Passed on to :func:`load_digits`, :func:`load_cifar` or :func:`load_image_folder`.

    Returns
    -------
    Split
    """
    spec = str(spec).strip()
    if not spec or spec in ("cifar:", "folder:"):
        raise DatasetError(f"dataset {spec!r}: no path given (expected 'digits', 'cifar:PATH', 'folder:PATH' or an "
                           "existing folder)")
    # the options first: nothing is read before they are known good
    if size is not None:
        check_int(None, "--image-size", int(size) if isinstance(size, np.integer) else size, 1, MAX_IMAGE_SIZE)
    if channels is not None and channels not in (1, 3):
        raise ConfigError(f"--channels = {channels!r}; allowed: 1 (grey levels), 3 (RGB)")
    if "seed" in kw:
        check_seed(int(kw["seed"]) if isinstance(kw["seed"], np.integer) else kw["seed"], "--data-seed")

    def fixed(kind):
        for opt, v in (("--image-size", size), ("--channels", channels)):
            if v is not None:
                raise DatasetError(f"{opt} = {v!r} applies to image folders only; dataset {spec!r} is "
                                   f"{kind}, whose images have a fixed size and channels")
        return kw

    sized = dict(kw, **{k: v for k, v in (("size", size), ("channels", channels)) if v is not None})
    if spec == "digits":
        return load_digits(**fixed("the 8x8 digits"))
    if spec.startswith("cifar:"):
        return load_cifar(spec[len("cifar:"):], **fixed("CIFAR (32x32)"))
    if spec.startswith("folder:"):
        return load_image_folder(spec[len("folder:"):], **sized)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DatasetError(
            f"dataset {spec!r}: path does not exist (expected 'digits', 'cifar:PATH', "
            f"'folder:PATH' or an existing folder)"
        )
    if _cifar_dir(path) is not None:
        return load_cifar(path, **fixed("CIFAR (32x32)"))
    return load_image_folder(path, **sized)
