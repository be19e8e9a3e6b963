"""What the server computes once and shares between sessions, and the one way analyses are cached.

Models, note plans, traces, "Inside the model" walks and analyses live in bounded, thread-safe
LRU caches (:class:`cbert_core.serving.cache.ResultCache`) held by ``st.cache_resource``: one
copy for every session, oldest dropped first, nothing pickled, nothing written to disk.

:func:`computed` is the one cache mechanism for analyses. Its key follows from the call itself:
the function, what it runs on (a model by its key, a note plan or a trace by theirs, a result of
another cached analysis by that analysis's key) and its keyword arguments. A page never builds a
key by hand, so a result is never shown for settings it was not computed with.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import numpy as np
import streamlit as st

from cbert_core.model.loading import (
    LoadedModel,
    Resolution,
    load_model,
    load_tokenizer,
    parse_spec,
    resolve_default_model,
)
from cbert_core.progress import Progress
from cbert_core.run.inside_capture import InsideTrace, inside_trace
from cbert_core.run.plan import NotePlan, RunOptions, plan_note, plan_notes
from cbert_core.run.trace import Trace, trace, trace_budget
from cbert_core.run.worker_requests import AnalysisRequest, InsideRequest, TraceRequest
from cbert_core.serving.cache import ResultCache, payload_bytes
from cbert_core.serving.collector import set_aside_long_lived
from cbert_core.serving.scheduler import Scheduler, Turn, default_slots
from cbert_core.serving.speed import Estimate, Passes, SpeedBook
from cbert_core.serving.status import ServerStatus, server_status
from cbert_core.serving.worker_pool import WorkerMode, WorkerPool, worker_mode
from ui.audit import audited
from ui.widgets import Report, progress_bar

ANALYSIS_CACHE_BYTES = 2**30  # projections, statistics, attributions... shared by all sessions
TRACE_CACHE_BYTES = 3 * 2**30
INSIDE_CACHE_BYTES = 2**30
SCHEDULER_SWITCH = "CBERT_SCHEDULER"  # "off": no turns (every session's work runs at once)
SLOTS_SETTING = "CBERT_MODEL_SLOTS"  # pieces of long model work at once (default: the cores)
WORKERS_SETTING = "CBERT_MODEL_WORKERS"  # auto (default), always or off: short model work in worker processes


@st.cache_resource(show_spinner=False)
def model_cache() -> ResultCache[LoadedModel]:
    return ResultCache(max_items=3)


@st.cache_resource(show_spinner=False)
def plan_cache() -> ResultCache[NotePlan]:
    return ResultCache(max_items=64)


@st.cache_resource(show_spinner=False)
def collection_plan_cache() -> ResultCache[tuple[NotePlan, ...]]:
    return ResultCache(max_items=4)


@st.cache_resource(show_spinner=False)
def trace_cache() -> ResultCache[Trace]:
    return ResultCache(max_items=32, max_bytes=TRACE_CACHE_BYTES, sizeof=lambda value: value.nbytes)


@st.cache_resource(show_spinner=False)
def inside_cache() -> ResultCache[InsideTrace]:
    return ResultCache(max_items=6, max_bytes=INSIDE_CACHE_BYTES, sizeof=lambda value: value.nbytes)


@st.cache_resource(show_spinner=False)
def analysis_cache() -> ResultCache[Any]:
    return ResultCache(max_items=256, max_bytes=ANALYSIS_CACHE_BYTES, sizeof=payload_bytes)


@st.cache_resource(show_spinner=False)
def speed_book() -> SpeedBook:
    """Measured speed of each model on this server (shared by every session), for time estimates."""
    return SpeedBook()


@st.cache_resource(show_spinner=False)
def scheduler() -> Scheduler:
    """The one queue of model work for every session on this server."""
    if os.environ.get(SCHEDULER_SWITCH, "").strip().lower() == "off":
        return Scheduler(None)
    return Scheduler(model_slots(), express=True)


def model_slots() -> int:
    """Pieces of long model work at once (``CBERT_MODEL_SLOTS``, default the cores)."""
    slots = os.environ.get(SLOTS_SETTING, "").strip()
    return int(slots) if slots else default_slots()


@st.cache_resource(show_spinner=False)
def worker_pool() -> WorkerPool:
    """Model worker processes for this server (:mod:`cbert_core.serving.worker_pool`): per model, one per slot
    for short work and, once long work comes, one on one torch thread for it, at the lowest priority."""
    pool = WorkerPool(model_slots(), long_size=1, long_threads=1)
    atexit.register(pool.close)
    return pool


@st.cache_resource(show_spinner=False)
def workers_mode() -> WorkerMode:
    """``CBERT_MODEL_WORKERS`` read once per server.

    Raises:
        ValueError: a value other than auto, always or off.
    """
    try:
        return worker_mode(os.environ.get(WORKERS_SETTING))
    except ValueError as problem:
        raise ValueError(f"{WORKERS_SETTING}: {problem}") from problem


def may_have_workers(loaded: LoadedModel) -> bool:
    """Whether ``loaded``'s work may go to worker processes (see :func:`in_a_worker`), so that a request for
    them is worth building."""
    return (workers_mode() != "off" and loaded.device.type == "cpu"
            and model_cache().get(loaded.info.spec) is loaded)


def in_a_worker(loaded: LoadedModel, request: TraceRequest | InsideRequest | AnalysisRequest,
                progress: Progress | None = None) -> Any | None:
    """``request`` answered by a worker process with its own copy of ``loaded``, or None: run it here.

    ``progress`` (the session's step of its turn) is told the work's progress reports as they come: the turn
    pauses there as it would for work run here, and a session that moved on stops the work in the worker.
    Long work (a trace of several windows, an analysis given ``passes``) has workers of its own, at a lower
    CPU priority, started at the first long request: short pages get the cores first.

    ``CBERT_MODEL_WORKERS``: ``auto`` starts the workers of a model's lane (short or long work) the first
    time such work overlaps other model work on this server (alone, one session's work never waits for the
    interpreter lock, and the workers' memory is not spent); ``always`` starts both lanes at the first
    request; ``off`` never does. Only a
    model this server loaded from its spec, on the CPU, has workers: a model held only in memory (one being
    fine-tuned) cannot be loaded by another process, and a GPU would hold one copy per worker.
    """
    if not may_have_workers(loaded):
        return None
    if workers_mode() == "always":
        for long in (False, True):
            worker_pool().start(loaded.info.spec, loaded.info.key, long=long)
    elif scheduler().state().running > 1:
        worker_pool().start(loaded.info.spec, loaded.info.key, long=request.long)
    return worker_pool().answer(loaded.info.spec, request, progress, long=request.long)


def waiting_text(ahead: int) -> str:
    """What a waiting session's progress bar says."""
    return f"waiting for the shared model, {ahead} {'analysis' if ahead == 1 else 'analyses'} ahead of yours"


@contextlib.contextmanager
def model_turn(report: Report) -> Iterator[tuple[Turn, Report]]:
    """A turn on the shared model for this session's work, and the progress callback to give that work.

    Work starts at once; at its first step before the end (long work) it joins the queue for a slot, and
    at later steps lets waiting sessions go first (:class:`cbert_core.serving.scheduler.Scheduler`, express
    lane). While the session waits, ``report`` shows how many analyses are ahead; updating it is also
    where Streamlit stops a run whose input changed or whose browser went away, which withdraws it from
    the queue.
    """
    shown = [0.0, ""]  # the last fraction and message, kept while waiting in a pause

    def waiting(ahead: int) -> None:
        report(shown[0], waiting_text(ahead))

    with scheduler().turn(waiting) as turn:
        def step(fraction: float, message: str) -> None:
            shown[:] = [fraction, message]
            report(fraction, message)
            if fraction < 1.0:  # the last step's report ends the work: nothing to wait for
                waited = turn.paused_s
                turn.pause()
                if turn.paused_s > waited:  # it waited: the bar goes back to the work's own message
                    report(fraction, message)

        yield turn, step


@st.cache_resource(show_spinner="Deciding which model to start with...")
def default_resolution() -> Resolution:
    """Decided once per server start; bounded to a few seconds when offline."""
    return resolve_default_model()


def get_model(spec_text: str) -> LoadedModel:
    """The loaded model for ``spec_text`` (shared across sessions; loads once, with a progress bar)."""
    spec = parse_spec(spec_text)
    found = model_cache().get(spec)
    if found is not None:
        return found
    report, done = progress_bar(f"Loading {spec.label}")

    def load() -> LoadedModel:
        loaded = load_model(spec, progress=report)
        set_aside_long_lived()  # the model stays: later full collections need not walk its objects
        return loaded

    try:  # sessions that wait for another's load get its model without collecting again
        return model_cache().get_or_compute(spec, load)
    finally:
        done()


@st.cache_resource(show_spinner="Loading the tokenizer...", max_entries=4)
def get_tokenizer(spec_text: str) -> Any:
    """Only a checkpoint's tokenizer (for comparisons), shared across sessions."""
    return load_tokenizer(spec_text)


def get_plan(loaded: LoadedModel, note: str, options: RunOptions) -> NotePlan:
    """The note planned for ``loaded``: tokenized, segmented and windowed once per (model, note, casing,
    overlap, length limit); precision and knocked-out heads ride along. A note whose trace would not fit
    in memory is refused before it is segmented."""
    base = RunOptions(lowercase=options.lowercase, overlap=options.overlap, max_chars=options.max_chars)
    key = (loaded.info.key, note, base)
    plan = plan_cache().get_or_compute(key, lambda: plan_note(loaded, note, base, budget=trace_budget(loaded)))
    return plan.with_options(precision=options.precision, knocked_out=options.knocked_out)


def get_collection_plans(loaded: LoadedModel, texts: tuple[str, ...], options: RunOptions) -> tuple[NotePlan, ...]:
    """Every note of a collection planned for ``loaded`` with the sidebar's casing and overlap (a collection
    was bounded by its own limits when it was read), once per model and collection, with a progress bar."""
    base = RunOptions(lowercase=options.lowercase, overlap=options.overlap, max_chars=2**62)
    digest = hashlib.sha256(repr(texts).encode("utf-8", "surrogatepass")).hexdigest()
    key = (loaded.info.key, digest, base)
    found = collection_plan_cache().get(key)
    if found is not None:
        return found
    with st.spinner(f"Reading {len(texts):,} notes into word pieces and windows..."):
        return collection_plan_cache().get_or_compute(key, lambda: tuple(plan_notes(loaded, texts, base)))


@audited("trace")
def get_trace(loaded: LoadedModel, plan: NotePlan, *, label: str = "Running the note through the model",
              capture_qk: bool = False) -> Trace:
    """The trace of ``plan`` (computed once per plan and captured sites), with a progress bar; its time is
    recorded for estimates."""
    key = ("trace", plan.key, capture_qk)
    found = trace_cache().get(key)
    if found is not None:
        return found
    report, done = progress_bar(label)

    def measured(result: Trace, seconds: float) -> None:
        windows = Passes(forward=tuple((window.size + 2, 1) for window in result.windows))
        speed_book().record(loaded.info.key, plan.options.precision, "trace", windows, seconds)

    def run() -> Trace:
        with model_turn(report) as (turn, step):
            def compute() -> Trace:
                found = in_a_worker(loaded, TraceRequest.of(plan, capture_qk=capture_qk), step)
                return trace(loaded, plan, capture_qk=capture_qk, progress=step) if found is None else found

            return timed(compute, working(measured, turn))

    try:
        return trace_cache().get_or_compute(key, run)
    finally:
        done()


@audited("inside walk")
def get_inside(loaded: LoadedModel, plan: NotePlan, window: int) -> InsideTrace:
    """The exact float32 walk of one window for the "Inside the model" page (computed on that page only)."""
    key = ("inside", plan.key, window)
    found = inside_cache().get(key)
    if found is not None:
        return found
    report, done = progress_bar("Walking the note through every layer")

    def run() -> InsideTrace:
        with model_turn(report):
            found = in_a_worker(loaded, InsideRequest.of(plan, window))
            return inside_trace(loaded, plan, window=window) if found is None else found

    try:
        return inside_cache().get_or_compute(key, run)
    finally:
        done()


def timed(compute: Callable[[], Any], record: Callable[[Any, float], None] | None) -> Any:
    """``compute()``, then ``record(its result, the seconds it took)``."""
    started = time.perf_counter()
    result = compute()
    if record is not None:
        record(result, time.perf_counter() - started)
    return result


def working(record: Callable[[Any, float], None] | None, turn: Turn) -> Callable[[Any, float], None] | None:
    """``record`` told the seconds of work only (time spent paused for other sessions left out)."""
    if record is None:
        return None
    return lambda result, seconds: record(result, max(seconds - turn.paused_s, 0.0))


def _key_part(value: Any) -> Hashable:
    """What stands for one input or argument of a cached analysis in its key."""
    if isinstance(value, LoadedModel):
        return ("model", value.info.key)
    if isinstance(value, NotePlan):
        return ("plan", value.key)
    if isinstance(value, Trace):
        return ("trace", value.key)
    if isinstance(value, (list, tuple)):
        return tuple(_key_part(item) for item in value)
    if not isinstance(value, (str, int, float, bool, type(None), frozenset)):
        derived = analysis_cache().key_of(value)  # a result of another cached analysis (arrays included)
        if derived is not None:
            return ("result", derived)
    if isinstance(value, np.ndarray):
        raise TypeError("a numpy array that is not a cached result cannot be part of an analysis key")
    hash(value)  # a TypeError here names an argument that cannot be part of a key
    return value


def analysis_key(function: Callable[..., Any], inputs: tuple[Any, ...], arguments: dict[str, Any]) -> tuple:
    """The cache key of ``function(*inputs, **arguments)``."""
    return (function.__module__, function.__qualname__, tuple(_key_part(value) for value in inputs),
            tuple(sorted((name, _key_part(value)) for name, value in arguments.items())))


@audited()
def computed(function: Callable[..., Any], *inputs: Any, label: str, passes: Passes | None = None,
             progress: bool = True, measure: Callable[[Any, float], None] | None = None, **arguments: Any) -> Any:
    """``function(*inputs, progress=..., **arguments)``, computed once for every session.

    Args:
        inputs: what it runs on (model, note plan, trace, an earlier result).
        label: what the progress bar says while it runs.
        passes: what it runs through the model (long work): its time is then recorded for estimates.
        progress: whether ``function`` takes a ``progress`` callback.
        measure: told (result, seconds) after a computation, for estimates of other kinds of work.

    An analysis that runs a model (one among ``inputs`` or ``arguments``) runs in a turn on the shared model
    (:func:`model_turn`): the bar says how many analyses are ahead while it waits, and work that reports
    progress lets waiting sessions go first between its steps. One that only reads earlier results (a
    trace's head statistics, a projection of stored states) runs at once: it never queues behind model work.
    A changed input cancels the run (Streamlit interrupts it at the next progress update, or while it
    waits); nothing half-done is cached. Model work runs in a model worker process when the model has
    workers and the inputs can travel there (:func:`in_a_worker`, :class:`AnalysisRequest`: not another
    model's, not a trace); work given ``passes`` counts as long work there. Otherwise it runs here.
    """
    key = analysis_key(function, inputs, arguments)
    cache = analysis_cache()
    found = cache.get(key)
    if found is not None:
        return found
    report, done = progress_bar(label)
    measured = measure if passes is None else (lambda _result, seconds: record_speed(inputs, passes, seconds))

    def run() -> Any:
        loaded = model_among((inputs, tuple(arguments.values())))
        if loaded is None:
            extra = {"progress": report} if progress else {}
            return timed(lambda: function(*inputs, **extra, **arguments), measured)
        with model_turn(report) as (turn, step):
            extra = {"progress": step} if progress else {}

            def compute() -> Any:
                request = None if not may_have_workers(loaded) else AnalysisRequest.of(
                    loaded, function, inputs, arguments, reports_progress=progress, long=passes is not None)
                found = None if request is None else in_a_worker(loaded, request, step)
                return function(*inputs, **extra, **arguments) if found is None else found

            return timed(compute, working(measured, turn))

    try:
        return cache.get_or_compute(key, run)
    finally:
        done()


def model_among(inputs: Any) -> LoadedModel | None:
    """The first loaded model among ``inputs`` (or inside a list or tuple of them), if any."""
    if isinstance(inputs, LoadedModel):
        return inputs
    if isinstance(inputs, (list, tuple)):
        return next((found for value in inputs if (found := model_among(value)) is not None), None)
    return None


def is_computed(function: Callable[..., Any], *inputs: Any, **arguments: Any) -> bool:
    """Whether :func:`computed` would find this result without running it."""
    return analysis_key(function, inputs, arguments) in analysis_cache()


def record_speed(inputs: tuple[Any, ...], passes: Passes, seconds: float) -> None:
    """Record how long ``passes`` took with the model (and the plan's precision) among ``inputs``."""
    loaded = next((value for value in inputs if isinstance(value, LoadedModel)), None)
    plan = next((value for value in inputs if isinstance(value, NotePlan)), None)
    if loaded is not None:
        precision = plan.options.precision if plan is not None else "fp32"
        speed_book().record(loaded.info.key, precision, "gradient" if passes.gradient else "forward", passes, seconds)


def estimate(loaded: LoadedModel, precision: str, passes: Passes, *, traced: bool = False) -> str:
    """"about 25 s (from this model's gradient passes timed on this server at fp32)", or that it is not
    known yet (``traced``: the passes are a trace's)."""
    return estimate_text(speed_book().estimate(loaded.info.key, precision, loaded.info.hidden_size, passes,
                                               traced=traced))


def estimate_text(found: Estimate | None) -> str:
    """An estimate in words, or that the time is measured on the first run."""
    if found is None:
        return "time not known yet (it is measured on the first run)"
    return f"{found.text()} ({found.basis})"


def projection_timer(method: str) -> Callable[[Any, float], None] | None:
    """For :func:`computed`: records how long a UMAP or t-SNE projection took per point (None for PCA: instant)."""
    if method == "pca":
        return None
    return lambda found, seconds: speed_book().record_points(method, len(found.positions), seconds)


def projection_estimate(method: str, points: int) -> str:
    """How long a UMAP or t-SNE projection of ``points`` points should take here, in words."""
    found = speed_book().estimate_points(method, points)
    if found is None:
        return "not run on this server yet: its time is measured on the first run"
    return f"{found.text()} ({found.basis})"


def trace_estimate(loaded: LoadedModel, plan: NotePlan) -> str | None:
    """How long the trace of ``plan`` would take; None when it is cached already."""
    if ("trace", plan.key, False) in trace_cache():
        return None
    windows = Passes(forward=tuple((window.size + 2, 1) for window in plan.windows))
    return estimate(loaded, plan.options.precision, windows, traced=True)


def status() -> ServerStatus:
    """Memory, cached items, model work queued and hooks left on models, for the sidebar's status line."""
    return server_status(model_cache().values(), len(trace_cache()), trace_cache().total_bytes, scheduler().state())


def clear_all() -> None:
    """Empty every shared cache of results (models stay)."""
    for cache in (plan_cache(), collection_plan_cache(), trace_cache(), inside_cache(), analysis_cache()):
        cache.clear()
