"""Cache keys follow from what a result depends on: every widget that changes an explanation changes
its key, and a widget that does not leaves it alone (so no stale result is shown, nothing is recomputed
for nothing). The keys come from the analysis call itself (``ui.caches.computed``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cbert_core.run.plan import RunOptions, plan_note
from test_app_pages import start
from ui import caches
from ui.sidebar import MODEL_OTHER

NOTE = "patient reports chest pain , [MASK] cough and no fever ."
ATTRIBUTION = "pages/attribution.py"


def attribution_keys() -> set[tuple]:
    return {key for key in caches.analysis_cache().keys() if key[1] == "explain"}


def explain(app: AppTest) -> set[tuple]:
    """Run the page (clicking Explain if it asks) and return the attribution keys it computed since."""
    before = attribution_keys()
    app.run()
    if any(button.key == "go_explain" for button in app.button):
        app.button(key="go_explain").click().run()
    assert not app.exception, app.exception
    return attribution_keys() - before


@pytest.fixture()
def page(tiny_dir: Path) -> AppTest:
    caches.clear_all()
    app = start(ATTRIBUTION, note_text=NOTE, model_choice=MODEL_OTHER, model_custom=str(tiny_dir),
                attr_methods=["gradient-x-input"], keep_case=True)
    assert len(explain(app)) == 1
    return app


CHANGES = {
    "baseline": lambda app: app.radio(key="attr_baseline").set_value("mask"),
    "method": lambda app: app.multiselect(key="attr_methods").set_value(["saliency"]),
    "word explained": lambda app: app.selectbox(key="q_target").set_value(app.selectbox(key="q_target").options[1]),
    "memory bound": lambda app: app.number_input(key="attr_memory").set_value(0.5),
    "heads knocked out": lambda app: app.multiselect(key="ko_heads").set_value(["L1 H2"]),
    "precision": lambda app: app.radio(key="precision").set_value("bf16"),
    "window overlap": lambda app: app.number_input(key="overlap").set_value(16),
    "casing": lambda app: app.toggle(key="keep_case").set_value(False),
    "note": lambda app: app.text_area(key="note_text").input(NOTE.replace("cough", "fever")),
    "grouping, for a method that removes groups": lambda app: (
        app.multiselect(key="attr_methods").set_value(["occlusion"]).run(),
        app.selectbox(key="attr_grouping").set_value("sentence"))[-1],
    "samples, for a sampling method": lambda app: (
        app.multiselect(key="attr_methods").set_value(["gradient-shap"]).run(),
        app.number_input(key="attr_samples").set_value(8))[-1],
}


@pytest.mark.parametrize("widget", list(CHANGES))
def test_a_widget_that_changes_the_explanation_changes_its_key(page: AppTest, widget: str) -> None:
    CHANGES[widget](page)
    assert len(explain(page)) >= 1, f"changing the {widget} reused an explanation made for other settings"


UNCHANGED = {
    "integrated-gradients steps, for Gradient x Input": lambda app: app.number_input(key="attr_steps").set_value(20),
    "early stop, for Gradient x Input": lambda app: app.toggle(key="attr_early").set_value(True),
    "word to replace in the counterfactual": lambda app: app.text_input(key="attr_cf_with").input("denies"),
    "grouping, for Gradient x Input": lambda app: app.selectbox(key="attr_grouping").set_value("sentence"),
    "samples, for Gradient x Input": lambda app: app.number_input(key="attr_samples").set_value(8),
}


@pytest.mark.parametrize("widget", list(UNCHANGED))
def test_a_widget_that_does_not_change_the_explanation_leaves_its_key_alone(page: AppTest, widget: str) -> None:
    UNCHANGED[widget](page)
    assert explain(page) == set()


def test_the_faithfulness_of_an_early_stopped_attribution_is_its_own(tiny_dir: Path) -> None:
    # Faithfulness is keyed by the attribution it scores: toggling the early stop gives a new one of each.
    caches.clear_all()
    app = start(ATTRIBUTION, note_text=NOTE, model_choice=MODEL_OTHER, model_custom=str(tiny_dir),
                attr_methods=["integrated-gradients"])
    explain(app)
    faithful = {key for key in caches.analysis_cache().keys() if key[1] == "group_faithfulness"}
    app.toggle(key="attr_early").set_value(True)
    explain(app)
    again = {key for key in caches.analysis_cache().keys() if key[1] == "group_faithfulness"}
    assert len(faithful) == 1 and len(again - faithful) == 1


def test_run_options_are_part_of_every_plan_key(tiny) -> None:
    keys = {plan_note(tiny, NOTE, options).key for options in (
        RunOptions(), RunOptions(lowercase=False), RunOptions(overlap=8), RunOptions(max_chars=500),
        RunOptions(precision="bf16"), RunOptions(knocked_out=frozenset({(0, 1)})))}
    assert len(keys) == 6
