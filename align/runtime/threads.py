"""How many threads the trainer computes with on CPU.

Launchers decide it for you, badly: `accelerate launch` without `--num_cpu_threads_per_process`
puts OMP_NUM_THREADS=1 in every process it starts (accelerate/commands/launch.py), so the README's
main command trained on one of two cores. On CPU align sets torch's thread count itself: the cores
this process may run on, shared among the processes of its node, unless `train.cpu_threads` asks
for a number. On GPUs it leaves torch alone (the CPU only feeds the device there).
"""

from __future__ import annotations

import os

import torch


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def cpu_threads(requested: int | None, local_processes: int, cores: int) -> int:
    """`requested`, or the cores divided among the node's processes (at least one each)."""
    if requested is not None:
        return requested
    return max(1, cores // max(1, local_processes))


def use_cpu_threads(requested: int | None, local_processes: int) -> int | None:
    """Set torch's intra-op threads for a CPU run and return the count; None (unchanged) on a GPU."""
    if torch.cuda.is_available():
        return None
    threads = cpu_threads(requested, local_processes, available_cores())
    if threads != torch.get_num_threads():  # leave torch's thread pools alone when nothing changes
        # torch._C's, not torch.set_num_threads: vLLM's in-process CPU worker replaces the latter
        # with a no-op for the whole process (v1/worker/cpu_worker.py), and a count asked for must hold.
        torch._C.set_num_threads(threads)
    return threads
