"""Which rows each rank holds: contiguous, nearly equal shares of ``C`` classes (or of a dataset)."""
from __future__ import annotations

from typing import List, Tuple


def shard_range(num_classes: int, rank: int, world: int, allow_empty: bool = False) -> Tuple[int, int]:
    """``(start, n)``: rank ``rank`` of ``world`` holds rows ``[start, start + n)`` of ``num_classes``.

    ``n = C//W + (r < C%W)``, ``start = (C//W)·r + min(r, C%W)`` (the first ``C%W`` ranks get one
    extra row). Raises ``ValueError`` when a rank would hold no row, unless ``allow_empty``.
    """
    num_classes, rank, world = int(num_classes), int(rank), int(world)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank {rank} must lie in [0, world={world}) with world >= 1")
    if num_classes < 0 or (num_classes < world and not allow_empty):
        raise ValueError(f"cannot shard {num_classes} classes over {world} ranks: every rank needs at least one class")
    q, rem = divmod(num_classes, world)
    return q * rank + min(rank, rem), q + (1 if rank < rem else 0)


def all_shard_ranges(num_classes: int, world: int) -> List[Tuple[int, int]]:
    """:func:`shard_range` for every rank, in rank order."""
    return [shard_range(num_classes, r, world, allow_empty=True) for r in range(world)]
