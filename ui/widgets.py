"""Widgets the pages share: progress bars, per-note choices, the part of a long note, knocked-out heads,
downloads, uploaded files kept across pages, buttons that ask once, and errors shown as messages.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Collection, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import streamlit as st

from cbert_core.errors import CbertError
from cbert_core.model.loading import ModelInfo
from cbert_core.run.note_parts import NotePart, default_part, note_parts
from cbert_core.run.trace import Trace
from cbert_core.views.labels import escape, head_name
from ui import state

Report = Callable[[float, str], None]


def progress_bar(label: str) -> tuple[Report, Callable[[], None]]:
    """A progress bar and its clean-up. Updating it is where a stale run gets cancelled."""
    holder = st.empty()
    bar = holder.progress(0.0, text=label)

    def report(fraction: float, message: str) -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=f"{label}: {message}")

    return report, holder.empty


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show a cbert_core error as a message (never a traceback) and stop the page."""
    try:
        yield
    except CbertError as problem:
        st.error(str(problem), icon=":material/warning:")
        st.stop()


def note_choice(name: str, scope: Hashable, default: Any, options: Collection[Any] | None = None) -> str:
    """The widget key for a choice that belongs to one note (a token, a word, a [MASK], a part of the note).

    Draw the widget with this key, ``persist_state="session"`` and no ``index``/``default`` of its own.
    While ``scope`` (the note, and whatever else the choice depends on) stays the same, the user's
    choice is kept, across reruns and page switches; when it changes (another note), the choice
    goes back to ``default``, written through session state, which also tells the browser.
    ``options``, if given, replaces a kept value that is no longer among them (a list keeps the
    members that still are).

    Streamlit keeps the metadata of every widget a session has drawn, its ``format_func``
    included, until the tab closes: pass ``format_func`` as a bound method of small data
    (``labels.__getitem__``), never a lambda written in the page, which would hold all of the
    page's variables (each note's trace) alive for the whole session.
    """
    scopes: dict[str, Hashable] = st.session_state.setdefault(state.NOTE_CHOICE_SCOPES, {})
    value = st.session_state.get(name)
    if scopes.get(name) != scope or name not in st.session_state:
        value = default
    elif options is not None:
        value = [item for item in value if item in options] if isinstance(value, list) else (
            value if value in options else default)
    else:
        return name
    st.session_state[name] = value
    scopes[name] = scope
    return name


def note_part_picker(trace: Trace, info: ModelInfo, name: str, label: str = "Part of the note") -> NotePart:
    """A window, section or sentence of the note in force (windows are what the model reads at once).

    The choice belongs to the note; the default is :func:`cbert_core.run.note_parts.default_part`.
    """
    parts = note_parts(trace)
    labels = tuple(part.label for part in parts)
    chosen = st.selectbox(
        label, range(len(parts)), format_func=labels.__getitem__, persist_state="session",
        help=f"The model reads at most {info.max_tokens} positions at once, so a longer note is read in "
             "overlapping windows. A section or a sentence runs in the window that holds most of it, with that "
             "window's context, and the views focus on it.",
        key=note_choice(name, trace.key, default_part(trace, parts), options=range(len(parts))))
    return parts[chosen]


def knockout_picker(info: ModelInfo) -> frozenset[tuple[int, int]]:
    """Heads (or whole layers) to knock out, shared by the Predictions and Attribution pages; 0-based pairs."""
    if state.KO_PENDING in st.session_state or state.KO_RELEASE in st.session_state:  # clicked in the head scan
        chosen = set(st.session_state.get(state.KO_HEADS, [])) | {st.session_state.pop(state.KO_PENDING, None)}
        chosen -= {st.session_state.pop(state.KO_RELEASE, None), None}
        st.session_state[state.KO_HEADS] = sorted(chosen)
    names = {head_name(layer, head): (layer, head) for layer in range(info.num_layers)
             for head in range(info.num_heads)}
    layer_names = {layer: f"layer {layer}" for layer in range(1, info.num_layers + 1)}
    with st.expander("Head knockout: compare with some heads switched off", expanded=False):
        st.caption("A knocked-out head's output is zeroed before the layer mixes its heads. Results below then "
                   "show the intact model beside the knocked-out one.")
        columns = st.columns(2)
        heads = columns[0].multiselect("Heads", list(names), key=state.KO_HEADS, persist_state="session")
        layers = columns[1].multiselect("Whole layers", list(layer_names), key=state.KO_LAYERS,
                                        format_func=layer_names.__getitem__, persist_state="session")
    chosen = {names[name] for name in heads if name in names}
    chosen |= {(layer - 1, head) for layer in layers for head in range(info.num_heads)}
    return frozenset(chosen)


