"""Freed heap memory goes back to the operating system once the pipeline is built."""

import platform

import pytest

from fourm_ros.benchmarks.timing import resident_gib
from fourm_ros.heap import release_free_heap

on_glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's"
)


@on_glibc
def test_freed_heap_pages_leave_the_resident_memory():
    # 64 KiB blocks come from the heap (below glibc's mmap threshold); the last one stays allocated, so
    # the freed ones sit below the top of the heap, where free() alone never returns them.
    blocks = [bytearray(64 * 1024) for _ in range(4096)]  # 256 MiB, written (zeroed) so resident
    kept = blocks[-1]
    del blocks
    before = resident_gib()[0]
    assert release_free_heap()
    after = resident_gib()[0]
    assert before - after > 0.15, f"anonymous memory {before:.3f} -> {after:.3f} GiB"
    assert len(kept) == 64 * 1024
