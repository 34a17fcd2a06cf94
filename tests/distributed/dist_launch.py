"""Spawn gloo ranks for a test, bounded in time and always torn down."""
from __future__ import annotations

import os
import socket
import time
import traceback
from pathlib import Path

import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(target, rank, world, port, pg_timeout, out_dir, args):
    import torch

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    from facemargin.distributed import destroy_process_group, init_process_group_from_env

    try:
        init_process_group_from_env(backend="gloo", timeout_s=pg_timeout)
        # the target's DDP modules are its locals: gone when it returns, before the group is destroyed
        target(rank, world, out_dir, *args)
        import torch.distributed as dist

        dist.barrier()  # rank 0 hosts the store: nobody leaves before everyone is done
    except BaseException:  # errors and KeyboardInterrupt: no teardown of a group that may be broken,
        Path(out_dir, f"rank{rank}.err").write_text(traceback.format_exc())
        os._exit(1)  # and no destructor runs at all
    try:
        destroy_process_group()  # collects garbage first (DDP modules kept alive by cycles)
    finally:
        os._exit(0)


def run_ranks(target, world: int, out_dir, args=(), timeout: float = 60.0, pg_timeout: float = 30.0,
              wait_for=None):
    """Run ``target(rank, world, out_dir, *args)`` on ``world`` spawned gloo ranks.

    Waits (at most ``timeout`` s) for the ranks in ``wait_for`` (default: all), then terminates
    whatever is still running. Returns the exit codes (None for a rank that was still alive).
    """
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_entry, args=(target, r, world, port, pg_timeout, str(out_dir), tuple(args)),
                         daemon=True) for r in range(world)]
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        for r in (range(world) if wait_for is None else wait_for):
            procs[r].join(max(0.0, deadline - time.monotonic()))
        return [p.exitcode for p in procs]
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)


def errors(out_dir) -> str:
    """The tracebacks the ranks wrote, for assertion messages."""
    return "\n".join(f.read_text() for f in sorted(Path(out_dir).glob("rank*.err")))


def assert_ok(codes, out_dir):
    assert codes == [0] * len(codes), f"exit codes {codes}\n{errors(out_dir)}"
