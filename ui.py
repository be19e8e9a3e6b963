"""Streamlit glue: the shared sidebar, session state and cached accessors.

Pages call :func:`current` to get the model and the trace of the note in force,
then draw. Models and traces live in thread-safe LRU caches held by
``st.cache_resource`` (one copy shared by every session: both are immutable, a
512-token trace is ~90 MB and ``st.cache_data`` would pickle a copy of it on
every page switch); derived analyses use ``st.cache_data`` keyed by the trace.
No note text is logged or written to disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import streamlit as st

from cbert_core.analyses import attention as attention_analysis
from cbert_core.analyses import projection
from cbert_core.errors import CbertError
from cbert_core.model.loading import (
    BIO_CLINICALBERT,
    BUNDLED_NAME,
    LoadedModel,
    Resolution,
    load_model,
    load_tokenizer,
    parse_spec,
    resolve_default_model,
)
from cbert_core.model.precision import PRECISIONS, bf16_is_fast
from cbert_core.run.encode import prepare_notes
from cbert_core.run.note_parts import NotePart, default_part, note_parts
from cbert_core.run.trace import Trace, trace
from cbert_core.serving.cache import ResultCache, payload_bytes
from cbert_core.serving.speed import Estimate, Passes, SpeedBook
from cbert_core.serving.status import server_status
from cbert_core.text.examples import DEFAULT_EXAMPLE, EXAMPLE_NOTES
from cbert_core.text.tokens import DEFAULT_MAX_CHARS
from cbert_core.text.windows import DEFAULT_OVERLAP

MODEL_DEFAULT = "Default (see why below)"
MODEL_BUNDLED = f"Bundled: {BUNDLED_NAME}"
MODEL_CLINICAL = f"Hub: {BIO_CLINICALBERT}"
MODEL_OTHER = "Other hub id or local folder..."
UPLOAD_LIMIT_BYTES = 2_000_000  # a .txt note; collections go through the Corpus page
ANALYSIS_CACHE_BYTES = 2**30  # projections, statistics, attributions... shared by all sessions, oldest dropped first


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything a trace depends on, read from the sidebar."""

    model_spec: str  # text for parse_spec
    lowercase: bool | None  # None: the tokenizer's default
    note: str
    overlap: int
    precision: str
    max_chars: int


@dataclass(frozen=True, kw_only=True)
class Current:
    loaded: LoadedModel
    trace: Trace
    trace_key: str
    settings: Settings


@st.cache_resource(show_spinner=False)
def tab_icon() -> Any:
    """A small teal cross for the browser tab, drawn in memory (no file, no CDN)."""
    from PIL import Image, ImageDraw

    icon = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(icon)
    draw.rounded_rectangle((2, 2, 62, 62), radius=14, fill=(31, 111, 139, 255))
    draw.rectangle((26, 12, 38, 52), fill="white")
    draw.rectangle((12, 26, 52, 38), fill="white")
    return icon


@st.cache_resource(show_spinner=False)
def _model_cache() -> ResultCache[LoadedModel]:
    return ResultCache(max_items=3)


@st.cache_resource(show_spinner=False)
def _trace_cache() -> ResultCache[Trace]:
    return ResultCache(max_items=32, max_bytes=3 * 2**30, sizeof=lambda value: value.nbytes)


@st.cache_resource(show_spinner=False)
def _inside_cache() -> ResultCache[Any]:
    return ResultCache(max_items=6, max_bytes=2**30, sizeof=lambda value: value.nbytes)


@st.cache_resource(show_spinner=False)
def _analysis_cache() -> ResultCache[Any]:
    return ResultCache(max_items=256, max_bytes=ANALYSIS_CACHE_BYTES, sizeof=payload_bytes)


@st.cache_resource(show_spinner="Deciding which model to start with...")
def default_resolution() -> Resolution:
    """Decided once per server start; bounded to a few seconds when offline."""
    return resolve_default_model()


def progress_reporter(label: str) -> tuple[Callable[[float, str], None], Callable[[], None]]:
    """A progress bar and its clean-up. Updating it is where a stale run gets cancelled."""
    holder = st.empty()
    bar = holder.progress(0.0, text=label)

    def report(fraction: float, message: str) -> None:
        bar.progress(min(max(float(fraction), 0.0), 1.0), text=f"{label}: {message}")

    return report, holder.empty


