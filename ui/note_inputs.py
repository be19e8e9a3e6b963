"""The sidebar's note box: an example, a pasted note or an uploaded .txt file.

Light on purpose (no torch, no transformers): the entry script draws it right after the navigation,
so the note box is on screen within moments of a cold start while the model loads.
"""

from __future__ import annotations

import streamlit as st

from cbert_core.text.examples import DEFAULT_EXAMPLE, EXAMPLE_NOTES
from ui import state

UPLOAD_LIMIT_BYTES = 2_000_000  # a .txt note; collections go through the Corpus page


def _load_example() -> None:
    choice = st.session_state.get(state.EXAMPLE_CHOICE)
    if choice in EXAMPLE_NOTES:
        st.session_state[state.NOTE_TEXT] = EXAMPLE_NOTES[choice]


def _load_upload() -> None:
    upload = st.session_state.get(state.NOTE_UPLOAD)
    if upload is None:
        return
    data = upload.getvalue()
    if len(data) > UPLOAD_LIMIT_BYTES:
        st.session_state[state.UPLOAD_ERROR] = (
            f"{upload.name} is {len(data) / 1e6:.1f} MB; a note can be at most {UPLOAD_LIMIT_BYTES / 1e6:.0f} MB. "
            "Upload a single note (for collections use the Corpus page).")
        return
    try:
        st.session_state[state.NOTE_TEXT] = data.decode("utf-8-sig")
        st.session_state[state.UPLOAD_ERROR] = None
    except UnicodeDecodeError:
        st.session_state[state.UPLOAD_ERROR] = (f"{upload.name} is not UTF-8 text. Save it as UTF-8 (plain text) "
                                                "and upload it again.")


def note_inputs() -> str:
    """Draw the note box, the examples and the uploader in the sidebar; return the note in force."""
    st.session_state.setdefault(state.NOTE_TEXT, EXAMPLE_NOTES[DEFAULT_EXAMPLE])
    if state.PENDING_NOTE in st.session_state:  # opened from the Corpus page on the last run
        st.session_state[state.NOTE_TEXT] = st.session_state.pop(state.PENDING_NOTE)
    st.sidebar.markdown("### Note")
    st.sidebar.selectbox("Example notes", ["(choose an example)", *EXAMPLE_NOTES], key=state.EXAMPLE_CHOICE,
                         on_change=_load_example)
    st.sidebar.text_area("Clinical note", key=state.NOTE_TEXT, height=220, persist_state="session",
                         help="Paste a note; type [MASK] where the model should fill in a word. "
                              "Press Ctrl+Enter (or click outside) to apply.")
    st.sidebar.file_uploader("...or upload a .txt note", type=["txt"], key=state.NOTE_UPLOAD, on_change=_load_upload)
    if st.session_state.get(state.UPLOAD_ERROR):
        st.sidebar.error(st.session_state[state.UPLOAD_ERROR], icon=":material/warning:")
    return st.session_state[state.NOTE_TEXT]


def open_note(text: str) -> None:
    """Make ``text`` the note in force (from another page) and show it on the Note page."""
    st.session_state[state.PENDING_NOTE] = text
    st.switch_page("pages/note.py")
