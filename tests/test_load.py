"""Short load runs: 4 browser sessions for a minute on one server, no cross-talk, no hooks left; three websocket
sessions (one long) speaking Streamlit's protocol through the mixed load."""

from __future__ import annotations

from pathlib import Path

from browser_support import needs_chromium, running_app
from load_sessions import EXPLAIN, SCAN, run_load
from protocol_sessions import run_protocol_load

pytestmark = needs_chromium


def test_four_sessions_for_a_minute_each_see_only_their_own_note(tmp_path: Path) -> None:
    with running_app(env={"HF_HUB_OFFLINE": "1", "CBERT_MODEL": "bundled"}, log_dir=tmp_path) as server:
        port = int(server.url.rsplit(":", 1)[1])
        report = run_load(server.url, port, sessions=4, seconds=60)
    assert report.problems == []
    assert all(rounds >= 1 for rounds in report.rounds), report.rounds
    assert len(report.page_times) >= 4 * len(("Tokenization", "Attention"))
    # every page opened was also timed until the server's script end came over the websocket, and that
    # came before the page was drawn and calm
    assert {page: len(times) for page, times in report.served_by_page.items()} == {
        page: len(times) for page, times in report.by_page.items()}
    for page, drawn in report.by_page.items():
        assert all(0 < served <= seen + 0.5 for served, seen in zip(report.served_by_page[page], drawn)), page
    assert report.hooks_after == 0
    assert report.dialogs == [] and report.outside_requests == []
    assert report.cpu_span_s > 0 and report.cpu_s["server"] > 0 and report.cpu_s["browsers"] > 0, report.cpu_s
    start, end = report.rss[0][1], report.rss[-1][1]
    assert end < start + 3 * 2**30, report.rss  # memory stays bounded (caches are LRU with byte limits)


def test_three_websocket_sessions_run_the_mixed_load_and_see_only_their_own_note(tmp_path: Path) -> None:
    with running_app(env={"HF_HUB_OFFLINE": "1", "CBERT_MODEL": "bundled"}, log_dir=tmp_path) as server:
        port = int(server.url.rsplit(":", 1)[1])
        report = run_protocol_load(server.url, port, sessions=3, seconds=30, long_sessions=1)
    assert report.problems == []  # each Note page sent its own note only; the head scan ran
    assert all(rounds >= 1 for rounds in report.rounds), report.rounds
    assert len(report.times[EXPLAIN]) >= 1 and len(report.times[SCAN]) >= 1
    assert set(report.by_page) == {"Tokenization", "Attention", "Embeddings", "Inside the model", "Note"}
    assert all(seconds > 0 for seconds in report.page_times)
    assert report.cpu_s["server"] > 0