def get_model(spec_text: str) -> LoadedModel:
    """The loaded model for ``spec_text`` (shared across sessions; loads once)."""
    spec = parse_spec(spec_text)
    cache = _model_cache()
    cached = cache.get(spec)
    if cached is not None:
        return cached
    report, done = progress_reporter(f"Loading {spec.label}")
    try:
        return cache.get_or_compute(spec, lambda: load_model(spec, progress=report))
    finally:
        done()


@st.cache_resource(show_spinner="Loading the tokenizer...", max_entries=4)
def get_tokenizer(spec_text: str) -> Any:
    """Only a checkpoint's tokenizer (for comparisons), shared across sessions."""
    return load_tokenizer(spec_text)


def trace_key(settings: Settings, model_key: str, **extra: Any) -> str:
    """A digest naming one trace (the note text itself never becomes a visible key)."""
    payload = repr((model_key, settings.note, settings.lowercase, settings.overlap, settings.precision,
                    sorted(extra.items())))
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def get_trace(loaded: LoadedModel, settings: Settings, *, label: str = "Running the note through the model",
              **options: Any) -> tuple[Trace, str]:
    """The trace of the note in force (computed once per note, model and settings); ``label`` names its progress."""
    key = trace_key(settings, loaded.info.key, **options)
    cache = _trace_cache()
    cached = cache.get(key)
    if cached is not None:
        return cached, key
    report, done = progress_reporter(label)

    def measured(computed: Trace, seconds: float) -> None:
        windows = Passes(forward=tuple((window.size + 2, 1) for window in computed.windows))
        speed_book().record(loaded.info.key, settings.precision, "trace", windows, seconds)

    try:
        result = cache.get_or_compute(key, lambda: timed(lambda: trace(
            loaded, settings.note, lowercase=settings.lowercase, overlap=settings.overlap,
            precision=settings.precision, max_chars=settings.max_chars, progress=report, **options), measured))
        report(1.0, "summarizing every attention head")
        head_statistics(key, 0, result)  # part of the first analysis, so the Attention page opens at once
    finally:
        done()
    return result, key


def get_inside(loaded: LoadedModel, settings: Settings, window: int = 0) -> Any:
    """The exact float32 walk of one window for the "Inside the model" page (computed on that page only)."""
    from cbert_core.run.inside_capture import inside_trace

    key = ("inside", trace_key(settings, loaded.info.key), window)
    with st.spinner("Walking the note through every layer..."):
        return _inside_cache().get_or_compute(key, lambda: inside_trace(
            loaded, settings.note, lowercase=settings.lowercase, max_chars=settings.max_chars, window=window,
            overlap=settings.overlap))


@st.cache_resource(show_spinner=False)
def speed_book() -> SpeedBook:
    """Measured speed of each model on this server (shared by every session), for time estimates."""
    return SpeedBook()


def timed(compute: Callable[[], Any], record: Callable[[Any, float], None] | None) -> Any:
    """``compute()``, then ``record(its result, the seconds it took)``."""
    started = time.perf_counter()
    result = compute()
    if record is not None:
        record(result, time.perf_counter() - started)
    return result


def cached(key: tuple, compute: Callable[[Callable[[float, str], None]], Any], label: str,
           measured: Callable[[Any, float], None] | None = None) -> Any:
    """A shared, immutable result computed once per key, with a progress bar while it runs.

    A changed input cancels the run (Streamlit interrupts it at the next progress
    update); nothing half-done is cached. ``measured(result, seconds)`` is told how long
    a computation took (not called for a result found in the cache).
    """
    cache = _analysis_cache()
    found = cache.get(key)
    if found is not None:
        return found
    report, done = progress_reporter(label)
    try:
        return cache.get_or_compute(key, lambda: timed(lambda: compute(report), measured))
    finally:
        done()


def is_cached(key: tuple) -> bool:
    return key in _analysis_cache()


