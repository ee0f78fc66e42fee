"""The buffer large frames are assembled in, reused (the driver's side of ``new_buffer``).

Every fresh large buffer costs a page fault per 4 KiB as it is first written,
since the allocator gives a freed one back to the system; on a 16 MiB frame
that costs more than copying it (docs/performance.md, scenario D). So each
thread keeps one spare buffer and assembles a large body in it whenever
nothing refers to the last body assembled there: no frame, view or ``Raw``
argument. While one does, a body gets a buffer of its own, so a value still
in use is never overwritten. The spare holds at most twice the last large
body; smaller bodies get a buffer of their own.

A header announces a body's size before any of it arrives, and a peer may
announce 64 MiB and send 64 bytes. So a large buffer is anonymous memory
(``mmap``) that the kernel backs page by page as the body is written into it:
main's memory grows with the bytes a peer really sent, not with what it
announced, and nothing is zeroed or copied ahead. A smaller body (under
:data:`SPARE_FROM`) is a plain ``bytearray``: at most 1 MiB reserved ahead.
"""

from __future__ import annotations

import mmap
import sys
import threading

__all__ = ("SPARE_FROM", "body_buffer")

#: Bodies at least this large are assembled in the spare, or in memory mapped
#: for them; smaller ones in a ``bytearray`` of their own.
SPARE_FROM = 1024 * 1024

_spare = threading.local()


def body_buffer(size: int) -> bytearray | memoryview:
    """A writable buffer of ``size`` bytes for a body that arrives in pieces."""
    if size < SPARE_FROM:
        return bytearray(size)
    held = len(getattr(_spare, "buffer", b""))
    # The references are _spare's and getrefcount's argument; any other is a live view.
    if held and sys.getrefcount(_spare.buffer) > 2:
        return memoryview(_reserve(size))  # the last body is still in use
    if not size <= held <= 2 * size:
        _spare.buffer = _reserve(size)  # the first, or one that fits this size better
    return memoryview(_spare.buffer)[:size]


def _reserve(size: int) -> mmap.mmap:
    """``size`` bytes of zeroed memory, backed by the kernel only as they are written."""
    return mmap.mmap(-1, size)
