"""Shared timing and memory helpers of the benchmark scripts."""
import statistics
import subprocess
import sys
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


# A child's ru_maxrss starts at its parent's size at fork time (Linux keeps the forked address
# space's high-water mark across exec), so the probe is started by a small launcher process and
# its peak read from the launcher's RUSAGE_CHILDREN.
_LAUNCHER = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")


def peak_memory_mb(script: str, side: str, cwd: str) -> float:
    """Peak RSS (MB) of `python script --memory-probe side` run in a fresh process."""
    out = subprocess.run([sys.executable, "-c", _LAUNCHER, sys.executable, script, "--memory-probe", side],
                         capture_output=True, text=True, cwd=cwd, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def paired_median_times(fn_a, fn_b, reps: int, warmup: int = 1):
    """Median wall times of fn_a() and fn_b(), their calls alternating (a, b, a, b, ...) so that a
    change in the machine's load hits both alike (seconds)."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    ta, tb = [], []
    for _ in range(reps):
        for fn, times in ((fn_a, ta), (fn_b, tb)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)
