"""Model worker processes seen from the browser: a server that runs model work in its workers
(``CBERT_MODEL_WORKERS=always``) shows them in its status line, draws a new note's Note and "Inside the
model" pages, a 700-word note's Note page and the Attribution page's explanations with the workers doing the
model's work, and leaves no worker behind when it stops."""

from __future__ import annotations

import os
import time

from browser_support import (
    cpu_seconds,
    needs_chromium,
    open_page,
    process_alive,
    running_app,
    screenshot,
    server_pids,
    set_note,
    settle,
    worker_pids,
)
from cbert_core.serving.worker_pool import DEFAULT_LONG_NICENESS
from notes import LONG_NOTE

pytestmark = needs_chromium
CORES = len(os.sched_getaffinity(0))
WORKERS = CORES + 1  # one per core (the server's model slots) for short work, and one for long work
FIRST_NOTE = "Patient reports a dry cough for three days. Denies fever. Lungs clear on auscultation."
SECOND_NOTE = ("HISTORY: 67 year old man with COPD admitted with worsening dyspnea. Denies chest pain. "
               "PLAN: nebulizers, prednisone taper, follow up with pulmonology in two weeks.")


def _status_line(page) -> str:
    page.locator('[data-testid="stSidebar"] summary', has_text="Advanced").click()
    text = page.locator('[data-testid="stSidebar"]').inner_text()
    return next((line for line in text.splitlines() if "hooks left on models" in line), "")


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_model_work_runs_in_worker_processes_that_end_with_the_server(chromium, tmp_path_factory) -> None:
    with running_app(env={"HF_HUB_OFFLINE": "1", "CBERT_MODEL": "", "CBERT_MODEL_WORKERS": "always"},
                     log_dir=tmp_path_factory.mktemp("logs")) as server:
        port = _port(server.url)
        page = chromium.new_context(viewport={"width": 1500, "height": 1800}).new_page()
        page.goto(server.url)
        settle(page)
        set_note(page, FIRST_NOTE)  # its trace asks for workers; it runs here while they load
        deadline = time.monotonic() + 180
        while f"{WORKERS} model worker processes" not in _status_line(page) and time.monotonic() < deadline:
            time.sleep(1)
            page.reload()
            settle(page)
        assert f"{WORKERS} model worker processes" in _status_line(page)
        workers = worker_pids(port)
        assert len(workers) == WORKERS
        # the long work's worker runs at a lower CPU priority than the server, the short work's at the same
        niceness = sorted(os.getpriority(os.PRIO_PROCESS, int(pid)) for pid in workers)
        ours = os.getpriority(os.PRIO_PROCESS, int(server_pids(port)[0]))
        assert niceness == [ours] * CORES + [min(19, ours + DEFAULT_LONG_NICENESS)]

        before = cpu_seconds(workers)
        set_note(page, SECOND_NOTE)  # the Note page traces it
        open_page(page, "Inside the model", plots=1)  # and walks it through every layer
        body = page.locator('[data-testid="stMain"]').inner_text()
        assert "1 history" in body  # the walk is the second note's (the first began with "patient")
        assert "Traceback" not in body
        assert cpu_seconds(workers) > before, "the workers did none of the model's work"
        shot = screenshot(page, "inside-with-workers")
        assert shot.stat().st_size > 0

        # a 700-word note (three windows): its trace is long work, which runs in a long work's worker; its windows
        # are reported back as they are done
        before = cpu_seconds(workers)
        set_note(page, LONG_NOTE)
        open_page(page, "Note")
        assert page.get_by_text("It is read in 3 overlapping windows", exact=False).count() == 1
        assert page.locator('[data-testid="stException"]').count() == 0
        assert cpu_seconds(workers) > before + 0.5, "the long note's trace did not run in a worker"
        screenshot(page, "long-note-with-workers")

        # an explanation on the Attribution page is long work too: it runs in a worker, the server only draws it
        set_note(page, SECOND_NOTE)
        open_page(page, "Attribution")
        worked, served = cpu_seconds(workers), cpu_seconds(server_pids(port))
        page.get_by_role("button", name="Explain", exact=True).first.click()
        settle(page)
        worked, served = cpu_seconds(workers) - worked, cpu_seconds(server_pids(port)) - served
        assert page.locator('[data-testid="stException"]').count() == 0
        assert page.get_by_role("heading", name="Integrated Gradients").count() == 1
        assert page.get_by_text("Which explanation to trust here", exact=False).count() == 1
        # measured: the workers 4.6 s of CPU, the server 0.2 s (in the server itself, the workers would be idle)
        assert worked > 1.0 and worked > 2 * served, f"workers {worked:.2f} s of CPU, server {served:.2f} s"
        screenshot(page, "explanation-with-workers")
        log = server.log()
        assert "Traceback" not in log and "prednisone" not in log
        server_pids_before = worker_pids(port)
    deadline = time.monotonic() + 30
    while any(process_alive(pid) for pid in server_pids_before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(process_alive(pid) for pid in server_pids_before), "a model worker outlived its server"
