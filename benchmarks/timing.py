"""Shared helpers of the benchmark scripts: timing, peak memory, and the machine line every
script prints beside its numbers (results differ between CPU kinds: keep one table per kind in
README.md)."""
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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

