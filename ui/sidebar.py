"""The sidebar's model section and run options: which model, which casing, window overlap, precision,
length limit, and the server's status line. Decides this run's :class:`ui.context.Settings`.

The device the model runs on (``CBERT_DEVICE``) is decided once per server: :func:`require_device`
stops the app with a message when it cannot be honoured, and the sidebar says where the model runs.
"""

from __future__ import annotations

import streamlit as st
import torch
from streamlit.delta_generator import DeltaGenerator

from cbert_core.errors import CbertError, DeviceError
from cbert_core.model.device import describe_device, resolve_device
from cbert_core.model.loading import BIO_CLINICALBERT, BUNDLED_NAME, LoadedModel
from cbert_core.model.precision import bf16_is_fast, precisions_for
from cbert_core.run.plan import RunOptions
from cbert_core.serving.scheduler import QueueState
from cbert_core.serving.worker_pool import PoolState
from cbert_core.text.tokens import DEFAULT_MAX_CHARS
from cbert_core.text.windows import DEFAULT_OVERLAP
from ui import state
from ui.caches import analysis_cache, default_resolution, get_model, status, worker_pool, workers_mode
from ui.context import Settings, set_run

MODEL_DEFAULT = "Default (see why below)"
MODEL_BUNDLED = f"Bundled: {BUNDLED_NAME}"
MODEL_CLINICAL = f"Hub: {BIO_CLINICALBERT}"
MODEL_OTHER = "Other hub id or local folder..."


def _model_choice(box: DeltaGenerator) -> str:
    resolution = default_resolution()
    if state.PENDING_MODEL in st.session_state:  # chosen on another page on the last run
        st.session_state[state.MODEL_CHOICE] = MODEL_OTHER
        st.session_state[state.MODEL_CUSTOM] = st.session_state.pop(state.PENDING_MODEL)
    choice = box.selectbox("Model", [MODEL_DEFAULT, MODEL_BUNDLED, MODEL_CLINICAL, MODEL_OTHER],
                           key=state.MODEL_CHOICE, persist_state="session")
    if choice == MODEL_DEFAULT:
        spec_text = resolution.spec.location if resolution.spec.kind != "bundled" else ""
        with box.expander(f"Why {resolution.spec.label}?", expanded=False):
            for step in resolution.steps:
                st.markdown(f"- {step}")
            st.caption(f"Decided in {resolution.seconds:.2f} s.")
        return spec_text
    if choice == MODEL_BUNDLED:
        return ""
    if choice == MODEL_CLINICAL:
        return BIO_CLINICALBERT
    return box.text_input("Hub id or local folder", key=state.MODEL_CUSTOM, persist_state="session",
                          placeholder="/path/to/model or owner/name").strip()


def _casing(box: DeltaGenerator, loaded: LoadedModel) -> bool | None:
    """The casing switch, offered only where the vocabulary is cased; returns the lower-casing to use."""
    info = loaded.info
    if not info.vocab_cased:
        # An uncased vocabulary has no capitals: kept capitals would all become [UNK].
        box.caption("Casing: the text is lower-cased, as this uncased vocabulary needs (it has no capital "
                    "letters, so kept capitals would all be unknown pieces).")
        return True if info.casing_switchable else None
    if not info.casing_switchable:
        box.caption("Casing: fixed by this tokenizer.")
        return None
    keep_case = box.toggle(
        "Keep upper/lower case", key=state.KEEP_CASE, value=not info.tokenizer_lowercases, persist_state="session",
        help="The tokenizer's own setting is "
             f"{'to lower-case the text' if info.tokenizer_lowercases else 'to keep case'}. "
             "The vocabulary is cased ('The' and 'the' are different pieces).")
    if info.casing_mismatch and not keep_case:
        box.info(
            "This vocabulary is **cased**, but the published tokenizer settings **lower-case** the text "
            "(so 'COPD' is read as 'cop ##d' rather than 'CO ##PD'). The model was pretrained on cased "
            "text; switch on *Keep upper/lower case* to read notes as it saw them.", icon=":material/match_case:")
    elif info.casing_mismatch:
        box.info(
            "Case is kept, as the model was pretrained ('COPD' is read as 'CO ##PD'). The published tokenizer "
            "settings would lower-case the text; switch off *Keep upper/lower case* to see what they give.",
            icon=":material/match_case:")
    return not keep_case


def _queue_text(queue: QueueState | None) -> str:
    """The model's turns in the status line: what runs, what waits, and how many may run at once."""
    if queue is None:
        return "no model queue"
    bound = "no limit" if queue.slots is None else f"long work: {queue.slots} at once, short work never waits"
    return f"model work: {queue.running} running, {queue.waiting} waiting ({bound})"


def _workers_text(workers: PoolState) -> str:
    """The model worker processes in the status line."""
    starting = f", {workers.starting} starting" if workers.starting else ""
    memory = f" ({workers.rss_bytes / 2**30:.2f} GB resident)" if workers.ready else ""
    return f"{workers.ready} model worker process{'' if workers.ready == 1 else 'es'}{memory}{starting}"


