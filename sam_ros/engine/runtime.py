"""Process-level settings that make repeated model calls cheaper on Linux CPUs."""
import ctypes
import ctypes.util
import os

# glibc mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20,
                      top_pad: int = 64 << 20) -> bool:
    """Let glibc keep freed memory for reuse instead of handing it back to the kernel.

    A decoder call allocates and frees a few tens of MB of short-lived buffers (full-resolution
    masks and logits). By default glibc serves the larger ones with fresh mmap()s and trims
    freed heap, so every call page-faults its buffers in again: about 2 500 page faults and
    ~2 ms per 640x480 click on the 2-core development CPU. With these thresholds the buffers are
    reused; the process keeps up to `trim_threshold` of freed memory mapped. Returns False where
    it does not apply (not glibc) or `SAM_ROS_KEEP_FREED_MEMORY=0` turns it off.
    """
    if os.environ.get("SAM_ROS_KEEP_FREED_MEMORY", "1") == "0":
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, trim_threshold), (_M_TOP_PAD, top_pad)))
