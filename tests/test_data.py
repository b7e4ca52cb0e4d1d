"""utils.data readers and cache, on files written in the published formats into a temp folder."""

import gzip
import os
import pickle
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from utils import data
from utils.data import registry, sources


def _rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- writers of the real formats


def write_cifar(folder, name, images, labels, label_key):
    """A CIFAR python batch: dict with b'data' (N, 3072) uint8 = R plane, G plane, B plane, row-major."""
    folder.mkdir(parents=True, exist_ok=True)
    batch = {b"batch_label": name.encode(), b"data": images.reshape(len(images), -1), label_key: list(labels)}
    with open(folder / name, "wb") as f:
        pickle.dump(batch, f)


def write_idx(path, array):
    """idx gzip: big-endian magic 2051 (images, 3 dims) or 2049 (labels, 1 dim), sizes, then uint8 data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist_like(folder, n_train=7, n_test=3, seed=0):
    rng, arrays = _rng(seed), {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x, y = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)
        arrays[split] = (x, y)
    return arrays


# ---------------------------------------------------------------- registry


def test_registered_names_and_infos():
    assert set(data.list_datasets()) >= {"cifar10", "cifar100", "stl10", "tiny-imagenet", "fashion-mnist",
                                         "mnist", "svhn", "image-folder", "synthetic"}
    for name in ("cifar10", "cifar100", "stl10", "fashion-mnist", "mnist", "svhn", "synthetic"):
        info = data.get_info(name)
        assert len(info.classes) == info.num_classes and len(set(info.classes)) == info.num_classes
        assert len(info.mean) == len(info.std) == info.channels
    assert data.get_info("cifar10").classes[:3] == ("airplane", "automobile", "bird")
    assert data.get_info("cifar100").classes[1] == "aquarium_fish"
    assert data.get_info("cifar100").classes[-1] == "worm"
    assert data.get_info("fashion-mnist").classes[9] == "Ankle boot"
    assert data.get_info("stl10").classes[7] == "monkey"
    assert (data.get_info("stl10").image_size, data.get_info("tiny-imagenet").image_size) == (96, 64)


def test_unknown_dataset_lists_names():
    with pytest.raises(KeyError, match="cifar10.*fashion-mnist.*synthetic"):
        data.load_dataset("imagenet-21k")


# ---------------------------------------------------------------- readers


def test_cifar10_pickle_batches(tmp_path):
    rng, folder = _rng(), tmp_path / "cifar-10-batches-py"
    train = rng.integers(0, 256, (5, 4, 3, 32, 32), dtype=np.uint8)  # 5 batches of 4
    for i in range(5):
        write_cifar(folder, f"data_batch_{i + 1}", train[i], [i, 9 - i, 3, 4], b"labels")
    test = rng.integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    write_cifar(folder, "test_batch", test, [7, 8, 9], b"labels")
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in data.get_info("cifar10").classes]}, f)

    ds = data.load_dataset("cifar10", "train", root=tmp_path)
    assert ds.images.shape == (20, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.images, torch.from_numpy(train.reshape(20, 3, 32, 32)))
    # CHW: channel 1 of image 0 is the second 1024 bytes of its row (the G plane), row-major.
    assert torch.equal(ds.images[0, 1], torch.from_numpy(train[0, 0].reshape(-1)[1024:2048].reshape(32, 32)))
    assert ds.labels.tolist()[:8] == [0, 9, 3, 4, 1, 8, 3, 4] and ds.labels.dtype == torch.int64
    ts = data.load_dataset("cifar10", "test", root=tmp_path)
    assert torch.equal(ts.images, torch.from_numpy(test)) and ts.labels.tolist() == [7, 8, 9]
    assert ts.info == data.get_info("cifar10")


def test_cifar100_fine_labels(tmp_path):
    rng, folder = _rng(1), tmp_path / "cifar-100-python"
    x = rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    batch = {b"data": x.reshape(6, -1), b"fine_labels": [0, 99, 5, 6, 7, 8], b"coarse_labels": [0] * 6}
    folder.mkdir()
    for split in ("train", "test"):
        (folder / split).write_bytes(pickle.dumps(batch))
    names = [c.encode() for c in data.get_info("cifar100").classes]
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": names}))
    ds = data.load_dataset("cifar100", "test", root=tmp_path)
    assert torch.equal(ds.images, torch.from_numpy(x)) and ds.labels.tolist() == [0, 99, 5, 6, 7, 8]
    assert ds.info.num_classes == 100



class _RunsCode:
    """What a crafted pickle can do: unpickling calls `call(*args)` (os.system, builtins.eval, ...)."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("how", ["os.system", "builtins.eval"])
