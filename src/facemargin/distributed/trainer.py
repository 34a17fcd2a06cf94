"""What :class:`facemargin.train.Trainer` needs to run under ``torchrun``.

``facemargin train`` detects ``WORLD_SIZE > 1`` and builds a :class:`DistributedContext`:

* the backbone is wrapped in DDP; the classification head is built on a :class:`ShardedStore` (class
  rows split across ranks, Partial FC when ``dist.sample_rate < 1``, with a
  :class:`PartialFCOptimizer` for its rows);
* every rank reads its own share of the same global batch (``BatchOrder(rank, world)``), so the
  run is the single-process run on the concatenated batch;
* checkpoints hold the full class weights and the full momentum of their rows, gathered from all
  ranks and written by rank 0, so a run resumes on any number of ranks (or on one process).

Metric-only losses (triplet, contrastive as the main loss) run on each rank's own batch, and DDP
averages their gradients: their mining sees only the local batch. Auxiliary losses with state
(center loss) would let each rank's centres drift apart and are refused.
"""
from __future__ import annotations

import gc
import warnings
import weakref
from typing import Dict, Optional

import torch
import torch.distributed as dist

from ..losses import build_from_config, is_head
from .checkpoint import (full_optimizer_state_dict, full_state_dict, load_full_optimizer_state_dict,
                         load_full_state_dict)
from .partial_fc import PartialFCOptimizer
from .sharded import ShardedStore, is_sharded
from .utils import all_reduce, destroy_process_group, get_rank, get_world_size, init_process_group_from_env


class DistributedContext:
    def __init__(self, sample_rate: float = 1.0, seed: int = 0, device: Optional[torch.device] = None):
        self.rank, self.world = get_rank(), get_world_size()
        self.sample_rate, self.seed, self.device = float(sample_rate), int(seed), device
        self._wrapped = []  # weak references to the DDP modules of wrap_model

    @classmethod
    def from_env(cls, cfg: Dict) -> "DistributedContext":
        d = cfg["dist"]
        if cfg["aux"].get("name"):  # refused before a process group exists that would need tearing down
            raise ValueError(f"aux loss {cfg['aux']['name']!r} is not supported in distributed runs "
                             "(its state would differ per rank); train it in one process")
        device = "cuda" if cfg["train"]["device"] in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        init_process_group_from_env(backend=d["backend"] or None, timeout_s=float(d["timeout_s"]), device=device)
        if device == "cuda":
            import os

            cfg["train"]["device"] = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        return cls(float(d["sample_rate"]), int(cfg["train"]["seed"]),
                   device=torch.device(cfg["train"]["device"] if device == "cuda" else "cpu"))

    # -- building --------------------------------------------------------------------------------
    def build_head(self, spec: Dict, embedding_size: int, num_classes: int):
        if not is_head(spec["name"]):
            return build_from_config(spec, embedding_size, num_classes)
        # a head of the zoo on a sharded store: its rows split across the ranks
        return build_from_config(spec, embedding_size, num_classes,
                                 store=ShardedStore(sample_rate=self.sample_rate, seed=self.seed))

    def wrap_model(self, model):
        """``model`` in DDP. Whoever holds the wrapper must drop it before :meth:`close`."""
        ids = [model_device.index] if (model_device := next(model.parameters()).device).type == "cuda" else None
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        self._wrapped.append(weakref.ref(ddp))
        return ddp

    def head_optimizer(self, head, lr: float, momentum: float, weight_decay: float):
        """Partial FC needs its own optimizer that moves only the rows a step used."""
        if is_sharded(head) and head.store.sample_rate < 1.0:
            return PartialFCOptimizer(head, lr=lr, momentum=momentum, weight_decay=weight_decay)
        return None

    # -- checkpoints (collectives: every rank calls them) -------------------------------------------
    def full_state_dict(self, head) -> Dict:
        return full_state_dict(head) if is_sharded(head) else head.state_dict()

    def load_full_state_dict(self, head, state: Dict) -> None:
        if is_sharded(head):
            load_full_state_dict(head, state)
        else:
            head.load_state_dict(state)

    def full_optimizer_state_dict(self, optimizer, head) -> Optional[Dict]:
        if optimizer is None:
            return None
        if is_sharded(head):
            return full_optimizer_state_dict(optimizer, head)
        return optimizer.state_dict()

    def load_full_optimizer_state_dict(self, optimizer, head, state: Dict) -> None:
        if is_sharded(head):
            load_full_optimizer_state_dict(optimizer, head, state)
        else:
            optimizer.load_state_dict(state)

    def any_rank(self, flags):
        """For each boolean of ``flags``: whether it is true on any rank (one all-reduce MAX)."""
        t = torch.tensor([float(bool(f)) for f in flags], device=self.device)
        all_reduce(t, op=dist.ReduceOp.MAX, what="all_reduce(non-finite flags)")
        return [bool(v) for v in t.tolist()]

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        """Destroy the process group, after the DDP modules built by :meth:`wrap_model` are gone.

        A DDP module that outlives its process group takes the group's native object with it to
        interpreter exit, where its destruction can abort the process (see
        :func:`facemargin.distributed.utils.destroy_process_group`). The trainer releases its
        wrapper (:meth:`facemargin.train.Trainer.close`) before calling this; a wrapper still
        referenced elsewhere is reported by a warning.
        """
        gc.collect()
        alive = sum(r() is not None for r in self._wrapped)
        if alive:
            warnings.warn(f"rank {self.rank}: {alive} DDP module(s) still referenced when the process group is "
                          "destroyed; release them first (the process may abort at exit)", RuntimeWarning,
                          stacklevel=2)
        self._wrapped.clear()
        destroy_process_group()
