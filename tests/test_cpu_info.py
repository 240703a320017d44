"""The CPU description that benchmarks print and the `auto` backend keys its choice by."""
from sam_ros.engine import cpu_info as ci

XEON_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 avx512f avx512bw avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse avx2 avx512f avx512bw avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8
"""
EPYC = "model name\t: AMD EPYC 9R14 96-Core Processor\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes sve bf16\nCPU part\t: 0xd40\n"


def test_parse_intel_amd_arm():
    model, flags = ci._parse(XEON_AMX)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"amx_bf16", "avx512f", "avx512_bf16"} <= flags
    model, flags = ci._parse(EPYC)
    assert model.startswith("AMD EPYC") and "amx_bf16" not in flags
    model, flags = ci._parse(ARM)
    assert model == "" and {"asimd", "sve", "bf16"} <= flags


def test_describe_names_avx512_and_amx():
    amx = ci.CpuInfo("Xeon", ("avx2", "avx512f", "avx512_bf16", "amx_bf16"), 2)
    assert amx.has_amx and amx.has_bf16
    assert "AVX-512: yes" in amx.describe() and "AMX: yes" in amx.describe()
    epyc = ci.CpuInfo("EPYC", ("avx2", "avx512f"), 2)
    assert not epyc.has_amx and not epyc.has_bf16 and "AMX: no" in epyc.describe()


def test_this_machine():
    info = ci.cpu_info()
    assert info.model and info.cores >= 1
    with open("/proc/cpuinfo") as f:
        text = f.read()
    assert info.model in text
    assert ("avx512f" in info.flags) == (" avx512f" in text)
