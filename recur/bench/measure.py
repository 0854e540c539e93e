"""Timing and memory measurement for benchmarks (never for tests)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable

import torch


def load_average() -> float | None:
    """The 1-minute load average, None where the system does not tell it."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, repeat: int = 3, warmup: int = 1) -> float:
    """Median wall time of fn() in seconds, after `warmup` untimed calls."""
    return time_calls(fn, device, repeat, warmup)[0]


def time_calls(fn: Callable[[], object], device: torch.device, repeat: int = 3, warmup: int = 1) -> tuple[float, float]:
    """Median wall time and median CPU time of this process (all its threads) over the
    same calls of fn(), in seconds, after `warmup` untimed calls. On a CPU shared with
    other jobs the CPU time leaves out the time spent waiting for a core."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    walls, cpus = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    return statistics.median(walls), statistics.median(cpus)


def saved_for_backward_bytes(fn: Callable[[], torch.Tensor], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward of fn(), not counting
    those that share storage with a tensor of `exclude` (a model's parameters, which
    training holds anyway).

    This is the memory that training holds per step beyond parameters and is exact and
    repeatable on any device, unlike process memory on a CPU.
    """
    seen: dict[tuple[int, int], int] = {}
    held = {_storage_key(t) for t in exclude}

    def pack(t: torch.Tensor):
        key = _storage_key(t)
        if key not in held:
            seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    return t.untyped_storage().data_ptr(), t.device.index or 0


def cuda_peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before
