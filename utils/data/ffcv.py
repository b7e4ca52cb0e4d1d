"""FFCV backend: `.beton` files (the format the original study shipped) and a loader that reads them.

Pixels are stored exactly: 3-channel sets as RGBImageField(write_mode="raw") (HWC uint8, what the study's
files hold); any other channel count (Fashion-MNIST, MNIST) as NDArrayField(uint8, (H, W, C)), because
ffcv's image fields are RGB-only and JPEG would change pixels. Only this module imports ffcv.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .. import distributed
from ..files import atomic_write, data_root
from .base import NO_AUGMENT, Batch, EpochLoader, to_float
from .registry import ImageSet

_THREADS = torch.get_num_threads()  # ffcv sets torch's thread count (to 1 on import, to num_workers per
# loader and epoch); this module puts the caller's back each time, so the rest of the process keeps its cores
try:
    import numba
    from ffcv.fields import IntField, NDArrayField, RGBImageField
    from ffcv.fields.decoders import IntDecoder, NDArrayDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.pipeline.allocation_query import AllocationQuery
    from ffcv.pipeline.operation import Operation
    from ffcv.reader import Reader
    from ffcv.transforms import ToDevice, ToTensor, ToTorchImage
    from ffcv.writer import DatasetWriter
except ImportError as err:  # the other backends work without it
    raise ImportError(
        "backend='ffcv' needs FFCV, which builds against system libraries: "
        "`sudo apt-get install libopencv-dev libturbojpeg0-dev pkg-config`, then `pip install ffcv==1.0.2` "
        f"(see data/README.md). Import failed with: {err}"
    ) from err
finally:
    torch.set_num_threads(_THREADS)


class _HWCItems:
    """What DatasetWriter reads: item i -> (image (H, W, C) uint8 array, label int)."""

    def __init__(self, ds: ImageSet):
        self.images, self.labels = ds.images, ds.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.images[i].permute(1, 2, 0).contiguous().numpy(), int(self.labels[i])


def write_beton(ds: ImageSet, path: str | Path, num_workers: int = 2) -> Path:
    """Write ds to a `.beton` with fields image (exact pixels) and label (int); atomic (tmp, then rename)."""
    path = Path(path)
    c, h, w = ds.images.shape[1:]
    image = RGBImageField(write_mode="raw") if c == 3 else NDArrayField(np.dtype("uint8"), (h, w, c))
    fields = {"image": image, "label": IntField()}
    items = _HWCItems(ds)
    write = lambda tmp: DatasetWriter(str(tmp), fields, num_workers=num_workers).from_indexed_dataset(items)
    return atomic_write(path, write)


def _write_if_missing(ds: ImageSet, path: Path) -> None:
    # One writer: ffcv writes pages in parallel, so two writes of one set differ in layout, and a reader that
    # opened the file before another rank's rename and again after would mix the two.
    if not path.exists():
        write_beton(ds, path)


def default_beton_path(ds: ImageSet) -> Path:
    """`<cache dir>/<name>-<split>-<content hash>.beton`: a changed or subset set gets its own file."""
    digest = hashlib.blake2b(digest_size=6)
    for t in (ds.images, ds.labels):
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.contiguous().numpy().tobytes())
    folder = Path(ds.meta.get("cache_dir") or data_root() / "cache")
    return folder / f"{ds.info.name}-{ds.split}-{digest.hexdigest()}.beton"


@numba.njit(cache=True, nogil=True)  # compiled once, cached on disk; ffcv's per-loader wrapper just calls it
def crop_flip_kernel(images, dst, indices, pad, flip, seed):
    """uint8 (B, H, W, C): dst[i, y, x] = images[i, y + dy, x + dx] (zero outside), mirrored with p = 0.5."""
    s = seed
    for i in range(indices.shape[0]):
        s = (s * 1000003 + indices[i] + 1) % 2147483647
    np.random.seed(s)  # numba's per-thread generator, seeded by (seed, this batch's sample indices)
    n, h, w = images.shape[0], images.shape[1], images.shape[2]
    dys = np.random.randint(-pad, pad + 1, n)
    dxs = np.random.randint(-pad, pad + 1, n)
    flips = np.random.random(n) < 0.5
    for i in range(n):
        dy, dx = dys[i], dxs[i]
        y0, y1, x0, x1 = max(0, -dy), min(h, h - dy), max(0, -dx), min(w, w - dx)
        dst[i] = 0
        window = images[i, y0 + dy : y1 + dy, x0 + dx : x1 + dx]
        if flip and flips[i]:
            dst[i, y0:y1, w - x1 : w - x0] = window[:, ::-1]
        else:
            dst[i, y0:y1, x0:x1] = window
    return dst


class CropFlip(Operation):
    """Random crop after zero padding `pad` and horizontal flip (p = 0.5), as the resident loader does.

    ffcv's RandomTranslate/RandomHorizontalFlip draw from unseeded per-thread generators; here the draws
    are seeded from (seed, the batch's sample indices), and ffcv's order is a function of (seed, epoch),
    so the augmentation of an epoch is reproducible too. (In SEQUENTIAL order, i.e. an augmented eval
    loader, every epoch therefore draws the same augmentation.)
    """

    def __init__(self, pad: int, flip: bool, seed: int):
        super().__init__()
        self.pad, self.flip, self.seed = pad, flip, seed % 2147483647

    def generate_code(self):
        pad, flip, seed = self.pad, self.flip, self.seed

        def crop_flip(images, dst, indices):
            return crop_flip_kernel(images, dst, indices, pad, flip, seed)

        crop_flip.with_indices = True  # batches run in parallel threads (nogil); no prange inside
        return crop_flip

    def declare_state_and_memory(self, previous_state):
        alloc = AllocationQuery(previous_state.shape, previous_state.dtype)  # dst: same shape as the input
        return replace(previous_state, jit_mode=True), alloc


# ffcv Loaders kept for reuse, by everything their pipeline and order depend on (file and its mtime, batch,
# workers, device, train, drop_last, augmentation, the seed where it is used, rank): ffcv compiles each new
# Loader's pipeline with numba on its first epoch (about 2 s on a CPU), and a notebook trains many runs on
# one file and evaluates each on the same validation and test files.
_LOADERS: dict[tuple, Loader] = {}
_KEEP = 8


class FFCVLoader(EpochLoader):
    """ffcv Loader over a .beton: RANDOM order (seeded) for training, SEQUENTIAL for evaluation.

    Under torchrun a training loader uses ffcv's own distributed order (DistributedSampler's: a rank's images
    are a function of (seed, epoch, rank, world size), B / world size per rank, but not slices of the
    one-process batches); an evaluation loader is not sharded (every rank reads every image: ffcv pads its
    distributed order with repeats, which would count some images twice). Loaders of the same file and
    settings share one compiled ffcv Loader (_LOADERS)."""

    def __init__(self, ds: ImageSet, batch_size: int, *, num_workers: int = 2, path: str | Path | None = None,
                 shard: tuple[int, int] | None = None, **kw):
        group = (distributed.rank(), distributed.world_size())
        shard = (0, 1) if not kw["train"] else shard or group
        if shard[1] > 1 and shard != group:
            raise ValueError(f"backend='ffcv' shards by the process group (rank {group[0]} of {group[1]}), "
                             f"not by shard={shard}: run under torchrun after utils.distributed.setup()")
        super().__init__(ds, batch_size, shard=shard, **kw)
        self.path = Path(path) if path is not None else default_beton_path(ds)
        distributed.on_main(_write_if_missing, ds, self.path)  # torchrun: rank 0 writes, the others wait
        # ffcv's order is a function of (seed, epoch), set per pass: a Loader holds no state of one run. The
        # seed is in the key only where it is used (random order, augmentation): evaluation loaders share one
        seeded = self.train or self.augment != NO_AUGMENT
        key = (str(self.path), self.path.stat().st_mtime_ns, self.local_batch, num_workers, str(self.device),
               self.train, self.drop_last, self.augment, self.seed if seeded else None, self.rank,
               self.world_size)
        self.loader = _LOADERS.pop(key, None) or self._loader(num_workers)
        _LOADERS[key] = self.loader  # most recently used last
        while len(_LOADERS) > _KEEP:
            _LOADERS.pop(next(iter(_LOADERS)))

    def _loader(self, num_workers: int) -> Loader:
        threads = torch.get_num_threads()
        try:
            return Loader(
                str(self.path), batch_size=self.local_batch, num_workers=num_workers, seed=self.seed,
                order=OrderOption.RANDOM if self.train else OrderOption.SEQUENTIAL, drop_last=self.drop_last,
                distributed=self.world_size > 1,
                # labels (B, 1) reach the device as the images do, from ffcv's pinned buffers without a
                # host sync per step (issue 26)
                pipelines={"image": self._image_pipeline(),
                           "label": [IntDecoder(), ToTensor(), ToDevice(self.device)]},
            )
        finally:
            torch.set_num_threads(threads)

    def _image_pipeline(self) -> list:
        stored = Reader(str(self.path)).handlers["image"]
        decoder = SimpleRGBImageDecoder() if isinstance(stored, RGBImageField) else NDArrayDecoder()
        aug = [CropFlip(self.augment.pad, self.augment.flip, self.seed)] if self.augment != NO_AUGMENT else []
        return [decoder, *aug, ToTensor(), ToTorchImage(channels_last=False), ToDevice(self.device)]

    def __len__(self) -> int:
        return len(self.loader)

    def batches(self, epoch: int) -> Iterator[Batch]:
        self.loader.next_epoch = epoch  # ffcv's RANDOM order is a function of (seed, epoch)
        threads = torch.get_num_threads()
        try:
            for x, y in self.loader:  # ffcv reuses its buffers: convert/copy before the next batch
                torch.set_num_threads(threads)  # its epoch thread set it to num_workers
                yield to_float(x), y.reshape(-1).to(torch.int64, copy=True)
        finally:
            torch.set_num_threads(threads)
