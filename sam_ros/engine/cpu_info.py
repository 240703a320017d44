"""What CPU this process runs on: its model name and the instruction-set extensions that decide
which kernels (and which precision) are fast on it.

The same model runs at very different speeds on CPUs of one family (e.g. an AMD EPYC with
AVX-512 against an Intel Xeon with AMX tiles), so benchmarks print this beside their numbers and
the `auto` backend keys its cached choice by it.
"""
import functools
import platform
from dataclasses import dataclass
from typing import Tuple

# The flags (as /proc/cpuinfo spells them) that change which kernels torch / oneDNN pick.
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8",
             "asimd", "sve", "bf16")


@dataclass(frozen=True)
class CpuInfo:
    model: str                  # e.g. "Intel(R) Xeon(R) Processor", "AMD EPYC 9R14 96-Core Processor"
    flags: Tuple[str, ...]      # the ISA_FLAGS present, in ISA_FLAGS order
    cores: int                  # logical CPUs visible to this process

    @property
    def has_amx(self) -> bool:
        return "amx_bf16" in self.flags

    @property
    def has_bf16(self) -> bool:
        """Native bf16 arithmetic (AVX512-BF16, AMX, or Arm's BF16): bf16 can pay off here."""
        return any(f in self.flags for f in ("avx512_bf16", "amx_bf16", "bf16"))

    def describe(self) -> str:
        """One line for logs and benchmark output."""
        avx512 = "yes" if "avx512f" in self.flags else "no"
        amx = "yes" if self.has_amx else "no"
        return (f"CPU: {self.model} ({self.cores} logical CPUs); AVX-512: {avx512}, AVX512-BF16: "
                f"{'yes' if 'avx512_bf16' in self.flags else 'no'}, AMX: {amx}; flags: {' '.join(self.flags) or '-'}")


def _parse(text: str) -> Tuple[str, set]:
    model, flags = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


@functools.lru_cache(maxsize=1)
def cpu_info() -> CpuInfo:
    """This machine's CPU (read once from /proc/cpuinfo; elsewhere from `platform`)."""
    import os

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            model, flags = _parse(f.read())
    except OSError:
        model, flags = "", set()
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return CpuInfo(model=model, flags=tuple(f for f in ISA_FLAGS if f in flags), cores=cores)