def test_a_crafted_cifar_batch_is_refused_and_runs_nothing(tmp_path, how):
    marker, folder = tmp_path / "ran", tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    payload = (_RunsCode(os.system, f"touch {marker}") if how == "os.system"
               else _RunsCode(eval, f"open({str(marker)!r}, 'w').close()"))
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": payload, b"labels": [0]}, protocol=2))
    name = r"posix\.system" if how == "os.system" else r"__builtin__\.eval"  # protocol 2: python 2 names
    refused = f"test_batch is not a CIFAR batch: .*{name}.*nothing was run"
    with pytest.raises(pickle.UnpicklingError, match=refused):
        data.load_dataset("cifar10", "test", root=tmp_path, cache=False, download=False)
    assert not marker.exists()  # refused before anything was called


def test_the_fake_writers_cifar_batches_still_load(tmp_path):
    from utils.data.fake import write_cifar as write_fake

    for name, n_classes in (("cifar10", 10), ("cifar100", 100)):
        write_fake(name, tmp_path, n_train=2 * n_classes, n_test=n_classes)
        ds = data.load_dataset(name, "test", root=tmp_path, cache=False, download=False)
        assert ds.images.shape == (n_classes, 3, 32, 32)
        assert sorted(ds.labels.tolist()) == list(range(n_classes))
    for protocol in (2, 5):  # python 2's CIFAR files pickle arrays as _reconstruct, protocol 5 as _frombuffer
        x = _rng(2).integers(0, 256, (2, 3072), dtype=np.uint8)
        path = tmp_path / f"batch{protocol}"
        path.write_bytes(pickle.dumps({b"data": x, b"labels": [np.int64(3), 4]}, protocol=protocol))
        images, labels = sources.read_cifar_batch(path, b"labels")
        assert np.array_equal(images.reshape(2, -1), x) and labels.tolist() == [3, 4]

def test_mnist_idx_gz(tmp_path):
    arrays = write_mnist_like(tmp_path / "MNIST" / "raw")
    for split, (x, y) in arrays.items():
        ds = data.load_dataset("mnist", split, root=tmp_path)
        assert ds.images.shape == (len(x), 1, 28, 28)
        assert torch.equal(ds.images[:, 0], torch.from_numpy(x)) and ds.labels.tolist() == y.tolist()


def test_idx_rejects_wrong_magic(tmp_path):
    path = tmp_path / "bad-idx.gz"
    with gzip.open(path, "wb") as f:
        f.write((2052).to_bytes(4, "big") + b"\0" * 12)
    with pytest.raises(ValueError, match="2051 or 2049"):
        sources.read_idx(path)


def test_fashion_mnist_from_root_when_no_debian_files(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    arrays = write_mnist_like(tmp_path / "FashionMNIST" / "raw", seed=3)
    ds = data.load_dataset("fashion-mnist", "test", root=tmp_path)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(arrays["test"][0]))


def test_stl10_column_major_bin(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    x = _rng(2).integers(0, 256, (2, 3, 96, 96), dtype=np.uint8)  # the images as they should come back
    column_major = np.ascontiguousarray(x.transpose(0, 1, 3, 2))
    (folder / "test_X.bin").write_bytes(column_major.tobytes())
    (folder / "test_y.bin").write_bytes(np.array([1, 10], dtype=np.uint8).tobytes())
    ds = data.load_dataset("stl10", "test", root=tmp_path)
    assert torch.equal(ds.images, torch.from_numpy(x)) and ds.labels.tolist() == [0, 9]


def test_svhn_mat(tmp_path):
    import scipy.io

    x = _rng(4).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)  # (N, C, H, W)
    mat = {"X": x.transpose(2, 3, 1, 0), "y": np.array([[10], [1], [9]])}  # X: (H, W, C, N); 10 = digit 0
    scipy.io.savemat(tmp_path / "test_32x32.mat", mat)
    ds = data.load_dataset("svhn", "test", root=tmp_path)
    assert torch.equal(ds.images, torch.from_numpy(x)) and ds.labels.tolist() == [0, 1, 9]


