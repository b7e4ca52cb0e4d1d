"""utils.data loaders: the same invariants for every backend (resident, torch, ffcv), plus backend details."""

import importlib
import sys

import pytest
import torch
import torch.nn.functional as F

from utils import data
from utils.data import Augment
from utils.data.base import NO_AUGMENT
from utils.data.loaders import crop_rows, row_buffer

BACKENDS = ["resident", "torch", "ffcv"]


def make(ds, backend, tmp_path, **kw):
    """A loader; ffcv reads a .beton in tmp_path, torch runs 2 worker processes unless told otherwise."""
    kw.setdefault("num_workers", 2)
    return data.make_loader(ds, kw.pop("batch_size", 16), backend=backend,
                            path=str(tmp_path / f"{ds.info.name}.beton"), **kw)


def run_epoch(loader):
    """One pass as uint8 pixels (x * 255 rounded) and labels, checking dtype, shape, range and device."""
    xs, ys = [], []
    for x, y in loader:
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.device == y.device == loader.device
        size = loader.info.image_size
        assert x.ndim == 4 and x.shape[1:] == (loader.info.channels, size, size)
        assert len(x) == len(y) <= loader.batch_size and 0 <= x.min() and x.max() <= 1
        u = (x * 255).round()
        assert (x * 255 - u).abs().max() < 1e-4  # on the k / 255 grid: no interpolation or normalisation
        xs.append(u.to(torch.uint8))
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def crop_of(out, src, pad):
    """(dy, dx, flipped) with out == mirror?(zero-padded src shifted by (dy, dx)); None if there is none."""
    h, w = src.shape[-2:]
    padded = F.pad(src, (pad, pad, pad, pad))
    for dy in range(-pad, pad + 1):
        for dx in range(-pad, pad + 1):
            window = padded[:, pad + dy : pad + dy + h, pad + dx : pad + dx + w]
            for flipped in (False, True):
                if torch.equal(out, window.flip(-1) if flipped else window):
                    return dy, dx, flipped
    return None


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_epochs(backend, tmp_path, make_id_set):
    ds = make_id_set(60)  # labels are sample ids; pixels 1..255, so zero padding is visible
    kw = dict(train=True, augment=Augment(pad=2, flip=True), seed=3, drop_last=False)
    loader = make(ds, backend, tmp_path, **kw)
    assert len(loader) == 4 and loader.batch_size == 16 and loader.info is ds.info
    x0, y0 = run_epoch(loader)
    assert sorted(y0.tolist()) == list(range(60))  # every sample exactly once
    assert y0.tolist() != list(range(60))  # shuffled
    crops = [crop_of(x0[i], ds.images[y0[i]], 2) for i in range(60)]
    assert None not in crops  # each output is a shifted window of the padded image, mirrored or not
    assert {c[2] for c in crops} == {False, True} and len({c[:2] for c in crops}) > 5
    x1, y1 = run_epoch(loader)  # the counter advanced: another order and augmentation
    assert sorted(y1.tolist()) == list(range(60)) and not torch.equal(y0, y1)
    loader.set_epoch(0)
    again = run_epoch(loader)
    assert torch.equal(again[1], y0) and torch.equal(again[0], x0)  # set_epoch reproduces batches exactly
    fresh = make(ds, backend, tmp_path, **kw)  # same seed, same batches
    fresh.set_epoch(1)
    assert all(torch.equal(a, b) for a, b in zip(run_epoch(fresh), (x1, y1), strict=True))


@pytest.mark.parametrize("backend", BACKENDS)
def test_flip_only_is_identity_or_mirror(backend, tmp_path, make_id_set):
    ds = make_id_set(40, name="flips")
    loader = make(ds, backend, tmp_path, batch_size=20, train=True, augment=Augment(pad=0, flip=True))
    x, y = run_epoch(loader)
    src = ds.images[y]
    same = (x == src).flatten(1).all(1)
    mirrored = (x == src.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_eval_is_in_order_and_exact(backend, tmp_path, make_id_set):
    ds = make_id_set(60, name="eval")
    loader = make(ds, backend, tmp_path, train=False)
    assert len(loader) == 4  # drop_last defaults to train: the last batch has 12
    x, y = run_epoch(loader)
    assert y.tolist() == list(range(60)) and torch.equal(x, ds.images)


@pytest.mark.parametrize("channels", [1, 3])
def test_beton_round_trip_exact(channels, data_root, make_id_set):
    from ffcv.fields import NDArrayField, RGBImageField
    from ffcv.reader import Reader

    from utils.data.ffcv import default_beton_path

    ds = make_id_set(30, channels=channels, size=6, name=f"beton{channels}")
    loader = data.make_loader(ds, 8, train=False, backend="ffcv")  # path=None: written next to the cache
    path = default_beton_path(ds)
    assert path.parent == data_root / "cache" and path.exists()
    field = Reader(str(path)).handlers["image"]
    assert isinstance(field, RGBImageField if channels == 3 else NDArrayField)
    x, y = run_epoch(loader)
    assert torch.equal(x, ds.images) and torch.equal(y, ds.labels)  # CHW, pixel for pixel


def test_missing_ffcv_says_how_to_install(monkeypatch, make_id_set):
    monkeypatch.setitem(sys.modules, "ffcv.fields", None)  # what a failed import looks like
    monkeypatch.delitem(sys.modules, "utils.data.ffcv", raising=False)
    with pytest.raises(ImportError, match=r"pip install ffcv.*|libturbojpeg0-dev") as err:
        importlib.import_module("utils.data.ffcv")
    assert "pip install ffcv" in str(err.value) and "libopencv-dev" in str(err.value)
    ds = make_id_set(4)
    assert len(list(data.make_loader(ds, 2, train=True))) == 2  # the other backends do not need it


def test_crop_rows_matches_reference():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8, generator=gen)
    idx = torch.randperm(20, generator=gen)[:12]
    dy, dx = torch.randint(-4, 5, (2, 12), generator=gen)
    flip = torch.rand(12, generator=gen) < 0.5
    out = crop_rows(row_buffer(images, 4, True), images.shape, idx, dy, dx, flip, 4)
    padded = F.pad(images, (4, 4, 4, 4))
    for b in range(12):
        want = padded[idx[b], :, 4 + dy[b] : 36 + dy[b], 4 + dx[b] : 36 + dx[b]]
        assert torch.equal(out[b], want.flip(-1) if flip[b] else want)
    no_flip = crop_rows(row_buffer(images, 4, False), images.shape, idx, dy, dx, None, 4)
    assert torch.equal(no_flip[0], padded[idx[0], :, 4 + dy[0] : 36 + dy[0], 4 + dx[0] : 36 + dx[0]])


