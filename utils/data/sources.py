"""Readers for the standard archives: CIFAR-10/100, MNIST, Fashion-MNIST, SVHN, STL-10.

Each reader decodes one split of the files as published to uint8 (N, C, H, W) + int64 (N,). Missing
files are downloaded through torchvision when possible; otherwise the error names the folder, the
files and where to get them. Folder readers (Tiny ImageNet, image folders) live in `folders.py`.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .registry import DatasetInfo, ImageSet, register_dataset

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # `apt-get install dataset-fashion-mnist`

# Where each dataset's files live below the data root (what torchvision's downloads create).
SUBDIRS = {
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "stl10": "stl10_binary",
    "tiny-imagenet": "tiny-imagenet-200",
    "fashion-mnist": "FashionMNIST/raw",
    "mnist": "MNIST/raw",
}
SPLIT_ALIASES = {"tiny-imagenet": {"test": "val"}}  # tiny-imagenet's own test split has no labels


def source_dir(name: str, root: Path) -> Path:
    """The folder a dataset is read from (the cache key hashes it)."""
    if name == "fashion-mnist" and _has_idx(DEBIAN_FASHION_MNIST):
        return DEBIAN_FASHION_MNIST
    return Path(root) / SUBDIRS.get(name, "")


def check_split(name: str, split: str, valid: tuple[str, ...]) -> str:
    split = SPLIT_ALIASES.get(name, {}).get(split, split)
    if split not in valid:
        raise ValueError(f"{name} has splits {', '.join(valid)}; got split={split!r}")
    return split


# ---------------------------------------------------------------- missing files and downloads


def missing_error(name: str, folder: Path, files: list[str], how: str) -> FileNotFoundError:
    missing = [f for f in files if not (folder / f).exists()]
    return FileNotFoundError(
        f"{name}: expected {', '.join(files)} in {folder}/ (missing: {', '.join(missing)}). {how}"
    )


def ensure_files(name: str, folder: Path, files: list[str], how: str,
                 fetch: Callable[[], object] | None, download: bool) -> None:
    """Make sure `folder/files` exist: download with `fetch` if allowed, else raise what to do."""
    if all((folder / f).exists() for f in files):
        return
    if fetch is not None and download:
        print(f"{name}: {folder}/ is incomplete; downloading (torchvision) ...")
        try:
            fetch()
        except Exception as err:  # offline, proxy, checksum: all end in the same instructions
            # the message carries the cause; the chained traceback would only bury it
            raise missing_error(name, folder, files, f"{how} (Download failed: {err!r})") from None
        if all((folder / f).exists() for f in files):
            return
    raise missing_error(name, folder, files, how)


def _fetch_archive(cls_name: str, root: Path) -> Callable[[], object]:
    """torchvision's URL + checksum for a CIFAR/STL archive, downloaded and extracted into root."""

    def fetch() -> None:
        import torchvision.datasets as tvd
        from torchvision.datasets.utils import download_and_extract_archive

        cls = getattr(tvd, cls_name)
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)

    return fetch


# ---------------------------------------------------------------- CIFAR (python pickle batches)