def test_tiny_imagenet_layout(tmp_path):
    folder, rng = tmp_path / "tiny-imagenet-200", _rng(5)
    wnids = ["n02", "n01", "n03"]  # wnids.txt order, not sorted, defines the labels
    folder.mkdir()
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (folder / "words.txt").write_text("n01\tcat, feline\nn02\tdog\nn03\tship, boat\nn04\tunused\n")
    for w in wnids:
        (folder / "train" / w / "images").mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                folder / "train" / w / "images" / f"{w}_{k}.JPEG", format="JPEG")
    (folder / "val" / "images").mkdir(parents=True)
    val_labels = ["n03", "n02", "n03", "n01"]
    for k in range(len(val_labels)):
        Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(  # grayscale JPEGs exist too
            folder / "val" / "images" / f"val_{k}.JPEG", format="JPEG")
    (folder / "val" / "val_annotations.txt").write_text(
        "".join(f"val_{k}.JPEG\t{w}\t0\t0\t63\t63\n" for k, w in enumerate(val_labels)))

    tr = data.load_dataset("tiny-imagenet", "train", root=tmp_path)
    assert tr.images.shape == (6, 3, 64, 64) and tr.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert tr.info.classes == ("dog", "cat", "ship") and tr.info.num_classes == 3
    decoded = np.array(Image.open(folder / "train" / "n01" / "images" / "n01_1.JPEG").convert("RGB"))
    assert torch.equal(tr.images[3], torch.from_numpy(decoded).permute(2, 0, 1))
    va = data.load_dataset("tiny-imagenet", "test", root=tmp_path)  # "test" means the labelled val split
    assert va.split == "val" and va.labels.tolist() == [2, 0, 2, 1] and va.images.shape == (4, 3, 64, 64)
    assert torch.equal(va.images[1, 0], va.images[1, 2])  # grey -> RGB


def test_image_folder_png(tmp_path):
    rng = _rng(6)
    pixels = {}
    for split, n in (("train", 2), ("test", 1)):
        for cls in ("zebra", "apple"):
            (tmp_path / split / cls).mkdir(parents=True)
            for k in range(n):
                x = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(x).save(tmp_path / split / cls / f"{k}.png")
                pixels[(split, cls, k)] = x
    ds = data.load_dataset("image-folder", "train", root=tmp_path)
    assert ds.info.classes == ("apple", "zebra") and ds.labels.tolist() == [0, 0, 1, 1]
    assert torch.equal(ds.images[2], torch.from_numpy(pixels[("train", "zebra", 0)]).permute(2, 0, 1))
    flat = ds.images.double().div(255).transpose(0, 1).reshape(3, -1)
    assert ds.info.mean == pytest.approx(flat.mean(1).tolist())
    assert ds.info.std == pytest.approx(flat.std(1, unbiased=False).tolist())
    assert (ds.info.channels, ds.info.image_size) == (3, 8)
    small = data.load_dataset("image-folder", "test", root=tmp_path, size=4)
    assert small.images.shape == (2, 3, 4, 4) and small.info.image_size == 4


def test_image_folder_gray_is_one_channel(tmp_path):
    x = _rng(7).integers(0, 256, (5, 6), dtype=np.uint8)
    (tmp_path / "train" / "a").mkdir(parents=True)
    Image.fromarray(x).save(tmp_path / "train" / "a" / "0.png")
    with pytest.raises(ValueError, match="not square"):
        data.load_dataset("image-folder", root=tmp_path)
    ds = data.load_dataset("image-folder", root=tmp_path, size=6)
    assert ds.images.shape == (1, 1, 6, 6) and ds.info.channels == 1



