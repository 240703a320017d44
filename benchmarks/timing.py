"""Shared helpers of the benchmark scripts: timing, and the machine line every script prints
beside its numbers (results differ between CPU kinds: keep one table per kind in README.md)."""
import os
import statistics
import sys
import time
from typing import Callable, Dict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def median_time(fn, reps: int, warmup: int = 1) -> float:
    """Median wall time of fn() over reps calls, after warmup calls (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved_times(fns: Dict[str, Callable[[], object]], reps: int, warmup: int = 1) -> Dict[str, dict]:
    """Times of each fn over reps rounds, the candidates taking turns within a round, so that a
    noisy neighbour slows them alike. Returns name -> {"wall": [s, ...], "cpu": [s, ...]} (cpu:
    this process's CPU time per call; with one thread it hardly depends on the neighbours)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, dict] = {name: {"wall": [], "cpu": []} for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            c, t = time.process_time(), time.perf_counter()
            fn()
            times[name]["wall"].append(time.perf_counter() - t)
            times[name]["cpu"].append(time.process_time() - c)
    return times


def machine_line() -> str:
    """The CPU model with its AVX-512 / AMX flags, torch version and thread count."""
    import torch

    from sam_ros.engine.cpu_info import cpu_info

    return f"{cpu_info().describe()}\ntorch {torch.__version__}, {torch.get_num_threads()} threads"


def print_machine() -> None:
    print(machine_line(), flush=True)