def test_defaults(make_id_set):
    digits, cifar = data.get_info("mnist"), data.get_info("cifar10")
    assert data.default_augment(cifar, True) == Augment(pad=4, flip=True)
    assert data.default_augment(digits, True) == Augment(pad=4, flip=False)
    assert data.default_augment(cifar, False) == NO_AUGMENT
    ds = make_id_set(50)
    assert len(data.make_loader(ds, 16, train=True)) == 3 and len(data.make_loader(ds, 16, train=False)) == 4
    assert len(data.make_loader(ds, 16, train=True, drop_last=False)) == 4
    with pytest.raises(KeyError, match="'dali'; registered loader backends: ffcv, resident, torch"):
        data.make_loader(ds, 16, train=True, backend="dali")
    with pytest.raises(ValueError, match="batch_size"):
        data.make_loader(ds, 0, train=True)


def test_resident_seed_and_epoch(make_id_set):
    ds = make_id_set(64)
    a, b = data.make_loader(ds, 16, train=True, seed=1), data.make_loader(ds, 16, train=True, seed=2)
    ya, yb = run_epoch(a)[1], run_epoch(b)[1]
    assert not torch.equal(ya, yb)
    a.set_epoch(7)
    c = data.make_loader(ds, 16, train=True, seed=1)
    c.set_epoch(7)
    assert torch.equal(run_epoch(a)[0], run_epoch(c)[0])


def test_torch_in_process_rng_is_private(make_id_set):
    ds = make_id_set(32)
    loader = data.make_loader(ds, 8, train=True, backend="torch", num_workers=0, seed=5)
    state = torch.get_rng_state()
    first = run_epoch(loader)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's global RNG is untouched
    loader.set_epoch(0)
    torch.manual_seed(123)  # and does not matter
    second = run_epoch(loader)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_synthetic_through_resident_loader(data_root):
    ds = data.load_dataset("synthetic", n=100, size=16, channels=1)
    x, y = next(iter(data.make_loader(ds, 32, train=True)))
    assert x.shape == (32, 1, 16, 16) and y.max() < 10


def test_the_ffcv_backend_leaves_torchs_thread_count_alone(data_root, make_id_set):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        loader = data.make_loader(make_id_set(32), 8, train=True, backend="ffcv", num_workers=1)
        assert torch.get_num_threads() == 2
        assert sum(len(y) for _, y in loader) == 32 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_ffcv_loaders_of_one_file_and_settings_share_a_compiled_loader(tmp_path, make_id_set):
    """ffcv compiles each Loader's pipeline on its first epoch; loaders of the same file and settings reuse
    one (a notebook trains many runs on one file and evaluates each on the same files) and serve what a
    fresh one would."""
    ds = make_id_set(40, name="shared")
    first, second = (make(ds, "ffcv", tmp_path, train=False) for _ in range(2))
    assert first.loader is second.loader
    x1, y1 = run_epoch(first)
    x2, y2 = run_epoch(second)
    assert torch.equal(x1, ds.images) and torch.equal(x2, ds.images) and torch.equal(y1, y2)
    assert make(ds, "ffcv", tmp_path, train=False, batch_size=8).loader is not first.loader
    assert make(ds, "ffcv", tmp_path, train=False, seed=7).loader is first.loader  # in order: no seed used
    train = [make(ds, "ffcv", tmp_path, train=True, seed=s) for s in (3, 3, 4)]
    assert train[0].loader is train[1].loader is not train[2].loader
    train[0].set_epoch(1)
    reused = run_epoch(train[0])
    utils_ffcv = sys.modules["utils.data.ffcv"]
    utils_ffcv._LOADERS.clear()
    fresh = make(ds, "ffcv", tmp_path, train=True, seed=3)
    fresh.set_epoch(1)
    assert fresh.loader is not train[0].loader
    assert all(torch.equal(a, b) for a, b in zip(run_epoch(fresh), reused, strict=True))  # order and crops
    other = make_id_set(40, name="shared")
    other.images[:] = 255 - other.images  # another set written to the same path: a new file, a new Loader
    (tmp_path / "shared.beton").unlink()
    changed = make(other, "ffcv", tmp_path, train=False)
    assert changed.loader is not first.loader and torch.equal(run_epoch(changed)[0], other.images)


def test_loader_workers_are_sized_to_the_host(monkeypatch):
    """A 16-core GPU box decodes on 16 threads, not 2 (issue 26); torchrun's processes share the cores."""
    from utils.data import loaders

    monkeypatch.setattr(loaders.os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert loaders.host_workers() == loaders.MAX_LOADER_WORKERS == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert loaders.host_workers() == 8
    monkeypatch.setattr(loaders.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert loaders.host_workers() == 1
