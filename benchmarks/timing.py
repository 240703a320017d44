"""Shared timing helper of the benchmark scripts."""
import statistics
import time


def median_time(fn, reps: int, warmup: int = 1, clock=time.perf_counter) -> float:
    """Median time of fn() over reps calls, after warmup calls (seconds). clock: wall time by
    default; time.process_time gives this process's CPU time (single-threaded work on a busy
    machine)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = clock()
        fn()
        times.append(clock() - t)
    return statistics.median(times)
