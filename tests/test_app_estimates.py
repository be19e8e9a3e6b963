"""AppTest: before a long computation runs, the page says what it will cost, from this server's measurements.

Each test starts from an empty speed book (it is shared by every session of the process), runs the
computation once and checks that the next estimate shown before a click rests on that measurement.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from test_app_pages import start
from ui import caches
from ui.sidebar import MODEL_OTHER

WORDS = "patient denies chest pain and cough with no fever on aspirin"  # 11 pieces for the tiny model


@pytest.fixture()
def book():
    """The app's speed book, emptied for this test (and after it)."""
    shared = caches.speed_book()

    def empty() -> None:
        with shared.lock:
            shared.measurements.clear()
            shared.point_seconds.clear()

    empty()
    yield shared
    empty()


def caption_starting(app, start_text: str) -> str:
    found = [caption.value for caption in app.caption if caption.value.startswith(start_text)]
    assert len(found) == 1, [caption.value for caption in app.caption]
    return found[0]


def test_surprise_map_estimate_before_the_click_rests_on_its_timed_passes(tiny, tiny_dir: Path, book) -> None:
    app = start("pages/predictions.py", note_text=WORDS, model_choice=MODEL_OTHER, model_custom=str(tiny_dir))
    # Fast mode masks every 8th of the 11 pieces together: 8 copies; exact: one copy per piece.
    before = caption_starting(app, "Fast mode runs")
    assert before.startswith("Fast mode runs 8 masked copies, ") and "forward passes" not in before
    toggle_help = app.toggle(key="pred_pll_exact").help
    assert "fast: 8 masked copies, " in toggle_help and "exact: 11 masked copies, " in toggle_help
    app.button(key="go_pll").click().run()
    assert not app.exception
    ((positions, rows, _seconds),) = book.measurements[(tiny.info.key, "fp32", "forward")]
    assert (positions, rows) == (11 + 2, 8)  # the run was timed as the passes it planned
    app.sidebar.text_area(key="note_text").set_value(WORDS + " reports cough").run()  # 13 pieces
    after = caption_starting(app, "Fast mode runs")
    assert after.startswith("Fast mode runs 8 masked copies, ")
    assert "from this model's forward passes timed on this server at fp32" in after
    app.toggle(key="pred_pll_exact").set_value(True).run()
    exact = caption_starting(app, "Exact mode runs")
    assert exact.startswith("Exact mode runs 13 masked copies, ") and "forward passes timed on this server" in exact


def test_corpus_estimates_rest_on_the_timed_embedding(bundled, book) -> None:
    rows = "".join(f"{day},Seen on day {day} for a dry cough; no fever.\n" for day in range(1, 8))  # short notes
    app = start("pages/corpus.py", note_text="Denies fever; mild cough since Monday.",
                corpus_source="Upload CSV or JSONL")
    app.file_uploader(key="corpus_upload").set_value(("estimates.csv", f"day,text\n{rows}".encode(), "text/csv")).run()
    assert not app.exception
    before = caption_starting(app, "Embedding the collection runs 7 note windows")  # one window per short note
    assert "forward passes" not in before
    app.button(key="go_corpus_embed").click().run()
    assert not app.exception
    ((_positions, measured_rows, _seconds),) = book.measurements[(bundled.info.key, "fp32", "forward")]
    assert measured_rows == 7
    index = caption_starting(app, "Building the index runs 7 note windows")
    assert "from this model's forward passes timed on this server at fp32" in index
    app.selectbox(key="corpus_pooling").set_value("cls").run()  # embeddings not computed yet
    again = caption_starting(app, "Embedding the collection runs 7 note windows")
    assert "from this model's forward passes timed on this server at fp32" in again


def test_training_estimate_rests_on_the_timed_training_run(bundled, book) -> None:
    app = start("pages/finetune.py", ft_epochs=2)
    before = caption_starting(app, "Trains the top 2 layer(s) and the head on 24 notes for 2 epoch(s), "
                                   "then checks 6 held-out notes")
    assert "training runs" not in before
    app.button(key="go_train").click().run()
    assert not app.exception
    assert len(book.measurements[(bundled.info.key, "fp32", "training")]) == 1
    app.number_input(key="ft_epochs").set_value(3).run()
    after = caption_starting(app, "Trains the top 2 layer(s) and the head on 24 notes for 3 epoch(s)")
    assert "from this model's training runs timed on this server at fp32" in after


def test_second_model_trace_shows_its_estimate_while_it_runs(tiny, tiny_dir: Path, book,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    labels: list[str] = []
    reporter = caches.progress_bar

    def recording(label: str):
        labels.append(label)
        return reporter(label)

    monkeypatch.setattr(caches, "progress_bar", recording)
    app = start("pages/compare.py", note_text="Cough and fever ; patient denies chest pain .", cmp_model=str(tiny_dir))
    running = [label for label in labels if label.startswith(f"Running the note through {tiny.info.name}")]
    assert running == [f"Running the note through {tiny.info.name}, time not known yet (it is measured on the "
                       "first run)"]
    assert book.measurements[(tiny.info.key, "fp32", "trace")]
    labels.clear()
    app.sidebar.text_area(key="note_text").set_value("No fever ; the patient reports a cough .").run()
    assert not app.exception
    running = [label for label in labels if label.startswith(f"Running the note through {tiny.info.name}")]
    assert len(running) == 1 and "from this model's traces timed on this server at fp32" in running[0]
    labels.clear()
    app.toggle(key="cmp_own_scale").set_value(True).run()  # the trace is cached: nothing runs, nothing to say
    assert not [label for label in labels if label.startswith("Running the note")]
