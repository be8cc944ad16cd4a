"""Memory the services give back to the system: glibc's allocator keeps what Python frees unless told."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None  # not glibc (musl, macOS): nothing to tune


_LIBC = _glibc()


def return_large_buffers_to_the_system() -> None:
    """glibc raises its mmap threshold each time a large buffer is freed (up to 32 MB); after a few
    letters, 10 MB buffers come from the heap and their memory is kept when freed, so resident memory
    only grows. A fixed threshold maps every buffer over 64 KB on its own and returns it when freed:
    with 256 KB, the copies of 150 KB letters (body, base64, MIME) stayed in the heap and fragmented
    it, and the mailer held 150 MB after 6 000 of them (make bench --memory --pdf-kb 150).

    glibc also gives threads that allocate arenas of their own (up to eight per core), each keeping
    its freed memory; one event loop and its few helper threads need no more than two
    (as MALLOC_ARENA_MAX=2 would)."""
    if _LIBC is not None:  # not glibc (musl, macOS): nothing to tune
        _LIBC.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD; fixing it also stops the dynamic adjustment
        _LIBC.mallopt(-8, 2)  # M_ARENA_MAX


async def release_freed_memory() -> None:
    """After a large letter (up to 10 MB, decoded into several copies): hand the heap's free pages back
    to the system (malloc_trim, in a thread: it can take milliseconds and needs no GIL). The cycles the
    PDF inspection leaves are collected by it (issuer/pdfcheck.py); a second full collection here took
    30-50 ms of the event loop. 4 letters of 10 MB left the issuer at 130 MB without it, 102-116 MB with
    it (make bench; 89 MB before them)."""
    if _LIBC is not None:
        await asyncio.to_thread(_LIBC.malloc_trim, 0)
