"""World-size-independent checkpoints of a head on a sharded store (:func:`~facemargin.distributed.sharded_head`).

:func:`full_state_dict` gathers the class rows of every rank into the full ``(C, D)`` weight (and
``(C,)`` bias); the replicated entries (λ schedule, learnable scale, Partial-FC seed and step) are
taken as they are. The keys are those of the single-process preset's ``state_dict`` (plus
``pfc_seed``/``pfc_step`` with Partial FC), so the same file also loads into
``facemargin.losses.build(name, ...)``. :func:`load_full_state_dict` slices this rank's rows back
out, whatever the world size was when the state was written. The optimizer's row-indexed state
(SGD momentum of the class rows) is handled the same way by :func:`full_optimizer_state_dict` and
:func:`load_full_optimizer_state_dict`.

All gathering functions are collectives: call them on every rank. With ``rank0_only=True`` only
rank 0 receives the full tensors (the others get ``None``), which saves memory on the other ranks.
"""
from __future__ import annotations

import copy
from typing import Dict, Optional

import torch
import torch.distributed as dist

from .sharded import is_sharded
from .shards import all_shard_ranges
from .utils import all_gather_rows, collective

Tensor = torch.Tensor

_ROW_KEYS = ("weight", "bias")


def _comm_device(store, t: Tensor) -> torch.device:
    if store.world_size > 1 and dist.get_backend(store.group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return t.device if t.device.type != "meta" else torch.device("cpu")


def _rows_per_class(head, t: Tensor) -> int:
    """``K`` for a sub-center head's weight-shaped tensors (``num_local·K`` rows), else 1."""
    K = int(getattr(head, "rows_per_class", 1))
    return K if (K > 1 and t.dim() >= 1 and t.shape[0] == head.num_local * K) else 1


def gather_rows(head, t: Tensor, rank0_only: bool = False) -> Optional[Tensor]:
    """Concatenate every rank's ``(n_r, ...)`` shard of a row-indexed tensor into ``(C, ...)`` (on CPU);
    weight-shaped tensors of sub-center heads (``n_r·K`` rows) give ``(C·K, ...)``."""
    K = _rows_per_class(head, t)
    store = head.store
    if t.shape[0] != head.num_local * K:
        raise ValueError(f"gather_rows: expected {head.num_local} local rows, got shape {tuple(t.shape)}")
    t = t.detach()
    if store.world_size == 1:
        return t.cpu().clone()
    sizes = [n * K for _, n in all_shard_ranges(head.num_classes, store.world_size)]
    dev = _comm_device(store, t)
    src = t.to(dev)
    if not rank0_only:
        return all_gather_rows(src, sizes, store.group, "all_gather(class rows)").cpu()
    top = max(sizes)
    if src.shape[0] < top:
        src = torch.cat([src, src.new_zeros((top - src.shape[0],) + tuple(src.shape[1:]))])
    src = src.contiguous()
    dst = dist.get_global_rank(store.group, 0) if store.group is not None else 0
    out = [torch.empty_like(src) for _ in sizes] if store.rank == 0 else None
    collective("gather(class rows)", lambda: dist.gather(src, out, dst=dst, group=store.group), store.group)
    if store.rank != 0:
        return None
    return torch.cat([o[:s] for o, s in zip(out, sizes)]).cpu()


def full_state_dict(head, rank0_only: bool = False) -> Optional[Dict[str, Tensor]]:
    """The head's state with the full, unsharded ``weight (C, D)`` and ``bias (C,)`` (CPU tensors).

    A collective: call on every rank. Returns None on ranks other than 0 when ``rank0_only``.
    """
    if not is_sharded(head):
        raise ValueError(f"full_state_dict needs a head on a sharded store (sharded_head), got {type(head).__name__}")
    local = head.state_dict()
    out = {}
    for key, value in local.items():
        if key in _ROW_KEYS:
            out[key] = gather_rows(head, value, rank0_only)
        else:
            out[key] = value.detach().cpu().clone()
    if rank0_only and head.store.rank != 0:
        return None
    return out


def _slice_rows(head, key: str, full: Tensor, K: int = 1) -> Tensor:
    if full.shape[0] != head.num_classes * K:
        raise ValueError(
            f"checkpoint entry {key!r} has {full.shape[0]} rows but the head has num_classes="
            f"{head.num_classes}; expected shape ({head.num_classes * K}, ...)")
    return full[head.start * K:(head.start + head.num_local) * K]


def load_full_state_dict(head, state: Dict[str, Tensor], strict: bool = True) -> None:
    """Load a full (unsharded) state into ``head``, keeping this rank's rows. No communication.

    Works for a state written at any world size (and for a single-process preset's ``state_dict``).
    Partial-FC counters missing from ``state`` keep their current values; present ones are
    ignored by heads without Partial FC.
    """
    if not is_sharded(head):
        raise ValueError(f"load_full_state_dict needs a head on a sharded store (sharded_head), got {type(head).__name__}")
    if not isinstance(state, dict) or "weight" not in state:
        raise ValueError("load_full_state_dict: state must be a dict with at least a 'weight' entry")
    w = state["weight"]
    K = int(getattr(head, "rows_per_class", 1))
    if w.dim() != 2 or tuple(w.shape) != (head.num_classes * K, head.embedding_size):
        raise ValueError(
            f"checkpoint weight has shape {tuple(w.shape)}, expected ({head.num_classes * K}, "
            f"{head.embedding_size}) (num_classes{'·K' if K > 1 else ''}, embedding_size)")
    own = head.state_dict()
    local = {}
    for key, value in state.items():
        if key.startswith("pfc_") and key not in own:
            continue
        local[key] = _slice_rows(head, key, value, K if key == "weight" else 1) if key in _ROW_KEYS else value
    for key in ("pfc_seed", "pfc_step"):
        if key in own and key not in local:
            local[key] = own[key]
    head.load_state_dict(local, strict=strict)


def _row_param_ids(optimizer, head) -> Dict[int, str]:
    """Optimizer state index -> 'weight'/'bias' for the head's row-indexed parameters."""
    ids, i = {}, 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p is head.weight:
                ids[i] = "weight"
            elif head.bias is not None and p is head.bias:
                ids[i] = "bias"
            i += 1
    return ids


def full_optimizer_state_dict(optimizer, head, rank0_only: bool = False) -> Optional[dict]:
    """``optimizer.state_dict()`` with the state of the head's rows (e.g. momentum) made full.

    Every state tensor of ``head.weight``/``head.bias`` whose first dimension is the local row
    count is gathered to ``(C, ...)``. A collective: call on every rank.
    """
    sd = optimizer.state_dict()
    rows = _row_param_ids(optimizer, head)
    state = {}
    for idx in sorted(sd["state"]):
        entry = {}
        for k, v in sd["state"][idx].items():
            if idx in rows and isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] in (
                    head.num_local, head.num_local * int(getattr(head, "rows_per_class", 1))):
                entry[k] = gather_rows(head, v, rank0_only)
            else:
                entry[k] = v.detach().cpu().clone() if isinstance(v, Tensor) else copy.deepcopy(v)
        state[idx] = entry
    if rank0_only and head.store.rank != 0:
        return None
    return {"state": state, "param_groups": copy.deepcopy(sd["param_groups"])}


def load_full_optimizer_state_dict(optimizer, head, state: dict) -> None:
    """Load a state of :func:`full_optimizer_state_dict` (any world size), keeping this rank's rows."""
    if not isinstance(state, dict) or "state" not in state or "param_groups" not in state:
        raise ValueError("load_full_optimizer_state_dict: expected a dict with 'state' and 'param_groups'")
    rows = _row_param_ids(optimizer, head)
    local = {}
    for idx, entry in state["state"].items():
        idx = int(idx)
        new = {}
        for k, v in entry.items():
            K = int(getattr(head, "rows_per_class", 1)) if rows.get(idx) == "weight" else 1
            if idx in rows and isinstance(v, Tensor) and v.dim() >= 1 and v.shape[0] == head.num_classes * K:
                new[k] = _slice_rows(head, f"optimizer state {idx}.{k}", v, K).clone()
            else:
                new[k] = v
        local[idx] = new
    optimizer.load_state_dict({"state": local, "param_groups": state["param_groups"]})
