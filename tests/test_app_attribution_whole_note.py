"""AppTest for the Attribution page on a long note: every window explained, scored by section, the section bar,
completeness over the windows, agreement beside faithfulness; a note without headers falls back to sentences."""

from __future__ import annotations

from notes import LONG_NOTE
from test_app_pages import charts, start
from ui.sidebar import MODEL_OTHER


def test_a_long_note_is_explained_by_section_over_every_window() -> None:
    app = start("pages/attribution.py", note_text=LONG_NOTE, attr_grouping="section", attr_steps=10,
                attr_methods=["integrated-gradients", "occlusion"])
    assert app.radio(key="attr_scope").value == "note"  # a similarity on a long note: the whole note by default
    app.button(key="go_explain").click().run()
    assert not app.exception, app.exception
    captions = [caption.value for caption in app.caption]
    scope = next(c for c in captions if c.startswith("The whole note: all"))
    windows = int(scope.split("all ")[1].split(" windows")[0])
    assert windows >= 2
    completeness = [c for c in captions if c.startswith(f"Convergence delta over the {windows} windows")]
    assert completeness and "each window's scores are checked" in completeness[0]
    bar = charts(app)["attr_group_bar"]["data"]
    assert [trace["name"] for trace in bar] == ["Integrated Gradients", "Leave one section out"]
    sections = bar[0]["y"]
    assert any("HISTORY OF PRESENT ILLNESS" in label for label in sections)
    assert any("MEDICATIONS" in label for label in sections) and len(sections) >= 6
    assert not any(error for error in app.error)
    faithful = app.dataframe[0].value
    assert list(faithful["method"]) == ["Integrated Gradients", "Leave one section out"]
    assert "attr_agreement" in charts(app)
    assert any("holds up" in markdown.value for markdown in app.markdown)
    downloads = [button for button in app.get("download_button")]
    assert downloads  # scores by section as CSV


def test_a_note_without_headers_is_scored_by_sentence_and_says_so() -> None:
    app = start("pages/attribution.py", note_text="Patient denies chest pain. No evidence of pneumonia. Afebrile.",
                attr_grouping="section", attr_methods=["gradient-x-input"])
    assert any("no section headers" in info.value for info in app.info)
    app.button(key="go_explain").click().run()
    assert not app.exception
    bar = charts(app)["attr_group_bar"]["data"][0]
    assert bar["y"][0].startswith("1. Patient denies chest pain")


def test_a_masked_word_on_a_long_note_keeps_its_window(tiny_dir) -> None:
    """A masked word is predicted from the window that holds it: no whole-note choice, the page names the window."""
    note = " ".join(["patient denies chest pain ."] * 40) + " [MASK] fever ."
    app = start("pages/attribution.py", note_text=note, model_choice=MODEL_OTHER, model_custom=str(tiny_dir),
                attr_methods=["integrated-gradients"], attr_grouping="sentence")
    assert not app.get("radio") or all(radio.key != "attr_scope" for radio in app.radio)
    app.button(key="go_explain").click().run()
    assert not app.exception
    assert any(caption.value.startswith("Window ") for caption in app.caption)
