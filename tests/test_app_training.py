"""AppTest of the Fine-tune page's two new stages: continued pretraining and the word tagger, end to end
(train, result, save, an unwritable folder, the saved tagger's spans on the Predictions page)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.runtime.scriptrunner_utils.exceptions import StopException

from test_app_pages import charts, start
from ui.sidebar import MODEL_OTHER
from ui.training_run import KeptRun

MASKED_NOTE = "patient denies chest pain . no evidence of [MASK] ."

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def table_with(app, column: str):
    """The first table on the page that has ``column``."""
    return next(frame.value for frame in app.dataframe if column in frame.value.columns)


def captions(app) -> str:
    return " ".join(caption.value for caption in app.caption)


def test_pretraining_shows_the_split_live_scores_and_fill_mask_before_and_after(tiny_dir: Path, tmp_path: Path) -> None:
    app = start("pages/finetune.py", model_choice=MODEL_OTHER, model_custom=str(tiny_dir), note_text=MASKED_NOTE,
                ft_stage="Continue pretraining", pt_epochs=1, pt_checks=1, pt_held_pieces=200)
    assert "Held-out notes: 6 of 34 (scored, never trained on)" in [e.label for e in app.expander]
    assert "keeps training its own head" in captions(app)
    app.button(key="go_pretrain").click().run()
    assert not app.exception, app.exception
    figures = charts(app)
    assert {"pt_loss", "pt_perplexity", "pt_fill_before", "pt_fill_after"} <= set(figures)
    steps, values = figures["pt_perplexity"]["data"][0]["x"], figures["pt_perplexity"]["data"][0]["y"]
    trained = app.session_state["pt_model"]
    assert steps == [0, trained.result.steps_done] and len(values) == 2
    assert [metric.label for metric in app.metric][:2] == ["Held-out pseudo-perplexity", "Steps"]
    # Saving: an unwritable folder is a message; a writable one a checkpoint the picker loads.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    app.text_input(key="pt_folder").set_value(str(blocker / "model")).run()
    app.button(key="go_save_pt").click().run()
    assert not app.exception and app.error and "a-file" in app.error[0].value
    app.text_input(key="pt_folder").set_value(str(tmp_path / "adapted")).run()
    app.button(key="go_save_pt").click().run()
    assert (tmp_path / "adapted" / "config.json").is_file() and any(s.value.startswith("Saved to") for s in app.success)


def test_a_bare_encoder_is_told_its_new_head_starts_untrained() -> None:
    app = start("pages/finetune.py", ft_stage="Continue pretraining")
    assert not app.exception
    notices = " ".join(info.value for info in app.info)
    assert "has no masked-LM head" in notices and "untrained" in notices and "tied to the word embeddings" in notices


def test_tagger_trains_lists_wrong_spans_and_its_spans_show_on_predictions(tiny_dir: Path, tmp_path: Path) -> None:
    app = start("pages/finetune.py", model_choice=MODEL_OTHER, model_custom=str(tiny_dir), ft_stage="Tag words",
                tg_epochs=20, tg_lr_head=3e-2, tg_lr_enc=1e-2)
    assert "80 texts with 95 spans" in captions(app)
    app.button(key="go_tag").click().run()
    assert not app.exception, app.exception
    assert {"tg_loss", "tg_scores"} <= set(charts(app))
    scores = table_with(app, "precision")
    assert list(scores["label"]) == ["affirmed", "negated", "possible", "all labels (micro)"]
    tagger, dataset = app.session_state["tg_model"]
    wrong = table_with(app, "what went wrong")
    assert len(wrong) == len(tagger.result.wrong) > 0  # a tiny model reading letter by letter: some wrong
    # A wrong span's text opens in the explorer (the Note page, with that text in the note box).
    first = dataset.examples[tagger.result.wrong[0].example].text
    app.button(key="go_open_wrong").click().run()
    assert not app.exception and app.session_state["note_text"] == first
    # Save it and use it: the Predictions page draws its entity spans.
    app.switch_page("pages/finetune.py").run()
    app.text_input(key="tg_folder").set_value(str(tmp_path / "tagger")).run()
    app.button(key="go_save_tg").click().run()
    assert (tmp_path / "tagger" / "config.json").is_file()
    app.button(key="go_use_tg").click().run()
    app.switch_page("pages/predictions.py").run()
    assert not app.exception, app.exception
    assert "labels each word" in captions(app)
    table = table_with(app, "label")
    assert len(table) and set(table["label"]) <= {"affirmed", "negated", "possible"}


def test_a_stopped_run_keeps_its_result_then_lets_streamlit_stop() -> None:
    run = KeptRun()
    drawn = []

    def draw(value: int) -> None:
        if value == 3:
            raise StopException()
        drawn.append(value)

    guarded = run.calls(draw)
    for value in range(6):
        if run():
            break
        guarded(value)
    assert drawn == [0, 1, 2] and run()
    with pytest.raises(StopException):
        run.finish()
