"""Server health figures for the status line: memory, cached items, model work queued, hooks left on models."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from cbert_core.model.hooks import hook_count
from cbert_core.model.loading import LoadedModel
from cbert_core.serving.scheduler import QueueState


@dataclass(frozen=True, kw_only=True)
class ServerStatus:
    rss_bytes: int  # resident memory of this process
    models: int
    traces: int
    trace_bytes: int
    hooks: int  # explorer hooks still registered on any loaded model (0 between runs)
    queue: QueueState | None = None  # model work running and waiting for a turn


def resident_bytes(pid: int | str = "self") -> int:
    """Resident set size of process ``pid``, this one by default (Linux /proc; 0 where unavailable)."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def server_status(models: Iterable[LoadedModel], traces: int, trace_bytes: int,
                  queue: QueueState | None = None) -> ServerStatus:
    loaded = list(models)
    return ServerStatus(rss_bytes=resident_bytes(), models=len(loaded), traces=traces, trace_bytes=trace_bytes,
                        hooks=sum(hook_count(model.model) for model in loaded), queue=queue)
