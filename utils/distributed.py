"""torchrun + DistributedDataParallel on the existing engine: one process per device, rank 0 writes.

    torchrun --standalone --nproc_per_node=4 -m utils.train --model resnet18_cifar --dataset cifar10 ...
    device = setup("cuda")        # WORLD_SIZE > 1: the process group (nccl on CUDA, else gloo), cuda:<rank>
    on_main(save, folder, state)  # rank 0 runs it; the others wait and get its result, or raise its error

What utils.train, utils.data, utils.metrics and utils.store do under torchrun (one process: nothing changes):
- Data: every rank draws the same (seed, epoch) permutation and augmentation; the global batch B (batch_size,
  eval_batch_size) is cut into world_size contiguous slices of B / world_size and rank r takes slice r, so the
  union of the ranks' batches at step i is the 1-process batch i (resident loader; the torch loader shares
  the order, not the augmentation; ffcv uses its own distributed order). B not divisible: a ValueError.
- Learning rate: the configured lr is for the global batch B. DDP averages the ranks' gradients, so every rank
  applies the same update and a W-process run at global batch B is the 1-process run at batch B (up to float
  summation order). Not reproduced across W: dropout / drop-path masks (one stream per rank), mixup pairs
  (drawn within a rank's slice; lambda is shared), BatchNorm statistics on CPU (below).
- Files: rank 0 alone takes the per-run lock, without waiting (a busy run is RunBusy on every rank: no rank
  waits on a lock while the others wait on it), reads the run folder and writes every file; every decision
  made from files is rank 0's, broadcast (on_main), so all ranks take the same path and the others wait.
  Resume: rank 0's last.pt is broadcast; it holds every rank's RNG states (`rng_ranks`).
- Evaluation: each rank evaluates its slice and the sums are all-reduced: the same metrics on every rank.
- BatchNorm: SyncBatchNorm on CUDA while training (the model's own BatchNorm modules are put back after).
  torch's SyncBatchNorm is GPU-only (gloo cannot), so on CPU each rank normalises by its own slice (warned
  once); DDP broadcasts rank 0's buffers before each forward and fit again after each epoch, so every rank
  evaluates and saves rank 0's running statistics.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

_STATE = {"owned": False, "warned_bn": False}  # whether setup() made the group; the CPU BatchNorm warning


def active() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def setup(device: str | torch.device = "cpu") -> str:
    """Under torchrun (WORLD_SIZE > 1) initialise the process group once: nccl for a CUDA device, else gloo.
    Returns this process's device: `cuda:LOCAL_RANK` for CUDA under torchrun, else `device` as given."""
    device = torch.device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return str(device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        _STATE["owned"] = True
    return str(device)


def shutdown() -> None:
    """Destroy the process group if setup() created it."""
    if _STATE["owned"] and dist.is_initialized():
        dist.destroy_process_group()
        _STATE["owned"] = False


def rank_seed(seed: int) -> int:
    """The global torch RNG seed of this rank (dropout, drop-path): `seed` on rank 0 (as in one process)."""
    from .data.base import epoch_seed

    return seed if rank() == 0 else epoch_seed(seed, f"rank{rank()}")  # type: ignore[arg-type]


def check_sharded(loader) -> None:
    """ValueError (on every rank) when a training loader was not built for this process group (before setup())
    or its ranks would take different numbers of steps (drop_last=False)."""
    have = (getattr(loader, "rank", rank()), getattr(loader, "world_size", world_size()))
    if have != (rank(), world_size()):
        raise ValueError(f"the training loader serves rank {have[0]} of {have[1]}, but this process is rank "
                         f"{rank()} of {world_size()}: build the loaders after utils.distributed.setup()")
    if active():  # DDP syncs every step: a rank with a step more than the others would wait forever
        steps: list = [None] * world_size()
        dist.all_gather_object(steps, len(loader))
        if len(set(steps)) > 1:
            raise ValueError(f"the training loader takes {steps} steps on ranks 0..{world_size() - 1}; every "
                             "rank must take the same steps: use drop_last=True (the default for training)")


# ---------------------------------------------------------------- rank 0 acts, the others follow


def _picklable(obj) -> bool:
    try:
        pickle.dumps(obj)
        return True
    except Exception:
        return False


def on_main(fn: Callable, *args, **kwargs):
    """fn(*args, **kwargs) on rank 0; every rank returns its result, or raises its exception (so no rank waits
    for a rank that failed). One process: just the call. The result must pickle (it is broadcast)."""
    if not active():
        return fn(*args, **kwargs)
    box: list = [None]
    failed: BaseException | None = None
    if rank() == 0:
        try:
            box = [(True, fn(*args, **kwargs))]
        except Exception as err:
            failed = err
            box = [(False, err if _picklable(err) else RuntimeError(f"{type(err).__name__}: {err}"))]
    dist.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if ok:
        return value
    raise failed if failed is not None else value


@contextmanager
def main_lock(folder: str | Path) -> Iterator[None]:
    """The run's lock (utils.checkpoints.run_lock). Under torchrun only rank 0 takes it, without waiting: a
    run another job holds is RunBusy on every rank."""
    from . import checkpoints  # here: utils.data imports this module and stays light

    if not active():
        with checkpoints.run_lock(folder):
            yield
        return
    with ExitStack() as stack:
        on_main(stack.enter_context, checkpoints.run_lock(folder, wait=False))
        yield


# ---------------------------------------------------------------- collectives


def _device() -> torch.device:
    """Where collectives' tensors live: this rank's GPU for nccl, else the CPU."""
    nccl = active() and dist.get_backend() == "nccl"
    return torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")


def summed(*values) -> list[float]:
    """Every value (tensor or number) summed over the ranks, as floats (float64: exact for counts < 2^53)."""
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64).to(_device()) for v in values])
    if active():
        dist.all_reduce(t)
    return t.tolist()


