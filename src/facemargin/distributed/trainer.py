"""What :class:`facemargin.train.Trainer` needs to run under ``torchrun``.

``facemargin train`` detects ``WORLD_SIZE > 1`` and builds a :class:`DistributedContext`:

* the backbone is wrapped in DDP; the classification head becomes a :class:`ShardedHead` (class
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

from typing import Dict, Optional

import torch
import torch.distributed as dist

from ..losses import is_head
from .checkpoint import (full_optimizer_state_dict, full_state_dict, load_full_optimizer_state_dict,
                         load_full_state_dict)
from .partial_fc import PartialFCOptimizer
from .sharded import ShardedHead
from .utils import destroy_process_group, get_rank, get_world_size, init_process_group_from_env


class DistributedContext:
    def __init__(self, sample_rate: float = 1.0, seed: int = 0, device: Optional[torch.device] = None):
        self.rank, self.world = get_rank(), get_world_size()
        self.sample_rate, self.seed, self.device = float(sample_rate), int(seed), device

    @classmethod
    def from_env(cls, cfg: Dict) -> "DistributedContext":
        d = cfg["dist"]
        device = "cuda" if cfg["train"]["device"] in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
        init_process_group_from_env(backend=d["backend"] or None, timeout_s=float(d["timeout_s"]), device=device)
        if device == "cuda":
            import os

            cfg["train"]["device"] = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        if cfg["aux"].get("name"):
            raise ValueError(f"aux loss {cfg['aux']['name']!r} is not supported in distributed runs "
                             "(its state would differ per rank); train it in one process")
        return cls(float(d["sample_rate"]), int(cfg["train"]["seed"]))

    # -- building --------------------------------------------------------------------------------
    def build_head(self, spec: Dict, embedding_size: int, num_classes: int):
        if not is_head(spec["name"]):
            from ..train.loop import build_loss

            return build_loss(spec, embedding_size, num_classes)
        return ShardedHead(spec["name"], embedding_size, num_classes, sample_rate=self.sample_rate,
                           seed=self.seed, **dict(spec.get("params", {})))

    def wrap_model(self, model):
        ids = [model_device.index] if (model_device := next(model.parameters()).device).type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def head_optimizer(self, head, lr: float, momentum: float, weight_decay: float):
        """Partial FC needs its own optimizer that moves only the rows a step used."""
        if isinstance(head, ShardedHead) and head.sample_rate < 1.0:
            return PartialFCOptimizer(head, lr=lr, momentum=momentum, weight_decay=weight_decay)
        return None

    # -- checkpoints (collectives: every rank calls them) -------------------------------------------
    def full_state_dict(self, head) -> Dict:
        return full_state_dict(head) if isinstance(head, ShardedHead) else head.state_dict()

    def load_full_state_dict(self, head, state: Dict) -> None:
        if isinstance(head, ShardedHead):
            load_full_state_dict(head, state)
        else:
            head.load_state_dict(state)

    def full_optimizer_state_dict(self, optimizer, head) -> Optional[Dict]:
        if optimizer is None:
            return None
        if isinstance(head, ShardedHead):
            return full_optimizer_state_dict(optimizer, head)
        return optimizer.state_dict()

    def load_full_optimizer_state_dict(self, optimizer, head, state: Dict) -> None:
        if isinstance(head, ShardedHead):
            load_full_optimizer_state_dict(optimizer, head, state)
        else:
            optimizer.load_state_dict(state)

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        destroy_process_group()
