"""The first seconds after `make run` (a cold start): what a newcomer sees before the model is ready.

A fresh server, a browser opened the moment the server's health endpoint answers, the sidebar's navigation
recorded on every change of the page from its first paint: it never lists the pages/ folder's files
(Streamlit's listing of a legacy multipage app: "app", "attention", ...), and the note box is on screen
before the model has loaded (it is drawn before torch is imported). How long each step takes is measured
by bench/ui.py, not asserted here.
"""

from __future__ import annotations

from browser_support import browser, needs_chromium, running_app, watch_cold_start

pytestmark = needs_chromium
FOLDER_LISTING = {"app", "note", "inside", "tokenization", "attention", "embeddings", "predictions", "attribution",
                  "corpus", "compare", "finetune"}  # the pages/ files' own names


def test_a_cold_start_never_shows_the_folder_listing_and_shows_the_note_box_before_the_model(tmp_path) -> None:
    with browser() as chromium, running_app(env={"HF_HUB_OFFLINE": "1", "CBERT_MODEL": ""},
                                            log_dir=tmp_path) as server:
        seen = watch_cold_start(chromium, server)
        assert seen.model_ready_s is not None, "the model never loaded"
        assert not seen.navigation_seen & FOLDER_LISTING, f"the folder listing was shown: {seen.navigation_seen}"
        assert {"Note", "Attention", "Fine-tune"} <= seen.navigation_seen
        assert seen.note_box_s is not None and seen.note_box_s < seen.model_ready_s, (
            f"the note box came at {seen.note_box_s} s, the model at {seen.model_ready_s} s")
        assert "Traceback" not in server.log()