def sync_buffers(model: nn.Module) -> None:
    """Every rank takes rank 0's buffers (BatchNorm running statistics)."""
    if active():
        for b in model.buffers():
            dist.broadcast(b, src=0)


def rng_states() -> list[dict] | None:
    """Every rank's CPU (and CUDA device) RNG state, gathered on every rank; None in one process."""
    if not active():
        return None
    cuda = torch.cuda.get_rng_state() if _device().type == "cuda" else None
    states: list = [None] * world_size()
    dist.all_gather_object(states, {"rng": torch.get_rng_state(), "cuda_rng": cuda})
    return states


def restore_rng(state: dict, seed: int) -> None:
    """This rank's RNG states from a checkpoint of a torchrun run; a run saved with fewer ranks (or by one
    process) gives the new ranks a fresh stream (not bit-identical to the uninterrupted run, and said so)."""
    saved = state.get("rng_ranks") or [{"rng": state["rng"], "cuda_rng": None}]
    if len(saved) != world_size():
        warnings.warn(f"resuming a run of {len(saved)} process(es) on {world_size()}: same data order and "
                      "updates, but not bit-identical to the uninterrupted run", stacklevel=2)
    if rank() >= len(saved):
        torch.manual_seed(rank_seed(seed) + state["epoch"])
        return
    torch.set_rng_state(saved[rank()]["rng"])
    if saved[rank()]["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(saved[rank()]["cuda_rng"])


# ---------------------------------------------------------------- the model


def wrap(model: nn.Module) -> nn.Module:
    """The DDP wrapper for the training forward (the model itself stays the one evaluated and saved)."""
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _batchnorms(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and name}


@contextmanager
def batchnorm_synced(model: nn.Module) -> Iterator[None]:
    """Under torchrun on CUDA: the model's BatchNorm layers become SyncBatchNorm (statistics over the global
    batch) inside the block and are put back, trained, after. On CPU: per-rank BatchNorm, warned once."""
    originals = _batchnorms(model) if active() else {}
    if not originals:
        yield
        return
    if next(model.parameters()).device.type != "cuda":
        if not _STATE["warned_bn"]:
            _STATE["warned_bn"] = True
            warnings.warn("BatchNorm under torchrun on CPU: SyncBatchNorm is GPU-only, so each rank "
                          "normalises by its own slice of the batch (rank 0's running statistics are kept)",
                          stacklevel=3)
        yield
        return
    nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place below the root; shares parameters and buffers
    try:
        yield
    finally:
        for name, bn in originals.items():
            synced = model.get_submodule(name)
            bn.load_state_dict(synced.state_dict())
            bn.train(synced.training)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, bn)
