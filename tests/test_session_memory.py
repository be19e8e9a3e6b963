"""A session that works through many notes holds none of them: only the shared, bounded caches do.

Streamlit keeps the metadata of every widget a session has drawn (its format_func and
callbacks included) until the session ends. A widget whose identity changed with each note,
or whose format_func closed over the page, kept each note's trace and derived arrays alive
for as long as the browser tab stayed open: the server's memory grew without bound under load.
"""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cbert_core.run.inside_capture import InsideTrace
from cbert_core.run.trace import Trace
from test_app_pages import start
from ui import caches
from ui.sidebar import MODEL_OTHER

NOTES = tuple(f"HISTORY: Patient Qv{index} denies chest pain number {index}. COPD [MASK] exacerbation {index}."
              for index in range(4))

# (page, session-state presets that open the views with per-note choices)
PAGES = [
    ("pages/inside.py", {}),
    ("pages/attention.py", {"att_view": "Rollout"}),
    ("pages/attention.py", {"att_view": "Neuron view"}),
    ("pages/embeddings.py", {}),
    ("pages/predictions.py", {}),
    ("pages/attribution.py", {}),
    ("pages/tokenization.py", {}),
    ("pages/corpus.py", {}),
    ("pages/predictions.py", {"model_choice": "tiny"}),  # fill-mask and word choices need a masked LM
    ("pages/attribution.py", {"model_choice": "tiny"}),
    ("pages/inside.py", {"model_choice": "tiny"}),
]


def _live_notes() -> set[str]:
    """Texts of the traces still alive anywhere in the process once the shared caches are emptied."""
    caches.clear_all()
    gc.collect()
    return {obj.text for obj in gc.get_objects() if type(obj) in (Trace, InsideTrace)}


def _case_name(page: str, state: dict) -> str:
    return f"{page.split('/')[-1][:-3]}-{'-'.join(map(str, state.values())) or 'bundled'}"


@pytest.mark.parametrize(("page", "state"), PAGES, ids=[_case_name(page, state) for page, state in PAGES])
def test_a_session_holds_no_note_once_the_shared_caches_let_go(page: str, state: dict, tiny_dir: Path) -> None:
    if state.get("model_choice") == "tiny":
        state = {**state, "model_choice": MODEL_OTHER, "model_custom": str(tiny_dir)}
    at: AppTest = start(page, note_text=NOTES[0], **state)
    for note in NOTES[1:]:
        at.session_state["note_text"] = note
        at.run()
        assert not at.exception, at.exception
        analysed = {value.text for value in caches.trace_cache().values()}
        assert note in analysed, "the page did not analyse the new note"
    alive = _live_notes() & set(NOTES)
    assert not alive, f"{len(alive)} of the session's {len(NOTES)} notes still held once the caches let go ({page})"


def _first_mask(note: str) -> int:
    """Position of the [MASK] in ``note``'s cached "Inside the model" capture."""
    return next(int(value.mask_positions[0]) for value in caches.inside_cache().values() if value.text == note)


def test_a_choice_for_one_note_stays_with_it_and_the_next_note_starts_from_the_default() -> None:
    at = start("pages/inside.py", note_text=NOTES[0])
    first_mask = _first_mask(NOTES[0])
    assert at.selectbox(key="q_inside").value == first_mask  # the default: the note's [MASK]
    at.selectbox(key="q_inside").select(2).run()
    at.run()
    assert at.selectbox(key="q_inside").value == 2  # kept while the note stays
    second_note = NOTES[1] + " Afebrile."
    at.session_state["note_text"] = second_note
    at.run()
    assert not at.exception, at.exception
    second_mask = _first_mask(second_note)
    assert at.selectbox(key="q_inside").value == second_mask != 2
