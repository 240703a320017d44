"""Shared timing helper of the benchmark scripts."""
import statistics
import time


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