def ask_once(label: str, *, key: str, ready: bool, help: str | None = None, primary: bool = False) -> bool:
    """True when a long computation may run: its result is ready, or the user just clicked ``label``.

    The button is drawn only while the result is missing, and the click reruns the page, so the
    button does not linger above the result it asked for.
    """
    if ready:
        return True
    if st.session_state.pop(f"{key}::clicked", False):
        return True
    if st.button(label, key=key, help=help, type="primary" if primary else "secondary"):
        st.session_state[f"{key}::clicked"] = True
        st.rerun()
    return False


def download(label: str, make: Callable[[], bytes], file_name: str, mime: str, key: str) -> None:
    """A download button whose file is made only when clicked (exports can be large).

    Nothing is written on the server: the bytes go straight to the browser. An export
    that cannot be made (too big, a format this machine cannot write) downloads a short
    text file saying why instead of failing.
    """
    def deferred() -> bytes:
        try:
            return make()
        except CbertError as problem:
            return f"This export could not be made: {problem}\n".encode("utf-8")

    st.download_button(label, deferred, file_name=file_name, mime=mime, key=key, on_click="ignore",
                       icon=":material/download:")


@dataclass(frozen=True, kw_only=True)
class KeptFile:
    """The one uploaded file a page works on, held in this session's state (never on disk)."""

    name: str
    data: bytes  # the upload's own bytes (not a copy); at most server.maxUploadSize
    digest: str  # sha256 of data: scopes the choices that depend on the file (its columns)

    @property
    def size_text(self) -> str:
        size = len(self.data)
        return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{max(1, round(size / 1e3))} kB"


def _kept_key(key: str) -> str:
    return f"{key}::kept"


def _take_upload(key: str) -> None:
    """The uploader's file changed: a new file replaces the kept one; removing it (×) clears it."""
    upload = st.session_state.get(key)
    if upload is None:
        st.session_state.pop(_kept_key(key), None)
        return
    data = upload.getvalue()
    st.session_state[_kept_key(key)] = KeptFile(name=upload.name, data=data, digest=hashlib.sha256(data).hexdigest())


def _forget_upload(key: str) -> None:
    st.session_state.pop(_kept_key(key), None)


def kept_upload(label: str, *, key: str, types: list[str]) -> KeptFile | None:
    """A file uploader whose file stays in use after the user leaves the page and comes back.

    Streamlit forgets an uploader's file when a run does not draw it, and an uploader's
    value cannot be set back. So the file in use is held in session state: one per
    uploader, replaced by the next upload, dropped when the user removes it (× in the
    uploader, or *Clear* once the uploader has forgotten it). It holds the upload's bytes
    themselves; nothing is copied per run or written to disk. The page says which file is
    in use.
    """
    st.file_uploader(label, type=types, key=key, on_change=_take_upload, args=(key,))
    kept: KeptFile | None = st.session_state.get(_kept_key(key))
    if kept is None:
        return None
    in_use = f"In use: **{escape(kept.name)}** ({kept.size_text})"
    if st.session_state.get(key) is not None:
        st.caption(f"{in_use}. Upload another file to replace it, or remove it with × above.")
        return kept
    columns = st.columns([6, 1], vertical_alignment="center")
    columns[0].caption(f"{in_use}, uploaded earlier. Upload another file to replace it, or clear it.")
    columns[1].button("Clear", key=f"{key}_clear", on_click=_forget_upload, args=(key,), icon=":material/delete:")
    return kept