def analysis(name: str, now: Current, params: tuple, compute: Callable[[Callable[[float, str], None]], Any],
             label: str, passes: Passes | None = None) -> Any:
    """A model-running analysis (predictions, attributions, scans) of the note in force.

    ``passes`` (what it runs through the model) times the run for later estimates.
    """
    measured = None if passes is None else (lambda _result, seconds: record_speed(now, passes, seconds))
    return cached((name, now.trace_key, params), compute, label, measured)


def record_speed(now: Current, passes: Passes, seconds: float) -> None:
    """Record how long ``passes`` took with the model in force (for later estimates)."""
    record_model_speed(now.loaded, now.settings.precision, passes, seconds)


def record_model_speed(loaded: LoadedModel, precision: str, passes: Passes, seconds: float) -> None:
    """Record how long ``passes`` took with ``loaded`` at ``precision`` (any model, not only the one in force)."""
    kind = "gradient" if passes.gradient else "forward"
    speed_book().record(loaded.info.key, precision, kind, passes, seconds)


def estimate(now: Current, passes: Passes) -> str:
    """"about 25 s (measured on this server: ...)", or a plain word that it will be measured."""
    return model_estimate(now.loaded, now.settings.precision, passes)


def model_estimate(loaded: LoadedModel, precision: str, passes: Passes, *, traced: bool = False) -> str:
    """:func:`estimate` for ``loaded`` at ``precision`` (``traced``: the passes are a trace's)."""
    return estimate_text(speed_book().estimate(loaded.info.key, precision, loaded.info.hidden_size, passes,
                                               traced=traced))


def estimate_text(found: Estimate | None) -> str:
    """An estimate in words, or that the time is measured on the first run."""
    if found is None:
        return "time not known yet (it is measured on the first run)"
    return f"{found.text()} ({found.basis})"


def trace_estimate(loaded: LoadedModel, settings: Settings) -> str | None:
    """How long the trace of ``settings``' note would take with ``loaded``; None when it is cached already.

    Counts the windows without snapping them to sentences (segmenting a long note takes a while).
    """
    if trace_key(settings, loaded.info.key) in _trace_cache():
        return None
    try:
        (note,) = prepare_notes(loaded, [settings.note], lowercase=settings.lowercase, overlap=settings.overlap,
                                max_chars=settings.max_chars)
    except CbertError:
        return None
    windows = Passes(forward=tuple((window.size + 2, 1) for window in note.windows))
    return model_estimate(loaded, settings.precision, windows, traced=True)


def has_analysis(name: str, now: Current, params: tuple) -> bool:
    return is_cached((name, now.trace_key, params))


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


NOTE_CHOICES = "note_choices"  # {widget key: (scope, value)}: per-note choices, kept while the note stays


def note_choice_key(name: str, scope: Hashable, default: Any, options: Collection[Any] | None = None) -> str:
    """The widget key for a choice that belongs to one note (a token, a word, a [MASK]).

    Streamlit keeps the metadata of every widget a session has drawn, its ``format_func``
    included, until the browser tab closes. A key that changed with each note therefore
    kept every earlier note's page, trace and arrays alive for the whole session. This key
    stays the same; the value belongs to ``scope`` (the trace key, plus whatever else the
    choice depends on):

    * while the scope stays, the user's choice is kept: across reruns, across runs that
      stopped before drawing the widget (an Explain button waiting to be clicked) and
      across page switches;
    * when the scope changes (another note), the choice goes back to ``default``.

    The value is written through session state on every run, before the widget is drawn.
    That is what tells the browser: a widget that was not drawn on the last run comes back
    in the browser at its first option while the server still holds the old value, and
    the next click then sends the first option (the counterfactual edit changed the
    note's first word instead of the chosen one). Give the widget no ``index`` or
    ``default`` of its own. ``options``, if given, drops a kept value that is no longer
    among them (a list value keeps the members that still are).

    Pass ``format_func`` as a bound method of small data (``labels.__getitem__``), never a
    lambda written in the page: a page's functions hold all of that page's variables.
    """
    remembered: dict[str, tuple[Hashable, Any]] = st.session_state.setdefault(NOTE_CHOICES, {})
    kept = remembered.get(name)
    value = default
    if kept is not None and kept[0] == scope:
        value = st.session_state[name] if name in st.session_state else kept[1]
        if options is not None:
            if isinstance(value, list):
                value = [item for item in value if item in options]
            elif value not in options:
                value = default
    st.session_state[name] = value
    remembered[name] = (scope, value)
    return name


