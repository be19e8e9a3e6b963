"""AppTest for the Evaluate page: the example set through the bundled model (zero-shot), a click on an error
opening Attribution on that note and its predicted class, the way back to the same row, an uploaded CSV with
labels the head does not have (the mapping offered), and views that never run the model again."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from cbert_core.evaluation.dataset import example_set
from test_app_pages import start
from tiny_models import write_bert
from ui import state
from ui.sidebar import MODEL_OTHER

PAGE = "pages/evaluate.py"


def captions(app: AppTest) -> str:
    return " ".join(caption.value for caption in app.caption)


def evaluated(**preset: object) -> AppTest:
    """The page with its collection evaluated (Evaluate pressed, unless this process already evaluated it)."""
    app = start(PAGE, **preset)
    if any(button.key == "go_evaluate" for button in app.button):
        app.button(key="go_evaluate").click().run()
    assert not app.exception, app.exception
    return app


@pytest.fixture(scope="module")
def example_app() -> AppTest:
    return evaluated()


def test_example_set_is_evaluated_zero_shot_on_the_bundled_model(example_app: AppTest) -> None:
    metrics = {metric.label: metric.value for metric in example_app.metric}
    assert metrics["Notes evaluated"] == f"{len(example_set().texts):,}"
    accuracy = float(metrics["Accuracy"].rstrip("%")) / 100
    per_class = example_app.dataframe[0].value
    assert sorted(per_class["class"]) == ["affirmed", "negated"]
    # The accuracy the page shows is the share of the diagonal of its own confusion counts.
    assert accuracy == pytest.approx(per_class["recall"].mul(per_class["gold count"]).sum()
                                     / per_class["gold count"].sum(), abs=1e-3)


def test_a_click_on_an_error_opens_attribution_and_the_way_back_finds_the_row(example_app: AppTest) -> None:
    app = example_app
    app.radio(key="eval_view").set_value("Errors").run()
    errors = app.dataframe[0].value
    assert len(errors) > 0 and (errors["gold"] != errors["predicted"]).all()
    assert errors["confidence"].is_monotonic_decreasing
    key = app.dataframe[0].key
    app.session_state[key] = {"selection": {"rows": [1], "columns": []}}
    app.run()
    assert not app.exception, app.exception
    picked = errors.iloc[1]
    example = example_set()
    note = example.texts[example.ids.index(picked["id"])]
    opened = app.session_state[state.EVAL_OPENED]
    assert opened["table"].startswith("errors") and opened["unit"] == int(picked["unit"])
    # Attribution is the page now: the note box holds the row's note, the target is its predicted class.
    assert app.session_state["note_text"] == note
    descriptions = {"negated": "the finding is absent", "affirmed": "the finding is present"}
    assert app.session_state["attr_description"] == descriptions[picked["predicted"]]
    back = [link for link in app.get("page_link") if "Back to the Evaluate page" in link.proto.label]
    assert back
    app.switch_page(PAGE).run()
    assert not app.exception, app.exception
    assert "Opened last:" in captions(app) and f"row 2 of {len(errors):,}" in captions(app)
    # Still the cached evaluation: no Evaluate button, the same errors.
    assert not [button for button in app.button if button.key == "go_evaluate"]
    assert app.dataframe[0].value["unit"].tolist() == errors["unit"].tolist()


def test_views_and_slices_read_the_cached_predictions(example_app: AppTest) -> None:
    app = example_app
    app.radio(key="eval_view").set_value("Slices").run()
    sliced = app.dataframe[0].value
    assert {"negation cue", "note_type"} <= set(sliced["slice by"])
    gaps = sliced["gap"].tolist()  # worst slice first
    assert gaps == sorted(gaps) and gaps[0] < 0
    app.radio(key="eval_view").set_value("Calibration").run()
    assert {"Temperature", "ECE before", "ECE after"} <= {metric.label for metric in app.metric}
    app.radio(key="eval_view").set_value("Exports").run()
    assert not app.exception, app.exception
    listed = " ".join(markdown.value for markdown in app.markdown)
    assert all(f"**{name}**" in listed for name in ("predictions", "errors", "per class metrics", "confusion matrix",
                                                     "slices accuracy", "reliability bins"))
    assert not [button for button in app.button if button.key == "go_evaluate"]


def csv_bytes(rows: list[dict]) -> bytes:
    buffer = io.StringIO()
    pd.DataFrame(rows).to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def test_an_uploaded_csv_with_other_label_names_offers_the_mapping(tmp_path: Path) -> None:
    folder = write_bert(tmp_path / "clf", head="sequence-classification", labels=("NEG", "POS"))
    rows = [{"sentence": f"patient denies chest pain {i}", "assertion": "absent", "site": "a"} for i in range(6)] + \
           [{"sentence": f"patient reports fever {i}", "assertion": "present", "site": "b"} for i in range(6)]
    app = start(PAGE, model_choice=MODEL_OTHER, model_custom=str(folder), eval_source="Upload CSV or JSONL")
    app.file_uploader(key="eval_upload").set_value(("visits.csv", csv_bytes(rows), "text/csv")).run()
    assert not app.exception, app.exception
    warnings = " ".join(warning.value for warning in app.warning)
    assert "absent" in warnings and "present" in warnings and "not the model's" in warnings
    mapped = {box.label: box for box in app.selectbox if box.label.startswith("“")}
    assert set(mapped) == {"“absent” is", "“present” is"}
    mapped["“absent” is"].set_value("NEG")
    mapped["“present” is"].set_value("POS")
    app.run()
    app.button(key="go_evaluate").click().run()
    assert not app.exception, app.exception
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["Notes evaluated"] == "12"
    assert sorted(app.dataframe[0].value["class"]) == ["NEG", "POS"]
    assert app.dataframe[0].value["gold count"].tolist() == [6, 6]


def test_a_row_opened_in_one_evaluation_opens_nothing_in_the_next() -> None:
    app = evaluated(eval_view="Errors")
    app.session_state[app.dataframe[0].key] = {"selection": {"rows": [0], "columns": []}}
    app.run()
    assert app.session_state[state.EVAL_OPENED]["table"].startswith("errors")
    app.switch_page(PAGE).run()
    rows = [{"sentence": f"Patient denies chest pain number {i}.", "assertion": "absent"} for i in range(5)] + \
           [{"sentence": f"Patient reports fever number {i}.", "assertion": "present"} for i in range(5)]
    app.radio(key="eval_source").set_value("Upload CSV or JSONL").run()
    app.file_uploader(key="eval_upload").set_value(("other.csv", csv_bytes(rows), "text/csv")).run()
    app.button(key="go_evaluate").click().run()
    assert not app.exception, app.exception
    # Still on Evaluate, showing the new collection's errors: the earlier selection did not carry over.
    assert "misclassified of 10 notes" in captions(app)
    assert app.session_state["note_text"] in example_set().texts  # the note opened before, unchanged