def _png_folder(root, split, shape, n=2, seed=0):
    """root/split/{a,b}/k.png, uint8 pixels of `shape` ((H, W) grayscale or (H, W, 3) RGB)."""
    for cls in ("a", "b"):
        (root / split / cls).mkdir(parents=True)
        for k in range(n):
            Image.fromarray(_rng(seed + k).integers(0, 256, shape, dtype=np.uint8)).save(
                root / split / cls / f"{k}.png")


def test_splits_with_other_channels_or_sizes_fail_at_load_naming_both(tmp_path):
    _png_folder(tmp_path, "train", (8, 8))  # grayscale
    _png_folder(tmp_path, "test", (8, 8, 3))  # RGB
    gray, rgb = r"grayscale \(1 channel\)", r"RGB \(3 channels\)"
    for split, other, mine, theirs in (("train", "test", gray, rgb), ("test", "train", rgb, gray)):
        # at load, before any training, whichever split is loaded first
        named = f"{split}/ holds {mine} images but {other}/ holds {theirs} ones; convert one split's images"
        with pytest.raises(ValueError, match=named):
            data.load_dataset("image-folder", split, root=tmp_path, cache=False)
    sized = tmp_path / "sized"
    _png_folder(sized, "train", (8, 8, 3))
    _png_folder(sized, "test", (6, 6, 3))
    with pytest.raises(ValueError, match=r"train/ images are 8x8 but test/ images are 6x6; pass size=N"):
        data.load_dataset("image-folder", "train", root=sized, cache=False)
    assert data.load_dataset("image-folder", "test", root=sized, size=8, cache=False).images.shape == (
        4, 3, 8, 8)

def test_synthetic_deterministic_and_any_shape(tmp_path):
    a = data.load_dataset("synthetic", "train", root=tmp_path, n=200, seed=1)
    b = data.load_dataset("synthetic", "train", root=tmp_path, n=200, seed=1, cache=False)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    test = data.load_dataset("synthetic", "test", root=tmp_path, n=200, seed=1)
    assert not torch.equal(a.images, test.images)
    assert not torch.equal(a.images, data.load_dataset("synthetic", root=tmp_path, n=200, seed=2).images)
    assert a.labels.bincount().tolist() == [20] * 10
    g = data.load_dataset("synthetic", n=300, num_classes=100, channels=1, size=28, cache=False)
    assert g.images.shape == (300, 1, 28, 28) and g.info.num_classes == 100 and g.labels.max() == 99
    assert len(data.load_dataset("synthetic", "test", cache=False)) == 1000
    flat = a.images.double().div(255).transpose(0, 1).reshape(3, -1)
    assert a.info.mean == pytest.approx(flat.mean(1).tolist())


# ---------------------------------------------------------------- cache


def test_cache_is_written_once_and_reused(data_root, monkeypatch):
    calls = []
    reader = registry.DATASETS["synthetic"]
    counted = lambda *a, **k: calls.append(1) or reader(*a, **k)
    monkeypatch.setitem(registry.DATASETS._items, "synthetic", counted)
    first = data.load_dataset("synthetic", n=50, size=8)
    files = sorted((data_root / "cache").glob("synthetic-train-*.pt"))
    assert len(files) == 1 and not list((data_root / "cache").glob("*.tmp*"))
    second = data.load_dataset("synthetic", n=50, size=8)
    assert len(calls) == 1  # the second load read the cache
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert second.info == first.info
    blob = torch.load(files[0], weights_only=True)  # plain tensors and builtins only
    assert torch.equal(blob["images"], first.images)
    data.load_dataset("synthetic", n=50, size=16)  # other kwargs: another file
    data.load_dataset("synthetic", "test", n=50, size=8)
    assert len(list((data_root / "cache").glob("*.pt"))) == 3 and len(calls) == 3
    data.load_dataset("synthetic", n=60, size=8, cache=False)
    assert len(list((data_root / "cache").glob("*.pt"))) == 3