@st.cache_resource(show_spinner=False)
def server_device() -> torch.device:
    """The device every model of this server runs on (``CBERT_DEVICE``), decided once."""
    return resolve_device()


def require_device() -> torch.device:
    """This server's device; stops the app with a message when ``CBERT_DEVICE`` cannot be honoured
    (``cuda`` on a machine without a GPU, or an unknown value)."""
    try:
        return server_device()
    except DeviceError as problem:
        st.error(f"The app cannot start: {problem}", icon=":material/memory:")
        st.stop()
        raise  # st.stop() raises; this keeps type checkers informed


def require_worker_mode() -> None:
    """Stops the app with a message when ``CBERT_MODEL_WORKERS`` has a value it does not know."""
    try:
        workers_mode()
    except ValueError as problem:
        st.error(f"The app cannot start: {problem}.", icon=":material/memory:")
        st.stop()


def _precision_help(device: torch.device) -> str:
    if device.type == "cuda":
        return ("fp32 is exact. bf16 and fp16 run the model's matrix products under the GPU's autocast in bfloat16 "
                "or float16 (softmax and layer norm stay float32): several times faster on the GPU; attention weights "
                "differ by about 1e-3. Applies to the analysis, the surprise map and attribution.")
    fast_bf16 = bf16_is_fast()
    return ("fp32 is exact. bf16 runs the model's matrix products in bfloat16: 2-3x faster on CPUs with native bf16 "
            "(AVX512-BF16 or AMX), several times slower on others; attention weights differ by about 1e-4. Applies "
            "to the analysis, the surprise map and attribution. This server's CPU: "
            f"{'native bf16, fast here' if fast_bf16 else 'no native bf16, slow here'}. fp16 needs a GPU.")


def _advanced(device: torch.device) -> tuple[int, str, int]:
    """Window overlap, precision (the choices the device has) and the length limit, and the server's status line."""
    with st.sidebar.expander("Advanced"):
        overlap = st.number_input("Window overlap for long notes (tokens)", min_value=0, max_value=256,
                                  value=DEFAULT_OVERLAP, step=16, key=state.OVERLAP, persist_state="session")
        choices = list(precisions_for(device))
        if st.session_state.get(state.PRECISION) not in (None, *choices):
            st.session_state[state.PRECISION] = "fp32"
        precision = st.radio("Precision", choices, key=state.PRECISION, horizontal=True, persist_state="session",
                             help=_precision_help(device))
        max_chars = st.number_input("Longest note accepted (characters)", min_value=1_000, max_value=1_000_000,
                                    value=DEFAULT_MAX_CHARS, step=10_000, key=state.MAX_CHARS, persist_state="session")
        now = status()
        analyses = analysis_cache()
        st.caption(f"Server: {now.rss_bytes / 2**30:.2f} GB resident · {now.models} model(s) · "
                   f"{now.traces} trace(s), {now.trace_bytes / 2**20:.0f} MB cached · "
                   f"{len(analyses)} analyses, {analyses.total_bytes / 2**20:.0f} MB cached · "
                   f"{_queue_text(now.queue)} · {_workers_text(worker_pool().state())} · "
                   f"{now.hooks} hooks left on models", help="For whoever runs the server: memory in use, "
                   "analyses running on the shared model and waiting for a turn, and a check that no analysis "
                   "left a hook on a shared model.")
    return int(overlap), str(precision), int(max_chars)


def model_sidebar(box: DeltaGenerator, note: str) -> Settings | None:
    """Fill the sidebar's model section (``box``, drawn above the note) and the Advanced options; decide
    this run's settings (None: the model could not be loaded, the message is in the sidebar)."""
    box.markdown("### Model")
    device = require_device()
    require_worker_mode()
    spec_text = _model_choice(box)
    loaded = None
    with box:
        try:
            loaded = get_model(spec_text)
        except CbertError as problem:
            st.error(str(problem), icon=":material/warning:")
    lowercase = None
    if loaded is not None:
        info = loaded.info
        box.caption(f"**In force:** {info.name} · {info.family} · {info.num_layers} layers × {info.num_heads} heads "
                    f"· head: {info.head_kind} · {info.max_tokens} positions · runs on "
                    f"{describe_device(loaded.device)}")
        lowercase = _casing(box, loaded)
    overlap, precision, max_chars = _advanced(device)
    settings = None if loaded is None else Settings(
        model_spec=spec_text, note=note,
        options=RunOptions(lowercase=lowercase, overlap=overlap, max_chars=max_chars, precision=precision))
    set_run(loaded, settings)
    return settings


def use_model(spec_text: str) -> None:
    """Switch the sidebar to another model (e.g. a fine-tuned folder) on the next run."""
    st.session_state[state.PENDING_MODEL] = spec_text
    st.rerun()
