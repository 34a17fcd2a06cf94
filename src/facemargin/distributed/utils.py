"""Process-group helpers: start from ``torchrun``'s environment, fail fast, know who is rank 0.

Failure model (why the short timeout matters): a collective only completes when every rank of
the group joins it. When a rank *dies*, gloo notices the closed TCP connection and the other
ranks' pending collective raises at once; when a rank *hangs* (dead-locked loader, stuck I/O),
nothing is closed and the others wait until the process group's ``timeout`` expires, then raise.
With NCCL the same timeout is enforced by the watchdog (``TORCH_NCCL_ASYNC_ERROR_HANDLING``,
on by default in current PyTorch), which aborts the communicator and tears the process down.
The default timeout of PyTorch is 30 minutes for gloo (10 for NCCL); :func:`init_process_group_from_env`
takes ``timeout_s`` (default 600 s, or ``FACEMARGIN_DIST_TIMEOUT`` from the environment) so that a
lost rank turns into an error in bounded time. Every collective issued by
:mod:`facemargin.distributed` goes through :func:`collective`, which re-raises the backend's
error as a :class:`DistributedError` naming the operation, the rank and the world size.
"""
from __future__ import annotations

import datetime
import gc
import inspect
import os
from typing import Callable, Optional, Sequence, Tuple, TypeVar

import torch
import torch.distributed as dist

from .shards import shard_range

T = TypeVar("T")

_ENV_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """A collective failed: another rank died, hung past the timeout, or disagreed on shapes."""


def is_initialized() -> bool:
    """Whether a default process group exists (False when torch.distributed is unavailable)."""
    return dist.is_available() and dist.is_initialized()


def get_rank(group=None) -> int:
    """This process's rank in ``group`` (0 without a process group)."""
    return dist.get_rank(group) if is_initialized() else 0


def get_world_size(group=None) -> int:
    """The number of ranks in ``group`` (1 without a process group)."""
    return dist.get_world_size(group) if is_initialized() else 1


def is_main_process(group=None) -> bool:
    """True on rank 0 (and in a plain single process): where metrics and checkpoints are written."""
    return get_rank(group) == 0


def env_world() -> Tuple[int, int, int]:
    """``(rank, local_rank, world_size)`` from torchrun's variables; ``(0, 0, 1)`` when absent."""
    def _int(name, default):
        value = os.environ.get(name, "")
        if value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None

    return _int("RANK", 0), _int("LOCAL_RANK", 0), _int("WORLD_SIZE", 1)


def launched_distributed() -> bool:
    """Whether the process was started by ``torchrun`` (or an equivalent) with ``WORLD_SIZE`` > 1."""
    return env_world()[2] > 1


def init_process_group_from_env(backend: Optional[str] = None, timeout_s: Optional[float] = None,
                                device: Optional[str] = None) -> bool:
    """Create the default process group from ``torchrun``'s environment variables.

    Reads ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``. With
    ``WORLD_SIZE`` absent or 1 nothing is created and ``False`` is returned, so the same script runs
    as a plain single process. ``backend`` defaults to ``"nccl"`` when CUDA is available (and then
    ``torch.cuda.set_device(LOCAL_RANK)`` is called) else ``"gloo"``. ``timeout_s`` bounds every
    collective (see the module docstring); default 600 s or ``FACEMARGIN_DIST_TIMEOUT``.
    Returns True when a process group is (now) initialised.
    """
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build")
    if is_initialized():
        return True
    rank, local_rank, world = env_world()
    if world <= 1:
        return False
    missing = [v for v in _ENV_VARS if not os.environ.get(v)]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world} but {', '.join(missing)} not set; launch with "
            f"`torchrun --nproc_per_node N ...` or set the variables yourself")
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} must lie in [0, WORLD_SIZE={world})")
    if timeout_s is None:
        timeout_s = float(os.environ.get("FACEMARGIN_DIST_TIMEOUT", 600))
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    use_cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if backend is None:
        backend = "nccl" if use_cuda else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    common = dict(backend=backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=float(timeout_s)))
    if backend == "nccl" and "device_id" in inspect.signature(dist.init_process_group).parameters:
        common["device_id"] = torch.device("cuda", local_rank)  # binds the communicator (PyTorch >= 2.3)
    dist.init_process_group(**common)
    return True