@pytest.mark.parametrize("damage", ["truncated", "wrong shape"])
def test_a_corrupt_cache_is_set_aside_named_and_rebuilt(data_root, damage):
    first = data.load_dataset("synthetic", n=50, size=8)
    (path,) = (data_root / "cache").glob("synthetic-train-*.pt")
    bad = path.read_bytes()[:200] if damage == "truncated" else None
    if bad is None:
        torch.save({"images": torch.zeros(3)}, path)  # a readable file of the wrong shape
        bad = path.read_bytes()
    else:
        path.write_bytes(bad)
    with pytest.warns(UserWarning) as caught:
        again = data.load_dataset("synthetic", n=50, size=8)
    (warning,) = [str(w.message) for w in caught]
    assert f"decode cache {path} is unreadable" in warning and "kept as" in warning
    assert "rebuilding it from the source files" in warning and "\n" not in warning
    assert torch.equal(again.images, first.images) and torch.equal(again.labels, first.labels)
    assert path.with_name(path.name + ".corrupt").read_bytes() == bad  # set aside, never deleted
    assert torch.equal(torch.load(path, weights_only=True)["images"], first.images)  # the cache rebuilt


def test_a_full_data_folder_warns_once_and_works_on_in_memory(data_root, monkeypatch):
    from utils.data import cache

    # every cache write lands on /dev/full: ENOSPC, as on a full disk
    monkeypatch.setattr(cache, "atomic_write", lambda path, write: write(Path("/dev/full")))
    with pytest.warns(UserWarning) as caught:
        a = data.load_dataset("synthetic", n=50, size=8)
        b = data.load_dataset("synthetic", "test", n=40, size=8)
    (warning,) = [str(w.message) for w in caught]  # once per folder, not once per split
    assert f"could not write the decode cache in {data_root / 'cache'}" in warning
    assert "No space left on device" in warning and "in memory" in warning
    assert torch.equal(a.images, data.load_dataset("synthetic", n=50, size=8, cache=False).images)
    assert len(b) == 40 and not list((data_root / "cache").glob("*.pt"))

def test_subset_is_seeded_stratified_and_keeps_the_split_order(data_root):
    full = data.load_dataset("synthetic", n=200, size=8)
    sub = data.load_dataset("synthetic", n=200, size=8, subset=50)
    assert torch.bincount(sub.labels, minlength=10).tolist() == [5] * 10  # every class in proportion
    idx = data.stratified_index(full.labels, 50, seed=0)
    assert torch.equal(sub.images, full.images[idx]) and (idx.diff() > 0).all()  # the split's order
    other = data.load_dataset("synthetic", n=200, size=8, subset=50, subset_seed=1)
    assert not torch.equal(other.images, sub.images)
    with pytest.raises(ValueError, match="without an image"):
        data.load_dataset("synthetic", n=200, size=8, subset=9)  # 10 classes cannot all be in 9 images
    with pytest.raises(ValueError, match=">= 1"):
        data.load_dataset("synthetic", n=200, size=8, subset=0)


def write_folder(root, classes: dict[str, int], size: int = 6, seed: int = 0, gray: bool = False):
    rng = _rng(seed)
    for cls, n in classes.items():
        (root / "train" / cls).mkdir(parents=True, exist_ok=True)
        for k in range(n):
            x = rng.integers(0, 256, (size, size) if gray else (size, size, 3), dtype=np.uint8)
            Image.fromarray(x).save(root / "train" / cls / f"{k}.png")


def test_an_image_folder_subset_keeps_every_class(tmp_path):
    write_folder(tmp_path, {"a": 10, "b": 10, "c": 10})  # files are read class by class
    sub = data.load_dataset("image-folder", root=tmp_path, subset=6)
    assert torch.bincount(sub.labels).tolist() == [2, 2, 2]  # first-n would have been all class "a"