CIFAR10 = DatasetInfo(
    "cifar10", 10,
    ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
)
CIFAR100_CLASSES = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel
can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur
dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion
lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree
pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea
seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table
tank telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman
worm""".split())  # fine labels, in label order (alphabetical, as in cifar-100-python/meta)
CIFAR100 = DatasetInfo(
    "cifar100", 100, CIFAR100_CLASSES, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
)
_CIFAR_URL = {"cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
              "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"}


# What a CIFAR batch pickle can name: numpy's array, dtype and scalar rebuilders (python 2's files and
# protocol 2: _reconstruct; protocol 5: _frombuffer) and _codecs.encode (bytes under protocol 2).
# numpy 2 calls numpy.core numpy._core; both spellings are admitted.
_CIFAR_GLOBALS = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                  ("numpy.core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
                  ("_codecs", "encode")}


class _CifarUnpickler(pickle.Unpickler):
    """pickle.load that admits only what a CIFAR batch holds: a plain pickle runs any function the file
    names (os.system, eval) while loading, so a crafted `data_batch_*` would run code."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str):
        core = module.replace("numpy._core", "numpy.core", 1)
        if (core, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(
                f"{self.path} is not a CIFAR batch: it asks to load {module}.{name}, which a CIFAR file "
                "never holds (a crafted file could run code; nothing was run); replace it with the original "
                "download")
        if core.startswith("numpy.core") and hasattr(np, "_core"):
            module = core.replace("numpy.core", "numpy._core", 1)  # numpy 2's name; numpy.core warns
        return super().find_class(module, name)


def read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One pickle batch: b'data' (N, 3072) uint8, row-major R then G then B planes -> (N, 3, 32, 32)."""
    with open(path, "rb") as f:
        batch = _CifarUnpickler(f, path).load()
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return images, np.asarray(batch[label_key], dtype=np.int64)


def _read_cifar(info: DatasetInfo, split: str, root: Path, download: bool) -> ImageSet:
    split = check_split(info.name, split, ("train", "test"))
    folder = source_dir(info.name, root)
    if info.name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        label_key = b"labels"
    else:
        files, label_key = [split], b"fine_labels"
    how = (f"Download {_CIFAR_URL[info.name]} and extract it into {Path(root)}/ "
           "(load_dataset does this itself when online).")
    fetch = _fetch_archive("CIFAR10" if info.name == "cifar10" else "CIFAR100", Path(root))
    ensure_files(info.name, folder, files, how, fetch, download)
    parts = [read_cifar_batch(folder / f, label_key) for f in files]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return ImageSet(images, labels, info, split)


@register_dataset(CIFAR10)
def read_cifar10(split: str, root: Path, download: bool = True) -> ImageSet:
    return _read_cifar(CIFAR10, split, root, download)


@register_dataset(CIFAR100)
def read_cifar100(split: str, root: Path, download: bool = True) -> ImageSet:
    return _read_cifar(CIFAR100, split, root, download)


# ---------------------------------------------------------------- MNIST, Fashion-MNIST (idx files)

MNIST = DatasetInfo("mnist", 10, tuple("0123456789"), 1, 28, (0.1307,), (0.3081,))
FASHION_MNIST = DatasetInfo(
    "fashion-mnist", 10,
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    1, 28, (0.2860,), (0.3530,),
)
_IDX_PREFIX = {"train": "train", "test": "t10k"}
_IDX_MAGIC = {2051: 3, 2049: 1}  # magic number -> number of dimensions (images: N, rows, cols)


def idx_names(split: str) -> list[str]:
    p = _IDX_PREFIX[split]
    return [f"{p}-images-idx3-ubyte.gz", f"{p}-labels-idx1-ubyte.gz"]


def _has_idx(folder: Path) -> bool:
    return all(_idx_file(folder / n).exists() for s in _IDX_PREFIX for n in idx_names(s))


def _idx_file(path: Path) -> Path:
    """`x.gz`, or the unpacked `x` that torchvision also leaves next to it."""
    return path if path.exists() else path.with_suffix("")


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip or plain): big-endian int32 magic (2051 images / 2049 labels), sizes, uint8 data."""
    path = _idx_file(path)
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    magic = int.from_bytes(raw[:4], "big")
    if magic not in _IDX_MAGIC:
        raise ValueError(f"{path}: not an idx uint8 file (magic {magic}, expected 2051 or 2049)")
    ndim = _IDX_MAGIC[magic]
    shape = np.frombuffer(raw, ">i4", count=ndim, offset=4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape.tolist())


def _read_idx_set(info: DatasetInfo, split: str, root: Path, download: bool, how: str,
                  fetch: Callable[[], object]) -> ImageSet:
    split = check_split(info.name, split, ("train", "test"))
    folder = source_dir(info.name, root)
    names = idx_names(split)
    if not all(_idx_file(folder / n).exists() for n in names):
        ensure_files(info.name, folder, names, how, fetch, download)
    images = torch.from_numpy(read_idx(folder / names[0]).copy()).unsqueeze(1)  # (N, 1, 28, 28)
    labels = torch.from_numpy(read_idx(folder / names[1]).astype(np.int64))
    return ImageSet(images, labels, info, split)


def _fetch_torchvision(cls_name: str, root: Path) -> Callable[[], object]:
    def fetch() -> None:
        import torchvision.datasets as tvd

        getattr(tvd, cls_name)(str(root), train=True, download=True)

    return fetch


@register_dataset(FASHION_MNIST)
def read_fashion_mnist(split: str, root: Path, download: bool = True) -> ImageSet:
    how = (f"Install the Debian package (sudo apt-get install dataset-fashion-mnist -> "
           f"{DEBIAN_FASHION_MNIST}/), or put the four idx .gz files from "
           "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ "
           f"into {Path(root)}/FashionMNIST/raw/.")
    return _read_idx_set(FASHION_MNIST, split, root, download, how, _fetch_torchvision("FashionMNIST", root))


@register_dataset(MNIST)
def read_mnist(split: str, root: Path, download: bool = True) -> ImageSet:
    how = (f"Put the four idx .gz files from https://ossci-datasets.s3.amazonaws.com/mnist/ "
           f"into {Path(root)}/MNIST/raw/ (load_dataset downloads them when online).")
    return _read_idx_set(MNIST, split, root, download, how, _fetch_torchvision("MNIST", root))


# ---------------------------------------------------------------- SVHN (.mat, torchvision's layout)

SVHN = DatasetInfo("svhn", 10, tuple("0123456789"), 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))


