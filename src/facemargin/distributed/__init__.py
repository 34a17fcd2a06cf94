"""Scale-out on torch.distributed: DDP for the backbone, class weights sharded across ranks.

* :func:`sharded_head` — any margin head of the zoo on a :class:`ShardedStore`: its class rows split
  over the ranks (``shard_range``), a distributed softmax cross-entropy and exact gradients; ``sample_rate < 1``
  turns on Partial FC.
* :class:`PartialFCOptimizer` — SGD that moves only the class rows a step used.
* :func:`full_state_dict` / :func:`load_full_state_dict` (and the optimizer variants) —
  checkpoints with the full class weights, so a run resumes on any number of ranks.
* :func:`init_process_group_from_env`, :func:`is_main_process`, :class:`DistributedEvalSampler` —
  process-group plumbing for ``torchrun`` (gloo on CPU, NCCL on GPU) with bounded timeouts.

Typical use under ``torchrun --nproc_per_node N``::

    init_process_group_from_env(timeout_s=300)
    model = DDP(backbone)                       # the backbone only
    head = sharded_head("arcface", 512, num_classes)
    opt_model = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    opt_head = PartialFCOptimizer(head, lr=0.1, momentum=0.9, weight_decay=5e-4)
    loss = head(model(images), labels)          # same value on every rank
    loss.backward(); opt_model.step(); opt_head.step()
    ...
    del model                                   # DDP first: it holds the process group
    destroy_process_group()
"""
from .checkpoint import (full_optimizer_state_dict, full_state_dict, gather_rows,
                         load_full_optimizer_state_dict, load_full_state_dict)
from .partial_fc import PartialFCOptimizer, num_sampled, sample_rows
from .sharded import ShardedHead, ShardedStore, ShardComm, is_sharded, sharded_head
from .shards import all_shard_ranges, shard_range
from .utils import (DistributedError, DistributedEvalSampler, destroy_process_group, env_world,
                    get_rank, get_world_size, init_process_group_from_env, is_initialized,
                    is_main_process, launched_distributed)

__all__ = [
    "sharded_head", "ShardedStore", "ShardComm", "is_sharded", "ShardedHead", "shard_range", "all_shard_ranges",
    "PartialFCOptimizer", "sample_rows", "num_sampled",
    "full_state_dict", "load_full_state_dict", "full_optimizer_state_dict", "load_full_optimizer_state_dict",
    "gather_rows", "init_process_group_from_env", "destroy_process_group", "is_main_process",
    "is_initialized", "get_rank", "get_world_size", "env_world", "launched_distributed",
    "DistributedEvalSampler", "DistributedError",
]