def test_an_empty_class_folder_is_an_error_naming_it(tmp_path):
    write_folder(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(ValueError, match=r"\['empty'\].*hold no"):
        data.load_dataset("image-folder", root=tmp_path)


def test_a_changed_folder_is_decoded_again_and_changes_the_fingerprint(tmp_path):
    root = tmp_path / "folder"
    write_folder(root, {"a": 2, "b": 2})
    first = data.load_dataset("image-folder", root=root)
    again = data.load_dataset("image-folder", root=root)  # from the cache
    assert again.fingerprint() == first.fingerprint() and len(list((root / "cache").glob("*.pt"))) == 1
    write_folder(root, {"c": 2}, seed=1)  # a class added
    added = data.load_dataset("image-folder", root=root)
    assert added.info.classes == ("a", "b", "c") and added.fingerprint() != first.fingerprint()
    png = root / "train" / "a" / "0.png"
    Image.fromarray(_rng(9).integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(png)  # a file rewritten
    os.utime(png, ns=(png.stat().st_atime_ns, png.stat().st_mtime_ns + 10**9))
    rewritten = data.load_dataset("image-folder", root=root)
    assert not torch.equal(rewritten.images[0], added.images[0])
    (root / "train" / "c" / "1.png").unlink()  # a file removed
    assert len(data.load_dataset("image-folder", root=root)) == 5


def test_fingerprint_identifies_the_content():
    a = data.load_dataset("synthetic", n=50, size=8, cache=False)
    b = data.load_dataset("synthetic", n=50, size=8, cache=False)
    assert a.fingerprint() == b.fingerprint() and len(a.fingerprint()) == 16
    b.images[3, 0, 0, 0] ^= 1  # one bit of one pixel
    b.meta.pop("fingerprint")
    assert a.fingerprint() != b.fingerprint()
    assert a.head(10).fingerprint() != a.fingerprint()  # a subset is other data
    assert a.data_key() == {"dataset": "synthetic", "split": "train", "n": 50, "fingerprint": a.fingerprint()}


def test_train_val_split_is_stratified_disjoint_and_seeded():
    ds = data.load_dataset("synthetic", n=300, size=8, cache=False)
    train, val = data.train_val_split(ds, 0.1, seed=0)
    assert (len(train), len(val)) == (270, 30) and val.split == "val"
    assert torch.bincount(val.labels, minlength=10).tolist() == [3] * 10
    together = torch.cat([train.images, val.images]).flatten(1)
    assert len(torch.unique(together, dim=0)) == 300  # disjoint, nothing lost
    again = data.train_val_split(ds, 0.1, seed=0)[1]
    assert torch.equal(again.images, val.images)
    assert not torch.equal(data.train_val_split(ds, 0.1, seed=1)[1].images, val.images)


# ---------------------------------------------------------------- errors say what to do


def test_missing_files_name_folder_files_and_url(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        data.load_dataset("cifar10", root=tmp_path, download=False)
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "data_batch_1" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    with pytest.raises(FileNotFoundError, match="train/<wnid>/images"):
        data.load_dataset("tiny-imagenet", root=tmp_path, download=False)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "train")):
        data.load_dataset("image-folder", root=tmp_path)
    with pytest.raises(ValueError, match="splits train, test"):
        data.load_dataset("cifar10", "validation", root=tmp_path)


def test_offline_download_becomes_instructions(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian")
    with pytest.raises(FileNotFoundError, match="Download failed") as err:
        data.load_dataset("stl10", root=tmp_path)
    assert "stl10_binary.tar.gz" in str(err.value) and str(tmp_path / "stl10_binary") in str(err.value)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
        data.load_dataset("fashion-mnist", root=tmp_path)
    assert str(tmp_path / "FashionMNIST" / "raw") in str(err.value) and "Download failed" in str(err.value)


# ---------------------------------------------------------------- the real Debian Fashion-MNIST files


def test_debian_fashion_mnist(tmp_path):
    assert sources.source_dir("fashion-mnist", tmp_path) == sources.DEBIAN_FASHION_MNIST
    tr = data.load_dataset("fashion-mnist", "train", root=tmp_path)
    te = data.load_dataset("fashion-mnist", "test", root=tmp_path)
    assert tr.images.shape == (60000, 1, 28, 28) and te.images.shape == (10000, 1, 28, 28)
    assert tr.labels.bincount().tolist() == [6000] * 10 and te.labels.bincount().tolist() == [1000] * 10
    assert tr.images.float().mean().item() / 255 == pytest.approx(tr.info.mean[0], abs=1e-4)
    assert tr.images.float().std().item() / 255 == pytest.approx(tr.info.std[0], abs=1e-4)
