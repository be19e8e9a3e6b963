"""Results passed from a model worker process to the server through shared memory, not through a pipe.

A trace of a short note is about a megabyte of arrays. Read through a pipe it arrives in pipe-sized pieces,
and the reading thread takes the interpreter lock back after each one; in a server whose other threads run
Python that is hundreds of waits of up to the switch interval each (``bench/convoy.py``). Here the result
is pickled with protocol 5, which hands every large array's memory out separately ("out-of-band
buffers"): those are copied into one anonymous shared-memory file (``memfd_create``: it has no name in
any folder and is never on disk), whose descriptor is passed over the connection (``SCM_RIGHTS``), and
only the small pickle with the buffers' places goes through the pipe. The receiver maps the file and
unpickles its arrays in place, without copying them; the memory is freed when the last array that uses it
is dropped, and no file is left behind whatever happens to either process.

Where ``memfd_create`` is missing (not Linux) the buffers go through the pipe as bytes.
"""

from __future__ import annotations

import mmap
import os
import pickle
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle
from typing import Any

ALIGNMENT = 64  # each buffer starts on a cache line, so the arrays built on them are aligned
_IN_SHARED_MEMORY = "shared"
_IN_MESSAGE = "inline"


def _aligned(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


def send_value(connection: Connection, value: Any) -> None:
    """Send ``value`` (picklable) over ``connection``, its large buffers through shared memory."""
    buffers: list[pickle.PickleBuffer] = []
    header = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    if not raws or not hasattr(os, "memfd_create"):
        connection.send((_IN_MESSAGE, header, [bytes(raw) for raw in raws]))
        return
    layout: list[tuple[int, int]] = []  # (offset, size) of each buffer in the shared file
    offset = 0
    for raw in raws:
        layout.append((offset, raw.nbytes))
        offset = _aligned(offset + raw.nbytes)
    descriptor = os.memfd_create("cbert-result", os.MFD_CLOEXEC)
    try:
        os.ftruncate(descriptor, max(offset, 1))
        with mmap.mmap(descriptor, max(offset, 1)) as region:
            for (start, size), raw in zip(layout, raws):
                region[start:start + size] = raw
        connection.send((_IN_SHARED_MEMORY, header, layout))
        send_handle(connection, descriptor, None)
    finally:
        os.close(descriptor)  # the receiver holds its own descriptor now (or nobody does: the memory is freed)


def receive_value(connection: Connection, message: tuple[str, bytes, list[Any]]) -> Any:
    """The value whose first ``message`` was received from ``connection`` (the arrays mapped, not copied)."""
    how, header, parts = message
    if how == _IN_MESSAGE:
        return pickle.loads(header, buffers=parts)
    descriptor = recv_handle(connection)
    try:
        size = max((start + length for start, length in parts), default=0)
        region = mmap.mmap(descriptor, max(size, 1))
    finally:
        os.close(descriptor)  # the mapping keeps the memory
    view = memoryview(region).toreadonly()  # shared results are read-only, as every record's arrays are
    return pickle.loads(header, buffers=[view[start:start + length] for start, length in parts])