@register_dataset(SVHN)
def read_svhn(split: str, root: Path, download: bool = True) -> ImageSet:
    """`<root>/{train,test,extra}_32x32.mat`: X (32, 32, 3, N) uint8, y (N, 1) with 10 meaning digit 0."""
    import scipy.io

    split = check_split("svhn", split, ("train", "test", "extra"))
    folder, name = Path(root), f"{split}_32x32.mat"
    url = f"http://ufldl.stanford.edu/housenumbers/{name}"

    def fetch() -> None:
        import torchvision.datasets as tvd
        from torchvision.datasets.utils import download_url

        url_, filename, md5 = tvd.SVHN.split_list[split]
        download_url(url_, str(folder), filename, md5)

    how = f"Download {url} into {folder}/ (load_dataset does this when online)."
    ensure_files("svhn", folder, [name], how, fetch, download)
    mat = scipy.io.loadmat(folder / name)
    images = torch.from_numpy(np.ascontiguousarray(mat["X"].transpose(3, 2, 0, 1)))  # (N, C, H, W)
    labels = torch.from_numpy(mat["y"].astype(np.int64).reshape(-1) % 10)  # 10 -> 0
    return ImageSet(images, labels, SVHN, split)


# ---------------------------------------------------------------- STL-10 (binary, column-major)

STL10 = DatasetInfo(
    "stl10", 10, ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"),
    3, 96, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713),
)


def read_stl10_bin(path: Path) -> np.ndarray:
    """`*_X.bin`: per image 3 planes of 96x96 stored column-major -> (N, 3, 96, 96) row-major."""
    raw = np.fromfile(path, dtype=np.uint8).reshape(-1, 3, 96, 96)
    return np.ascontiguousarray(raw.transpose(0, 1, 3, 2))


@register_dataset(STL10)
def read_stl10(split: str, root: Path, download: bool = True) -> ImageSet:
    """The labelled splits (5000 train / 8000 test); labels in `*_y.bin` are 1..10."""
    split = check_split("stl10", split, ("train", "test"))
    folder = source_dir("stl10", root)
    files = [f"{split}_X.bin", f"{split}_y.bin"]
    how = (f"Download http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz and extract it into "
           f"{Path(root)}/ (load_dataset does this when online).")
    ensure_files("stl10", folder, files, how, _fetch_archive("STL10", Path(root)), download)
    images = torch.from_numpy(read_stl10_bin(folder / files[0]))
    labels = torch.from_numpy(np.fromfile(folder / files[1], dtype=np.uint8).astype(np.int64) - 1)
    return ImageSet(images, labels, STL10, split)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 (N, C, H, W) images as [0, 1] pixels (float64 sums, chunked)."""
    c = images.shape[1]
    s, s2, n = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].transpose(0, 1).reshape(c, -1).double() / 255
        s, s2, n = s + x.sum(1), s2 + (x * x).sum(1), n + x.shape[1]
    mean = s / max(n, 1)
    std = (s2 / max(n, 1) - mean**2).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


# ---------------------------------------------------------------- scikit-learn's bundled digits

# normalisation: the train split's
SKLEARN_DIGITS = DatasetInfo("sklearn-digits", 10, tuple("0123456789"), 1, 28, (0.3062,), (0.3251,))
DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED = 0.3, 0


@register_dataset(SKLEARN_DIGITS)
def read_sklearn_digits(split: str, root: Path) -> ImageSet:
    """scikit-learn's handwritten digits (UCI, 1,797 images of 8x8, values 0-16; installed with
    scikit-learn, so always offline), scaled to 0-255 and upsampled bilinearly to 28x28 like MNIST. Its own
    split: a seeded, stratified 30% is the test set (539 images), the rest train (1,258)."""
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    from .splits import stratified_index

    split = check_split("sklearn-digits", split, ("train", "test"))
    digits = load_digits()
    x = torch.from_numpy(digits.images).float().mul(255 / 16).unsqueeze(1)  # (N, 1, 8, 8) in [0, 255]
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).round().clamp(0, 255)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    test = torch.zeros(len(labels), dtype=torch.bool)
    test[stratified_index(labels, round(DIGITS_TEST_FRACTION * len(labels)), DIGITS_SPLIT_SEED)] = True
    keep = test if split == "test" else ~test
    return ImageSet(x[keep].to(torch.uint8), labels[keep], SKLEARN_DIGITS, split)
