"""Shared helpers of the benchmark scripts: timing, and what machine the numbers come from."""
import platform
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


def cpu_description() -> str:
    """CPU model name, core count and the matrix extensions that matter to torch (AVX-512, AMX)."""
    import os

    model, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("unknown CPU", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    ext = sorted(f for f in flags if f.startswith(("avx512f", "avx512_bf16", "amx")))
    return f"{model}, {os.cpu_count()} cores, {' '.join(ext) or 'no AVX-512/AMX'}"