def note_part_picker(now: Current, name: str, label: str = "Part of the note") -> NotePart:
    """A window, section or sentence of the note in force (windows are what the model reads at once).

    The choice belongs to the note; the default is :func:`cbert_core.run.note_parts.default_part`.
    """
    parts = note_parts(now.trace)
    labels = tuple(part.label for part in parts)
    help_text = ("The model reads at most "
                 f"{now.loaded.info.max_tokens} positions at once, so a longer note is read in overlapping windows. "
                 "A section or a sentence runs in the window that holds most of it, with that window's context, "
                 "and the views focus on it.")
    chosen = st.selectbox(label, range(len(parts)), format_func=labels.__getitem__, help=help_text,
                          key=note_choice_key(name, now.trace_key, default_part(now.trace, parts),
                                              options=range(len(parts))))
    return parts[chosen]


def open_note(text: str) -> None:
    """Make ``text`` the note in force (from another page) and show it on the Note page."""
    st.session_state["pending_note"] = text
    st.switch_page("pages/note.py")


def use_model(spec_text: str) -> None:
    """Switch the sidebar to another model (e.g. a fine-tuned folder) on the next run."""
    st.session_state["pending_model"] = spec_text
    st.rerun()


def knockout_picker(info: Any) -> frozenset[tuple[int, int]]:
    """Heads (or whole layers) to knock out, shared by the Predictions and Attribution pages."""
    from cbert_core.views.labels import head_name

    if "ko_pending" in st.session_state or "ko_release" in st.session_state:  # clicked in the scan on the last run
        chosen = set(st.session_state.get("ko_heads", [])) | {st.session_state.pop("ko_pending", None)}
        chosen -= {st.session_state.pop("ko_release", None), None}
        st.session_state["ko_heads"] = sorted(chosen)
    names = {head_name(layer, head): (layer, head) for layer in range(info.num_layers)
             for head in range(info.num_heads)}
    with st.expander("Head knockout: compare with some heads switched off", expanded=False):
        st.caption("A knocked-out head's output is zeroed before the layer mixes its heads. Results below then "
                   "show the intact model beside the knocked-out one.")
        columns = st.columns(2)
        heads = columns[0].multiselect("Heads", list(names), key="ko_heads")
        layers = columns[1].multiselect("Whole layers", list(range(1, info.num_layers + 1)), key="ko_layers",
                                        format_func=lambda layer: f"layer {layer}")
    chosen = {names[name] for name in heads if name in names}
    chosen |= {(layer - 1, head) for layer in layers for head in range(info.num_heads)}
    return frozenset(chosen)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show a cbert_core error as a message (never a traceback) and stop the page."""
    try:
        yield
    except CbertError as problem:
        st.error(str(problem), icon=":material/warning:")
        st.stop()


def require_entry_script() -> None:
    """Make sure the page runs inside app.py's navigation, not as a legacy stand-alone page.

    Streamlit runs a file from ``pages/`` on its own (the pre-``st.navigation``
    behaviour) when the very first request after a server start asks for that
    page's URL. Switch the server to app.py's navigation and run again.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def current(**trace_options: Any) -> Current:
    """Model and trace for the page; stops the page with a message on a user error."""
    require_entry_script()
    settings = st.session_state.get("settings")
    if settings is None:
        st.stop()
    with user_errors():
        loaded = get_model(settings.model_spec)
        result, key = get_trace(loaded, settings, **trace_options)
    return Current(loaded=loaded, trace=result, trace_key=key, settings=settings)


# ---------------------------------------------------------------- cached analyses

@st.cache_data(max_entries=64, show_spinner=False)
def head_statistics(key: str, window: int, _trace: Trace) -> attention_analysis.HeadStatistics:
    return attention_analysis.head_statistics(_trace, window)


