"""AppTest: page choices survive page switches next to widgets whose value cannot be set,
and an uploaded collection stays in use (with its columns) after leaving its page.

Streamlit raises StreamlitValueAssignmentNotAllowedError when a button, download button,
file uploader, chart selection or data editor is drawn after its key was set through
session state; the app once wrote back every page-prefixed key to keep choices, an uploaded
file's included, which broke Corpus and Fine-tune for the rest of the session. Choices are now
kept by Streamlit itself (``persist_state="session"``), as the pages draw them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from streamlit.testing.v1 import AppTest

from notes import labelled_rows
from test_app_pages import start
from ui.sidebar import MODEL_OTHER


def csv_bytes(rows: list[dict[str, str]]) -> bytes:
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(f'"{row[column]}"' for column in header) for row in rows]
    return ("\n".join(lines) + "\n").encode("utf-8")


def jsonl_bytes(rows: list[dict[str, str]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8")


def captions(app: AppTest) -> str:
    return "\n".join(caption.value for caption in app.main.caption)


def leave_and_return(app: AppTest, page: str) -> None:
    app.switch_page("pages/note.py").run()
    assert not app.exception, app.exception
    app.run()  # a second run on the other page: the left page's widgets are gone by now
    assert not app.exception, app.exception
    app.switch_page(page).run()
    assert not app.exception, app.exception


def _every_kind_of_widget() -> None:
    """A page with a choice of each kind and each widget Streamlit refuses to have set."""
    import pandas as pd
    import plotly.graph_objects as go
    import streamlit as st

    if st.session_state.get("show_page", True):
        st.selectbox("Choice", ["a", "b", "c"], key="att_choice", persist_state="session")
        st.toggle("Toggle", key="att_toggle", persist_state="session")
        st.multiselect("Several", [1, 2, 3], key="att_several", persist_state="session")
        st.text_input("Text", key="att_text", persist_state="session")
        st.button("Go", key="att_go")
        st.download_button("Get", b"data", file_name="data.txt", key="att_download", on_click="ignore")
        st.file_uploader("File", key="att_file")
        st.plotly_chart(go.Figure(go.Scatter(x=[1, 2], y=[1, 2])), on_select="rerun", key="att_chart")
        st.data_editor(pd.DataFrame({"x": [1, 2]}), key="att_edit")
    st.markdown("drawn")


def test_only_choices_are_written_back_and_they_survive_leaving_the_page() -> None:
    app = AppTest.from_function(_every_kind_of_widget, default_timeout=60)
    app.run()
    assert not app.exception, app.exception
    app.selectbox(key="att_choice").select("b")
    app.toggle(key="att_toggle").set_value(True)
    app.multiselect(key="att_several").set_value([2, 3])
    app.text_input(key="att_text").input("kept")
    app.file_uploader(key="att_file").set_value(("a.txt", b"hello", "text/plain"))
    app.run()
    assert not app.exception, app.exception
    app.button(key="att_go").click().run()
    assert not app.exception, app.exception
    app.session_state["show_page"] = False  # another page: none of the widgets drawn
    app.run()
    app.run()
    assert not app.exception, app.exception
    app.session_state["show_page"] = True
    app.run()
    assert not app.exception, app.exception
    assert app.selectbox(key="att_choice").value == "b"
    assert app.toggle(key="att_toggle").value is True
    assert app.multiselect(key="att_several").value == [2, 3]
    assert app.text_input(key="att_text").value == "kept"
    assert app.button(key="att_go").value is False


def test_an_uploaded_collection_and_its_columns_stay_after_leaving_the_corpus_page() -> None:
    app = start("pages/corpus.py", note_text="Patient denies chest pain.", corpus_source="Upload CSV or JSONL")
    app.file_uploader(key="corpus_upload").set_value(("visits.csv", csv_bytes(labelled_rows(20)), "text/csv")).run()
    assert not app.exception, app.exception
    assert "In use: **visits.csv**" in captions(app) and re.search(r"^20 notes$", captions(app), re.M)
    app.selectbox(key="corpus_label_column").select("finding").run()
    app.slider(key="corpus_layer").set_value(3).run()
    assert not app.exception, app.exception
    assert "20 notes, labels: affirmed, negated" in captions(app)

    leave_and_return(app, "pages/corpus.py")
    assert "In use: **visits.csv**" in captions(app) and "uploaded earlier" in captions(app)
    assert "20 notes, labels: affirmed, negated" in captions(app)
    assert app.selectbox(key="corpus_label_column").value == "finding"
    assert app.slider(key="corpus_layer").value == 3
    app.button(key="go_corpus_embed").click().run()
    assert not app.exception, app.exception
    assert len(app.get("plotly_chart")) >= 1

    other = [{"note": row["text"], "site": row["finding"]} for row in labelled_rows(12)]
    app.file_uploader(key="corpus_upload").set_value(("clinic.jsonl", jsonl_bytes(other), "application/json")).run()
    assert not app.exception, app.exception
    assert "In use: **clinic.jsonl**" in captions(app) and re.search(r"^12 notes$", captions(app), re.M)
    assert app.selectbox(key="corpus_label_column").value == "(none)"  # the earlier file's column is not carried

    leave_and_return(app, "pages/corpus.py")
    assert "In use: **clinic.jsonl**" in captions(app)
    app.button(key="corpus_upload_clear").click().run()
    assert not app.exception, app.exception
    assert "In use" not in captions(app) and not re.search(r"^\d+ notes", captions(app), re.M)
    assert all(box.key != "corpus_label_column" for box in app.selectbox)


def test_an_uploaded_training_set_stays_after_leaving_the_finetune_page(tiny_dir: Path) -> None:
    app = start("pages/finetune.py", model_choice=MODEL_OTHER, model_custom=str(tiny_dir),
                ft_source="Upload a labelled CSV or JSONL", ft_epochs=1, ft_validation=0.5)
    app.file_uploader(key="ft_upload").set_value(("train.jsonl", jsonl_bytes(labelled_rows(60)),
                                                  "application/json")).run()
    assert not app.exception, app.exception
    assert "60 labelled notes: affirmed 30, negated 30" in captions(app)
    leave_and_return(app, "pages/finetune.py")
    assert "In use: **train.jsonl**" in captions(app) and "60 labelled notes" in captions(app)
    assert app.selectbox(key="ft_label_column").value == "finding"
    app.button(key="go_train").click().run()
    assert not app.exception, app.exception
    assert "rest on 30 held-out validation notes" in captions(app)
    assert not any("uncertain" in warning.value for warning in app.warning)  # 30 notes: no warning
