"""AppTest per page: offline, on the bundled model; checks what each page shows."""

from __future__ import annotations

import json
from pathlib import Path

import plotly.io as pio
import pytest
import streamlit.testing.v1.app_test as app_test_module
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

from cbert_core.model.loading import load_model
from cbert_core.run.plan import plan_note
from cbert_core.run.trace import trace
from cbert_core.text.examples import DEFAULT_EXAMPLE, EXAMPLE_NOTES
from cbert_core.views.look import LIGHT_TEMPLATE
from ui.sidebar import MODEL_OTHER

APP = str(Path(__file__).resolve().parent.parent / "app.py")


class _NavigationPagesManager(PagesManager):
    """AppTest resets Streamlit's "legacy pages/ folder" flag before every run, so an app that
    has a pages/ folder *and* st.navigation runs each time wrapped in the legacy navigation,
    which drops sidebar widgets and button clicks on reruns. The real server leaves legacy
    mode for good the first time app.py calls st.navigation; do the same here."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        PagesManager.uses_pages_directory = False


app_test_module.PagesManager = _NavigationPagesManager
NOTE = EXAMPLE_NOTES[DEFAULT_EXAMPLE]


def charts(at: AppTest) -> dict[str, dict]:
    """Plotly figures on the page by widget key, parsed from the sent JSON."""
    out = {}
    for element in at.get("plotly_chart"):
        spec = json.loads(element.proto.spec)
        out[element.proto.id.split("-")[-1] if not element.key else element.key] = spec
    return out


@pytest.fixture(scope="module")
def reference():
    return trace(load_model("bundled"), plan_note(load_model("bundled"), NOTE))


def start(page: str | None = None, **state: object) -> AppTest:
    """A fresh app run with sidebar (and page) choices preset through session state."""
    at = AppTest.from_file(APP, default_timeout=180)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    if page is not None:
        at.switch_page(page).run()
        assert not at.exception, at.exception
    return at


@pytest.fixture()
def app() -> AppTest:
    return start()


def test_note_page_shows_sizes_sections_and_model(app: AppTest, reference) -> None:
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["Word pieces"] == f"{len(reference.tokens) - 2:,}"
    assert metrics["Sentences"] == str(len(reference.segmentation.sentences))
    assert metrics["Sections"] == "3"
    assert metrics["Windows"] == "1"
    sections = app.dataframe[0].value
    assert list(sections["section"]) == ["HISTORY OF PRESENT ILLNESS", "PHYSICAL EXAM", "Assessment/Plan"]
    sidebar_text = " ".join(caption.value for caption in app.sidebar.caption)
    assert "all-MiniLM-L6-v2" in sidebar_text and "6 layers × 12 heads" in sidebar_text


def test_another_note_changes_every_count() -> None:
    app = start(note_text="Patient denies chest pain. No fever.")
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["Sentences"] == "2" and metrics["Word pieces"] == "8"


@pytest.mark.parametrize("page", ["pages/note.py", "pages/tokenization.py", "pages/attention.py",
                                  "pages/embeddings.py"])
def test_empty_note_is_a_message_not_a_traceback(page: str) -> None:
    app = start(page if page != "pages/note.py" else None, note_text="   ")
    assert not app.exception
    assert any("empty" in error.value for error in app.error)


def test_tokenization_page_table_and_casing(reference) -> None:
    app = start("pages/tokenization.py")
    table = app.dataframe[0].value
    assert len(table) == len(reference.tokens) - 2
    assert list(table["token"][:3]) == list(reference.tokens[1:4])
    first = table.iloc[0]
    assert NOTE[first["start"]:first["end"]] == first["characters"]
    assert any("Casing in force: **lower-cased**" in caption.value for caption in app.caption)


def test_an_uncased_vocabulary_offers_no_casing_switch() -> None:
    # The bundled model's vocabulary has no capitals: keeping case would make every capital an [UNK].
    app = start("pages/tokenization.py", keep_case=True, note_text="COPD exacerbation. Patient DENIES PAIN.")
    assert [toggle for toggle in app.sidebar.toggle if toggle.label == "Keep upper/lower case"] == []
    assert any("uncased vocabulary" in caption.value for caption in app.sidebar.caption)
    assert any("Casing in force: **lower-cased**" in caption.value for caption in app.caption)
    assert "[UNK]" not in list(app.dataframe[0].value["token"])


def test_a_cased_vocabulary_keeps_case_on_request_and_says_so(tiny_dir: Path) -> None:
    model = dict(model_choice=MODEL_OTHER, model_custom=str(tiny_dir), note_text="COPD exacerbation")
    lowered = start("pages/tokenization.py", **model)
    assert any("switch on *Keep upper/lower case*" in info.value for info in lowered.sidebar.info)
    kept = start("pages/tokenization.py", keep_case=True, **model)
    assert any("Casing in force: **case kept**" in caption.value for caption in kept.caption)
    assert [info.value for info in kept.sidebar.info if "switch on" in info.value] == []
    assert any(info.value.startswith("Case is kept") for info in kept.sidebar.info)
    assert list(kept.dataframe[0].value["token"]) != list(lowered.dataframe[0].value["token"])


def test_the_app_makes_the_light_template_the_default_and_sends_it_with_every_figure(monkeypatch) -> None:
    monkeypatch.setattr(pio.templates, "default", "streamlit")  # what 'import streamlit' leaves
    figures = charts(start("pages/attention.py"))
    assert pio.templates.default == LIGHT_TEMPLATE  # set by the app: figures get it as they are made, not copied
    light = json.loads(json.dumps(pio.templates[LIGHT_TEMPLATE].to_plotly_json()))
    assert len(figures) >= 2 and all(figure["layout"]["template"] == light for figure in figures.values())


def test_attention_page_grid_heatmap_and_views(reference) -> None:
    from cbert_core.analyses.attention import head_statistics

    assert len(reference.tokens) > 81  # a long window: word level, around one word
    app = start("pages/attention.py")
    figures = charts(app)
    grid = figures["grid_heads"]["data"][0]
    assert len(grid["text"]) == 6 * 12  # one square per head
    layer, head = head_statistics(reference, 0).most_structured()
    assert (app.number_input(key="att_layer").value, app.number_input(key="att_head").value) == (layer + 1, head + 1)
    heatmap = figures["att_heatmap"]
    words = [NOTE[a:b] for a, b in reference.word_spans.tolist()]
    assert len(heatmap["data"][0]["x"]) == 81 and all(label.split(" ", 1)[1] in ["[CLS]", "[SEP]", *words]
                                                      for label in heatmap["data"][0]["x"])
    focus = app.selectbox(key="att_focus").value  # a row of the window: here a global position too
    assert f" {words[reference.word_ids[focus]]}" in " ".join(heatmap["data"][0]["x"])
    app.toggle(key="att_whole").set_value(True).run()
    assert len(charts(app)["att_heatmap"]["data"][0]["x"]) == len(reference.word_spans) + 2
    app.toggle(key="att_words").set_value(False).run()
    assert len(charts(app)["att_heatmap"]["data"][0]["x"]) == len(reference.tokens)
    app.number_input(key="att_layer").set_value(3).run()
    app.number_input(key="att_head").set_value(5).run()
    assert charts(app)["att_heatmap"]["layout"]["title"]["text"].startswith("L3 H5")
    app.selectbox(key="att_view").set_value("Rollout").run()
    assert "att_rollout" in charts(app)
    app.selectbox(key="att_view").set_value("Neuron view").run()
    neuron = charts(app)["att_neuron"]
    assert len(neuron["data"]) == 4 and len(neuron["data"][3]["y"]) == len(reference.tokens)
    app.selectbox(key="att_view").set_value("bertviz head view").run()
    assert not app.exception
    html = [element for element in app.get("iframe")] or app.get("html")
    assert html, "bertviz view missing"


def test_embeddings_page_projection_paths_and_note_vector(reference) -> None:
    app = start("pages/embeddings.py")
    figures = charts(app)
    scatter = figures["emb_scatter"]
    assert sum(len(trace_["x"]["bdata"]) > 0 if isinstance(trace_["x"], dict) else len(trace_["x"]) > 0
               for trace_ in scatter["data"]) == len(scatter["data"])
    assert {trace_["name"] for trace_ in scatter["data"]} >= {"HISTORY OF PRESENT ILLNESS", "Assessment/Plan"}
    assert "emb_paths" in figures and "emb_cosine" in figures and "emb_note_path" in figures
    app.slider(key="emb_layer").set_value(0).run()
    assert "after embeddings" in charts(app)["emb_scatter"]["layout"]["title"]["text"]
    app.selectbox(key="emb_colour").set_value("piece kind").run()
    names = {trace_["name"] for trace_ in charts(app)["emb_scatter"]["data"]}
    assert "[MASK]" in names and "word start" in names