def destroy_process_group() -> None:
    """Tear the default process group down if one exists (safe to call twice).

    Release every DDP module first (``del ddp_model`` or drop the object holding it): DDP's
    C++ reducer keeps its own strong reference to the process group (and to the work objects of
    its last gradient all-reduce, which hold tensors). ``dist.destroy_process_group`` only shuts
    the group down and forgets it in Python; a reducer still alive then owns the last reference,
    and the group's native object, with its gloo/NCCL worker threads, is destroyed whenever the
    DDP module happens to be freed: at interpreter exit that destructor runs while Python is
    being torn down, and now and then the process aborts (``terminate called without an active
    exception``, SIGABRT) after its work is done. Garbage is collected here first so that modules
    already released, but kept by a reference cycle, go before the group.
    """
    if is_initialized():
        gc.collect()
        dist.destroy_process_group()


def collective(op: str, fn: Callable[[], T], group=None) -> T:
    """Run one collective, turning the backend's failure into a clear :class:`DistributedError`."""
    try:
        return fn()
    except DistributedError:
        raise
    except Exception as e:  # gloo raises RuntimeError / DistBackendError, NCCL its own
        rank, world = get_rank(group), get_world_size(group)
        raise DistributedError(
            f"facemargin.distributed: {op} failed on rank {rank} of {world}: another rank died, "
            f"hung past the process-group timeout, or called a different collective "
            f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else e!r})"
        ) from e


def all_reduce(t: torch.Tensor, op=None, group=None, what: str = "all_reduce") -> torch.Tensor:
    """In-place all-reduce (SUM by default) of ``t``; a no-op without a process group."""
    if get_world_size(group) == 1:
        return t
    op = dist.ReduceOp.SUM if op is None else op
    collective(what, lambda: dist.all_reduce(t, op=op, group=group), group)
    return t


def all_gather_sizes(n: int, device, group=None) -> Sequence[int]:
    """Every rank's ``n`` (e.g. its batch size), in rank order."""
    world = get_world_size(group)
    if world == 1:
        return [int(n)]
    mine = torch.tensor([int(n)], dtype=torch.long, device=device)
    out = [torch.empty_like(mine) for _ in range(world)]
    collective("all_gather(batch sizes)", lambda: dist.all_gather(out, mine, group=group), group)
    return [int(o) for o in out]


def all_gather_rows(t: torch.Tensor, sizes: Sequence[int], group=None, what="all_gather") -> torch.Tensor:
    """Concatenate every rank's ``t`` (rows may differ per rank: ``sizes``) in rank order."""
    world = get_world_size(group)
    if world == 1:
        return t
    t = t.contiguous()
    top = max(sizes)
    if t.shape[0] < top:
        pad = t.new_zeros((top - t.shape[0],) + tuple(t.shape[1:]))
        t = torch.cat([t, pad])
    out = [torch.empty_like(t) for _ in range(world)]
    collective(what, lambda: dist.all_gather(out, t, group=group), group)
    return torch.cat([o[:s] for o, s in zip(out, sizes)])


class DistributedEvalSampler(torch.utils.data.Sampler):
    """Split ``range(len(dataset))`` into contiguous, non-overlapping, non-padded per-rank parts.

    Unlike :class:`torch.utils.data.DistributedSampler` (which pads so that every rank gets the same
    count, duplicating samples) every index is visited exactly once over all ranks, so evaluation
    metrics computed from the gathered outputs are exact. Rank ``r`` gets indices
    ``[start, start + n)`` of :func:`facemargin.distributed.shard_range`.
    """

    def __init__(self, dataset, rank: Optional[int] = None, world_size: Optional[int] = None):
        self.rank = get_rank() if rank is None else int(rank)
        self.world_size = get_world_size() if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} must lie in [0, world_size={self.world_size})")
        self.start, self.n = shard_range(len(dataset), self.rank, self.world_size, allow_empty=True)

    def __iter__(self):
        return iter(range(self.start, self.start + self.n))

    def __len__(self):
        return self.n
