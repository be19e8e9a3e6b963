"""Model worker processes seen from the browser: a server that runs short model work in its workers
(``CBERT_MODEL_WORKERS=always``) shows them in its status line, draws a new note's Note and "Inside the
model" pages and a 700-word note's Note page with the workers doing the model's work, and leaves no worker
behind when it stops."""

from __future__ import annotations

import time

from browser_support import (
    cpu_seconds,
    needs_chromium,
    open_page,
    process_alive,
    running_app,
    screenshot,
    set_note,
    settle,
    worker_pids,
)
from notes import LONG_NOTE

pytestmark = needs_chromium
FIRST_NOTE = "Patient reports a dry cough for three days. Denies fever. Lungs clear on auscultation."
SECOND_NOTE = ("HISTORY: 67 year old man with COPD admitted with worsening dyspnea. Denies chest pain. "
               "PLAN: nebulizers, prednisone taper, follow up with pulmonology in two weeks.")


def _status_line(page) -> str:
    page.locator('[data-testid="stSidebar"] summary', has_text="Advanced").click()
    text = page.locator('[data-testid="stSidebar"]').inner_text()
    return next((line for line in text.splitlines() if "hooks left on models" in line), "")


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_short_model_work_runs_in_worker_processes_that_end_with_the_server(chromium, tmp_path_factory) -> None:
    with running_app(env={"HF_HUB_OFFLINE": "1", "CBERT_MODEL": "", "CBERT_MODEL_WORKERS": "always"},
                     log_dir=tmp_path_factory.mktemp("logs")) as server:
        port = _port(server.url)
        page = chromium.new_context(viewport={"width": 1500, "height": 1800}).new_page()
        page.goto(server.url)
        settle(page)
        set_note(page, FIRST_NOTE)  # its trace asks for workers; it runs here while they load
        deadline = time.monotonic() + 180
        while "2 model worker processes" not in _status_line(page) and time.monotonic() < deadline:
            time.sleep(1)
            page.reload()
            settle(page)
        assert "2 model worker processes" in _status_line(page)
        workers = worker_pids(port)
        assert len(workers) == 2

        before = cpu_seconds(workers)
        set_note(page, SECOND_NOTE)  # the Note page traces it
        open_page(page, "Inside the model", plots=1)  # and walks it through every layer
        body = page.locator('[data-testid="stMain"]').inner_text()
        assert "1 history" in body  # the walk is the second note's (the first began with "patient")
        assert "Traceback" not in body
        assert cpu_seconds(workers) > before, "the workers did none of the model's work"
        shot = screenshot(page, "inside-with-workers")
        assert shot.stat().st_size > 0

        # a 700-word note (three windows): its trace is long work, which takes one worker while the other
        # stays free for short work; its windows are reported back as they are done
        before = cpu_seconds(workers)
        set_note(page, LONG_NOTE)
        open_page(page, "Note")
        assert page.get_by_text("It is read in 3 overlapping windows", exact=False).count() == 1
        assert page.locator('[data-testid="stException"]').count() == 0
        assert cpu_seconds(workers) > before + 0.5, "the long note's trace did not run in a worker"
        screenshot(page, "long-note-with-workers")
        log = server.log()
        assert "Traceback" not in log and "prednisone" not in log
        server_pids_before = worker_pids(port)
    deadline = time.monotonic() + 30
    while any(process_alive(pid) for pid in server_pids_before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(process_alive(pid) for pid in server_pids_before), "a model worker outlived its server"