@st.cache_data(max_entries=32, show_spinner=False)
def rollout(key: str, window: int, _trace: Trace) -> Any:
    return attention_analysis.rollout(_trace, window)


@st.cache_data(max_entries=64, show_spinner=False)
def word_attention(key: str, window: int, layer: int, head: int, _trace: Trace) -> attention_analysis.WordAttention:
    return attention_analysis.word_attention(_trace, window, layer, head)


@st.cache_data(max_entries=64, show_spinner=False)
def projection_of(key: str, layer: int, method: str, _trace: Trace) -> projection.Projection:
    if method == "pca":
        return projection.project(_trace, layer, "pca")
    report, done = progress_reporter(f"Computing {projection.METHOD_NAMES[method]}")
    try:
        return timed(lambda: projection.project(_trace, layer, method, progress=report),  # type: ignore[arg-type]
                     lambda found, seconds: speed_book().record_points(method, len(found.positions), seconds))
    finally:
        done()


def projection_estimate(method: str, points: int) -> str:
    """How long a UMAP or t-SNE projection of ``points`` points should take here, in words."""
    found = speed_book().estimate_points(method, points)
    if found is None:
        return "not run on this server yet: its time is measured on the first run"
    return f"{found.text()} ({found.basis})"


@st.cache_data(max_entries=32, show_spinner=False)
def trajectories(key: str, positions: tuple[int, ...], _trace: Trace) -> projection.Trajectories:
    import numpy as np

    return projection.trajectories(_trace, np.asarray(positions, dtype=np.int64))


@st.cache_data(max_entries=32, show_spinner=False)
def note_embeddings(key: str, _trace: Trace) -> projection.NoteEmbeddings:
    return projection.note_embeddings(_trace)


# ---------------------------------------------------------------- sidebar

# Widget keys whose values survive page switches. Streamlit drops a widget's value
# when a run does not draw the widget (any other page); writing the value back at
# the start of every run keeps it. Only choice widgets can be written (see
# CHOICE_VALUE_KINDS). Choices that depend on the note (a token, a word) use keys
# without these prefixes (``note_choice_key``) and are not carried over.
PERSISTENT_PREFIXES = ("att_", "emb_", "inside_", "tok_", "pred_", "attr_", "ko_", "corpus_", "cmp_", "ft_")

# The kinds of value Streamlit records for the widgets whose value session state may set:
# selectbox, radio, slider, number and text inputs, checkbox, toggle, multiselect, pills...
# Left out, because Streamlit refuses a value set for them (StreamlitValueAssignmentNotAllowedError
# when the widget is next drawn): buttons and download buttons ("trigger_value"), file, camera and
# audio inputs ("file_uploader_state_value"), menu buttons and table button columns
# ("string_trigger_value"). Chat inputs and custom components are not choices and are left out too.
# Chart, table and data-editor selections record "string_value" as text inputs do, but hold a
# mapping (their read-only selection or editing state), which a choice never is: that leaves them out.
CHOICE_VALUE_KINDS = frozenset({"bool_value", "int_value", "double_value", "string_value", "int_array_value",
                                "double_array_value", "string_array_value"})


def _widget_value_kind(key: str) -> str | None:
    """The kind of value Streamlit records for the widget last drawn with ``key`` (None: no widget).

    Streamlit keeps a widget's metadata after the widget stops being drawn (another page), so
    this still answers for a choice made on a page that is not showing.
    """
    from streamlit.runtime.state.session_state_proxy import get_session_state

    state = get_session_state()._state  # Streamlit's SessionState (no public accessor; streamlit is pinned)
    widget_id = state.get_widget_id_from_key(key)
    metadata = state.get_widget_metadata(widget_id) if widget_id is not None else None
    return None if metadata is None else metadata.value_type


def is_choice_widget(key: str) -> bool:
    """True when ``key`` belongs to a widget whose value session state may set (a choice)."""
    if _widget_value_kind(key) not in CHOICE_VALUE_KINDS:
        return False
    return not isinstance(st.session_state[key], Mapping)


