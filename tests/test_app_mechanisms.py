"""AppTest of the Mechanisms page: the pair, the patching scans, the heads that carry the difference knocked out,
the probes, and what the page says for a pair with nothing to explain or a note longer than one window."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from notes import LONG_NOTE
from test_app_pages import charts, start
from ui import state
from ui.sidebar import MODEL_OTHER

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NOTE = "Patient denies chest pain and reports mild cough."
PAGE = "pages/mechanisms.py"


def texts(at: AppTest) -> str:
    return " ".join(str(element.value) for kind in ("markdown", "caption", "info", "error", "warning")
                    for element in at.get(kind))


def test_patching_scans_heads_that_carry_it_knocked_out_and_probes() -> None:
    at = start(PAGE, **{state.NOTE_TEXT: NOTE})
    assert at.text_input(key="q_mech_with").value == "reports"  # the negation cue flipped by default
    assert at.selectbox(key="q_mech_word").value == 1  # "denies"
    assert at.button(key="go_patch")
    at.button(key="go_patch").click().run()
    assert not at.exception, at.exception
    found = charts(at)
    residual = next(spec for key, spec in found.items() if key.startswith("mech_chart_residual"))
    heads = next(spec for key, spec in found.items() if key.startswith("mech_chart_heads"))
    assert len(residual["data"][0]["x"]) == 6 * len(set(residual["data"][0]["x"]))  # 6 layers x positions
    assert any("denies" in str(x) for x in residual["data"][0]["x"])
    assert len(heads["data"][0]["x"]) == 6 * 12 and heads["data"][-1]["name"] == "top heads"
    assert "patched runs in" in texts(at)
    carriers = list(at.dataframe[0].value["head"])
    assert len(carriers) == 3
    at.button(key="mech_knock").click().run()
    assert not at.exception, at.exception
    assert sorted(at.multiselect(key=state.KO_HEADS).value) == sorted(carriers)
    assert all(name in texts(at).split("**Without", 1)[1] for name in carriers)
    assert "of what it was" in texts(at)
    at.button(key="go_probe").click().run()
    assert not at.exception, at.exception
    probe = charts(at)["mech_probe_chart"]
    assert [trace["name"] for trace in probe["data"][:3]] == ["probe", "control task", "selectivity"]
    assert len(probe["data"][0]["x"]) == 7  # the embeddings and 6 layers
    assert "Most selective at" in texts(at)


def test_an_identical_pair_says_there_is_nothing_to_explain() -> None:
    at = start(PAGE, **{state.NOTE_TEXT: NOTE, "mech_mode": "typing it"})
    at.text_area(key="q_mech_typed").set_value(NOTE).run()
    assert not at.exception, at.exception
    assert any("no difference to explain" in error.value for error in at.error)
    assert "Run the scans" not in [button.label for button in at.button]


def test_a_note_longer_than_one_window_is_patched_in_the_window_with_the_edit() -> None:
    note = LONG_NOTE + " Patient denies chest pain."
    at = start(PAGE, **{state.NOTE_TEXT: note})
    assert not at.exception, at.exception
    chosen = at.selectbox(key="q_mech_word")
    chosen.set_value(len(note[:note.rindex("denies")].split())).run()
    assert not at.exception, at.exception
    assert any("patching runs in window" in info.value and "the one that holds the edit" in info.value
               for info in at.info)


def test_a_masked_word_target_on_a_masked_lm(tiny_dir: Path) -> None:
    model = dict(model_choice=MODEL_OTHER, model_custom=str(tiny_dir))
    at = start(PAGE, **{state.NOTE_TEXT: "The patient denies chest pain.", **model})
    assert any("needs a [MASK]" in info.value for info in at.info)
    at = start(PAGE, **{state.NOTE_TEXT: "The patient denies chest [MASK].", **model})
    assert at.selectbox(key="q_mech_target").value
    at.button(key="go_patch").click().run()
    assert not at.exception, at.exception
    assert any(key.startswith("mech_chart_heads") for key in charts(at))
    at.radio(key="mech_direction").set_value("noising")
    at.multiselect(key="mech_scans").set_value(["heads_at"]).run()
    assert at.selectbox(key="q_mech_position").value == 3  # "denies": the word the edit changed
    at.button(key="go_patch").click().run()
    assert not at.exception, at.exception
    found = charts(at)
    assert [key.rsplit("_", 1)[0] for key in found if key.startswith("mech_chart_")] == ["mech_chart_heads_at"]
    assert "carried over at 3 denies" in json.dumps(found)


def test_a_head_or_layer_opened_from_another_page_is_shown_there() -> None:
    at = start(None, **{state.NOTE_TEXT: NOTE})
    at.session_state[state.OPEN_HEAD] = (4, 7)
    at.switch_page("pages/attention.py").run()
    assert not at.exception, at.exception
    assert (at.number_input(key="att_layer").value, at.number_input(key="att_head").value) == (4, 7)
    assert state.OPEN_HEAD not in at.session_state
    at.session_state[state.OPEN_INSIDE_LAYER] = 5
    at.switch_page("pages/inside.py").run()
    assert not at.exception, at.exception
    assert at.number_input(key="inside_layer").value == 5
    assert state.OPEN_INSIDE_LAYER not in at.session_state
