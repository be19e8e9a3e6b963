"""Clinical text stays private: no request leaves the machine, no note text in logs, nothing on disk."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from browser_support import (
    ROOT,
    browser,
    needs_chromium,
    open_page,
    running_app,
    set_note,
    settle,
    wait_for_plots,
    watch,
)

GUARD = Path(__file__).resolve().parent / "netguard"


def test_network_guard_records_and_blocks_outside_connections(tmp_path: Path) -> None:
    log = tmp_path / "net.log"
    probe = ("import socket\n"
             "for target in [('10.255.1.2', 443), ('127.0.0.1', 9)]:\n"
             "    try:\n        s = socket.socket(); s.settimeout(0.5); s.connect(target)\n"
             "    except OSError:\n        pass\n"
             "try:\n    socket.getaddrinfo('huggingface.co', 443)\nexcept OSError:\n    pass\n")
    env = {**os.environ, "PYTHONPATH": str(GUARD), "CBERT_NETGUARD_LOG": str(log)}
    subprocess.run([sys.executable, "-c", probe], env=env, check=True, timeout=60)
    assert log.read_text().splitlines() == ["connect 10.255.1.2:443", "resolve huggingface.co"]


def snapshot(roots: list[Path], skip: tuple[str, ...]) -> dict[str, float]:
    """Every file under ``roots`` with its modification time, except paths containing ``skip`` parts."""
    files: dict[str, float] = {}
    for root in roots:
        for folder, dirs, names in os.walk(root):
            dirs[:] = [d for d in dirs if not any(part in d for part in skip)]
            for name in names:
                path = os.path.join(folder, name)
                if any(part in path for part in skip):
                    continue
                try:
                    files[path] = os.stat(path).st_mtime
                except OSError:
                    continue
    return files


@needs_chromium
def test_no_request_leaves_no_note_text_logged_nothing_written(tmp_path: Path) -> None:
    """Server on the bundled model, hub not disabled: the guard must see nothing; the debug log
    must not hold the note; no file may appear or change while a new note is analysed."""
    marker = f"zq{uuid.uuid4().hex[:10]}"
    note = f"Patient {marker} denies chest pain. Mr. {marker} reports cough. [MASK] noted."
    net_log = tmp_path / "net.log"
    env = {"CBERT_MODEL": "bundled", "HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "",
           "PYTHONPATH": str(GUARD), "CBERT_NETGUARD_LOG": str(net_log), "STREAMLIT_LOGGER_LEVEL": "debug"}
    skip = (".git", "screenshots", "playwright", "chromium", "Chromium", ".pytest_cache", "cbert-app-",
            "pytest-of-", "__pycache__", "crashpad", ".org.chromium")
    watched = [ROOT, Path.home(), Path("/tmp")]
    with running_app(env=env, log_dir=tmp_path) as server, browser() as chromium:
        context = chromium.new_context(viewport={"width": 1400, "height": 1200})
        tab = context.new_page()
        traffic = watch(tab)
        tab.goto(server.url)
        settle(tab)
        set_note(tab, "Warm-up note: patient denies fever.")  # first imports and caches happen here
        for title in ("Tokenization", "Attention", "Embeddings", "Inside the model", "Note"):
            open_page(tab, title)
        before = snapshot(watched, skip)
        set_note(tab, note)
        for title in ("Tokenization", "Attention", "Embeddings", "Inside the model"):
            open_page(tab, title)
        wait_for_plots(tab, 3)
        time.sleep(1.0)
        after = snapshot(watched, skip)
        context.close()
        server_log = server.log()
    assert traffic.outside_requests == []
    assert not net_log.exists() or net_log.read_text() == "", net_log.read_text()
    assert "Runtime state" in server_log  # a debug-level line: the log really was verbose
    assert marker not in server_log
    changed = sorted(path for path, mtime in after.items() if before.get(path) != mtime)
    assert changed == [], f"files written during an analysis: {changed[:10]}"