def defaults(**values: Any) -> None:
    """Initial values of persistent widgets (widgets are then created without ``value=``).

    Widgets that keep their choice across pages get their value from session state
    only; passing a default as well makes Streamlit log a warning on every run.
    """
    for key, value in values.items():
        st.session_state.setdefault(key, value)


def keep_page_choices() -> None:
    """Carry every page's choices (layer, head, view, ...) across page switches.

    Only choice widgets are written back (:func:`is_choice_widget`): buttons, downloads and
    uploaders cannot be, and keys that belong to no widget keep their value anyway. An
    uploaded file is kept by :func:`kept_upload` instead.
    """
    for key in list(st.session_state.keys()):
        if isinstance(key, str) and key.startswith(PERSISTENT_PREFIXES) and is_choice_widget(key):
            st.session_state[key] = st.session_state[key]


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
    st.session_state[_kept_key(key)] = KeptFile(name=upload.name, data=data,
                                                digest=hashlib.sha256(data).hexdigest())


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
    from cbert_core.views.labels import escape

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
    columns[1].button("Clear", key=f"{key}_clear", on_click=_forget_upload, args=(key,),
                      icon=":material/delete:")
    return kept


def _load_example() -> None:
    choice = st.session_state.get("example_choice")
    if choice in EXAMPLE_NOTES:
        st.session_state["note_text"] = EXAMPLE_NOTES[choice]


def _load_upload() -> None:
    upload = st.session_state.get("note_upload")
    if upload is None:
        return
    data = upload.getvalue()
    if len(data) > UPLOAD_LIMIT_BYTES:
        st.session_state["upload_error"] = (
            f"{upload.name} is {len(data) / 1e6:.1f} MB; a note can be at most {UPLOAD_LIMIT_BYTES / 1e6:.0f} MB. "
            "Upload a single note (for collections use the Corpus page).")
        return
    try:
        st.session_state["note_text"] = data.decode("utf-8-sig")
        st.session_state["upload_error"] = None
    except UnicodeDecodeError:
        st.session_state["upload_error"] = (f"{upload.name} is not UTF-8 text. Save it as UTF-8 (plain text) "
                                            "and upload it again.")


def _model_choice() -> str:
    resolution = default_resolution()
    if "pending_model" in st.session_state:  # chosen on another page on the last run
        st.session_state["model_choice"] = MODEL_OTHER
        st.session_state["model_custom"] = st.session_state.pop("pending_model")
    choice = st.sidebar.selectbox("Model", [MODEL_DEFAULT, MODEL_BUNDLED, MODEL_CLINICAL, MODEL_OTHER],
                                  key="model_choice")
    if choice == MODEL_DEFAULT:
        spec_text = resolution.spec.location if resolution.spec.kind != "bundled" else ""
        with st.sidebar.expander(f"Why {resolution.spec.label}?", expanded=False):
            for step in resolution.steps:
                st.markdown(f"- {step}")
            st.caption(f"Decided in {resolution.seconds:.2f} s.")
        return spec_text
    if choice == MODEL_BUNDLED:
        return ""
    if choice == MODEL_CLINICAL:
        return BIO_CLINICALBERT
    return st.sidebar.text_input("Hub id or local folder", key="model_custom",
                                 placeholder="/path/to/model or owner/name").strip()


def _casing(loaded: LoadedModel) -> bool | None:
    """The casing switch, offered only where the vocabulary is cased; returns the lower-casing to use."""
    info = loaded.info
    if not info.vocab_cased:
        # An uncased vocabulary has no capitals: kept capitals would all become [UNK].
        st.sidebar.caption("Casing: the text is lower-cased, as this uncased vocabulary needs (it has no capital "
                           "letters, so kept capitals would all be unknown pieces).")
        return True if info.casing_switchable else None
    if not info.casing_switchable:
        st.sidebar.caption("Casing: fixed by this tokenizer.")
        return None
    keep_case = st.sidebar.toggle(
        "Keep upper/lower case", key="keep_case", value=not info.tokenizer_lowercases,
        help="The tokenizer's own setting is "
             f"{'to lower-case the text' if info.tokenizer_lowercases else 'to keep case'}. "
             "The vocabulary is cased ('The' and 'the' are different pieces).")
    if info.casing_mismatch and not keep_case:
        st.sidebar.info(
            "This vocabulary is **cased**, but the published tokenizer settings **lower-case** the text "
            "(so 'COPD' is read as 'cop ##d' rather than 'CO ##PD'). The model was pretrained on cased "
            "text; switch on *Keep upper/lower case* to read notes as it saw them.", icon=":material/match_case:")
    elif info.casing_mismatch:
        st.sidebar.info(
            "Case is kept, as the model was pretrained ('COPD' is read as 'CO ##PD'). The published tokenizer "
            "settings would lower-case the text; switch off *Keep upper/lower case* to see what they give.",
            icon=":material/match_case:")
    return not keep_case


def sidebar() -> Settings | None:
    """Draw the shared sidebar and store the resulting :class:`Settings` in session state."""
    st.session_state.setdefault("note_text", EXAMPLE_NOTES[DEFAULT_EXAMPLE])
    if "pending_note" in st.session_state:  # opened from the Corpus page on the last run
        st.session_state["note_text"] = st.session_state.pop("pending_note")
    st.sidebar.markdown("### Model")
    spec_text = _model_choice()
    loaded = None
    with st.sidebar:
        try:
            loaded = get_model(spec_text)
        except CbertError as problem:
            st.error(str(problem), icon=":material/warning:")
    lowercase = None
    if loaded is not None:
        info = loaded.info
        st.sidebar.caption(
            f"**In force:** {info.name} · {info.family} · {info.num_layers} layers × {info.num_heads} heads · "
            f"head: {info.head_kind} · {info.max_tokens} positions")
        lowercase = _casing(loaded)

    st.sidebar.markdown("### Note")
    st.sidebar.selectbox("Example notes", ["(choose an example)", *EXAMPLE_NOTES], key="example_choice",
                         on_change=_load_example)
    st.sidebar.text_area("Clinical note", key="note_text", height=220,
                         help="Paste a note; type [MASK] where the model should fill in a word. "
                              "Press Ctrl+Enter (or click outside) to apply.")
    st.sidebar.file_uploader("...or upload a .txt note", type=["txt"], key="note_upload", on_change=_load_upload)
    if st.session_state.get("upload_error"):
        st.sidebar.error(st.session_state["upload_error"], icon=":material/warning:")
    with st.sidebar.expander("Advanced"):
        overlap = st.number_input("Window overlap for long notes (tokens)", min_value=0, max_value=256,
                                  value=DEFAULT_OVERLAP, step=16, key="overlap")
        fast_bf16 = bf16_is_fast()
        precision = st.radio("Precision", list(PRECISIONS), key="precision", horizontal=True,
                             help="fp32 is exact. bf16 runs the model's matrix products in bfloat16: 2-3x faster "
                                  "on CPUs with native bf16 (AVX512-BF16 or AMX), several times slower on others; "
                                  "attention weights differ by about 1e-4. Applies to the analysis, the surprise "
                                  "map and attribution. This server's CPU: "
                                  f"{'native bf16, fast here' if fast_bf16 else 'no native bf16, slow here'}.")
        max_chars = st.number_input("Longest note accepted (characters)", min_value=1_000, max_value=1_000_000,
                                    value=DEFAULT_MAX_CHARS, step=10_000, key="max_chars")
        status = server_status(_model_cache().values(), len(_trace_cache()), _trace_cache().total_bytes)
        st.caption(f"Server: {status.rss_bytes / 2**30:.2f} GB resident · {status.models} model(s) · "
                   f"{status.traces} trace(s), {status.trace_bytes / 2**20:.0f} MB cached · "
                   f"{len(_analysis_cache())} analyses, {_analysis_cache().total_bytes / 2**20:.0f} MB cached · "
                   f"{status.hooks} hooks left on models", help="For whoever runs the server: memory in use "
                   "and a check that no analysis left a hook on a shared model.")
    if loaded is None:
        st.session_state["settings"] = None
        return None
    settings = Settings(model_spec=spec_text, lowercase=lowercase, note=st.session_state["note_text"],
                        overlap=int(overlap), precision=str(precision), max_chars=int(max_chars))
    st.session_state["settings"] = settings
    return settings
