"""Model worker processes: the same answers as in the server's own process, arrays through shared memory,
errors raised where they were asked for, a killed worker replaced, none left behind, no note text written."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from browser_support import process_alive
from cbert_core.analyses.counterfactual import counterfactual
from cbert_core.analyses.knockout_scan import head_importance
from cbert_core.analyses.patching import patch_pair
from cbert_core.analyses.targets import masked_token_target
from cbert_core.analyses.whole_note import explain
from cbert_core.corpus.embeddings import note_embeddings
from cbert_core.errors import TargetError
from cbert_core.model.loading import LoadedModel, ModelSpec, load_model, parse_spec
from cbert_core.run.inside_capture import inside_trace
from cbert_core.run.lazy_attention import WindowAttention
from cbert_core.run.plan import RunOptions, plan_note
from cbert_core.run.trace import trace
from cbert_core.run.worker_requests import MAX_REQUEST_BYTES, AnalysisRequest, InsideRequest, TraceRequest
from cbert_core.serving.status import resident_bytes
from cbert_core.serving.worker_pool import DEFAULT_LONG_NICENESS, WorkerPool, spec_argument, worker_mode
from tiny_models import write_bert

# one torch thread here, as in the workers below, so sums are added up in the same order
pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parent.parent
NOTE = "HISTORY: Patient denies chest pain. COPD [MASK] exacerbation with cough."
LONG_NOTE = " ".join(f"Patient denies chest pain {day}." for day in range(1, 30))  # several of the tiny model's windows


def assert_same(ours: Any, theirs: Any, where: str = "value") -> None:
    """Field by field and array by array (dtype, shape and every number) the same (a record's own time taken
    aside)."""
    if dataclasses.is_dataclass(ours):
        assert type(ours) is type(theirs), where
        for field in dataclasses.fields(ours):
            if field.name == "seconds":  # how long the work took: measured anew on each run
                assert isinstance(getattr(theirs, field.name), float), where
                continue
            assert_same(getattr(ours, field.name), getattr(theirs, field.name), f"{where}.{field.name}")
    elif isinstance(ours, WindowAttention):
        assert_same(ours.full(), theirs.full(), f"{where} (weights recomputed)")
    elif isinstance(ours, np.ndarray):
        assert isinstance(theirs, np.ndarray) and ours.dtype == theirs.dtype and ours.shape == theirs.shape, where
        assert np.array_equal(ours, theirs, equal_nan=ours.dtype.kind == "f"), where
    elif isinstance(ours, (tuple, list)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), where
        for index, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{where}[{index}]")
    elif isinstance(ours, dict):
        assert ours.keys() == theirs.keys(), where
        for key in ours:
            assert_same(ours[key], theirs[key], f"{where}[{key!r}]")
    elif isinstance(ours, float) and np.isnan(ours):
        assert isinstance(theirs, float) and np.isnan(theirs), where
    else:
        assert ours == theirs, where


def wait_until(condition, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture(scope="module")
def tiny_spec(tiny: LoadedModel) -> ModelSpec:
    return tiny.info.spec


@pytest.fixture(scope="module")
def pool(tiny: LoadedModel, tiny_spec: ModelSpec):
    """One worker of the tiny model, on one torch thread as the in-process runs below use."""
    workers = WorkerPool(1, threads=1)
    workers.start(tiny_spec, tiny.info.key)
    assert workers.wait_ready(tiny_spec, 120)
    yield workers
    workers.close()


def test_worker_modes_are_read_strictly() -> None:
    assert [worker_mode(value) for value in ("", None, "AUTO", " always ", "off", "0")] == \
        ["auto", "auto", "auto", "always", "off", "off"]
    with pytest.raises(ValueError, match="'sometimes' is not a worker mode"):
        worker_mode("sometimes")


def test_a_worker_is_told_the_text_that_parses_back_to_its_model(tiny_spec: ModelSpec) -> None:
    for spec in (parse_spec(""), tiny_spec, ModelSpec(kind="hub", location="emilyalsentzer/Bio_ClinicalBERT")):
        assert parse_spec(spec_argument(spec)) == spec


@pytest.mark.parametrize("capture_qk", [False, True])
def test_a_workers_trace_equals_the_trace_run_here(pool: WorkerPool, tiny: LoadedModel, tiny_spec: ModelSpec,
                                                   capture_qk: bool) -> None:
    for options in (RunOptions(), RunOptions(precision="bf16", knocked_out=frozenset({(1, 2)}))):
        plan = plan_note(tiny, NOTE, options)
        theirs = pool.answer(tiny_spec, TraceRequest.of(plan, capture_qk=capture_qk))
        assert theirs is not None, "the worker did not answer"
        ours = trace(tiny, plan, capture_qk=capture_qk)
        assert theirs.key == ours.key and theirs.knocked_out == ours.knocked_out
        assert_same(ours, theirs, "trace")
        # its arrays are read-only views of the shared memory, as a cached record's arrays must be
        assert not theirs.hidden_states.flags.writeable
        with pytest.raises(ValueError):
            theirs.hidden_states[0, 0, 0] = 1


def test_the_pool_counts_its_workers_and_their_memory(pool: WorkerPool, tiny_spec: ModelSpec) -> None:
    state = pool.state()
    [pid] = pool.worker_pids(tiny_spec)
    assert state.ready == 1 and state.starting == 0
    # the worker's own resident memory (torch and the model loaded: far more than nothing), not the server's
    assert state.rss_bytes == pytest.approx(resident_bytes(pid), rel=0.2) and state.rss_bytes > 50 * 2**20


def test_a_workers_walk_equals_the_walk_run_here(pool: WorkerPool, tiny: LoadedModel, tiny_spec: ModelSpec) -> None:
    plan = plan_note(tiny, NOTE)
    theirs = pool.answer(tiny_spec, InsideRequest.of(plan, 0))
    assert theirs is not None
    assert_same(inside_trace(tiny, plan, window=0), theirs, "walk")


@pytest.fixture(scope="module")
def pair(tiny: LoadedModel, tiny_spec: ModelSpec):
    """A worker for short work and one for long work."""
    workers = WorkerPool(1, threads=1)
    workers.start(tiny_spec, tiny.info.key)
    workers.start(tiny_spec, tiny.info.key, long=True)
    assert workers.wait_ready(tiny_spec, 120) and workers.wait_ready(tiny_spec, 120, long=True)
    yield workers
    workers.close()


def test_long_work_has_workers_of_its_own_at_a_lower_priority(pool: WorkerPool, tiny: LoadedModel,
                                                              tiny_spec: ModelSpec) -> None:
    long_plan = plan_note(tiny, LONG_NOTE)
    request = TraceRequest.of(long_plan, capture_qk=False)
    assert len(long_plan.windows) > 1 and request.long
    # the short worker is not lent to long work: without long workers it runs here
    assert pool.answer(tiny_spec, request, long=True) is None
    [short] = pool.worker_pids(tiny_spec)
    assert os.getpriority(os.PRIO_PROCESS, short) == os.getpriority(os.PRIO_PROCESS, 0)
    pool.start(tiny_spec, tiny.info.key, long=True)
    assert pool.wait_ready(tiny_spec, 120, long=True)
    [long] = pool.worker_pids(tiny_spec, long=True)
    assert long != short
    assert os.getpriority(os.PRIO_PROCESS, long) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + DEFAULT_LONG_NICENESS)
    assert pool.state().ready == 2
    # every torch thread of the long worker runs at its priority (they were started after it was lowered)
    threads = [entry.name for entry in os.scandir(f"/proc/{long}/task")]
    assert len(threads) > 1 and {os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in threads} == \
        {os.getpriority(os.PRIO_PROCESS, long)}
    assert_same(trace(tiny, long_plan), pool.answer(tiny_spec, request, long=True), "long trace")
    assert pool.worker_pids(tiny_spec, long=True) == [long]  # it answered, and serves on


def test_the_long_lane_has_its_own_size(tiny: LoadedModel, tiny_spec: ModelSpec) -> None:
    workers = WorkerPool(1, threads=1, long_size=2, long_threads=1)
    try:
        workers.start(tiny_spec, tiny.info.key, long=True)
        assert workers.wait_ready(tiny_spec, 120, long=True)
        assert len(workers.worker_pids(tiny_spec, long=True)) == 2 and workers.worker_pids(tiny_spec) == []
        assert workers.state().ready == 2
    finally:
        workers.close()


def test_long_work_never_waits_for_a_long_worker(pair: WorkerPool, tiny: LoadedModel, tiny_spec: ModelSpec) -> None:
    """While the long worker is busy, the next long request is run by its caller at once (None)."""
    plan = plan_note(tiny, LONG_NOTE)
    inside: list[Any] = []

    def report(_fraction: float, _message: str) -> None:
        if not inside:  # the first window's report: the long worker is busy, waiting for this
            inside.append(pair.answer(tiny_spec, TraceRequest.of(plan, capture_qk=False), long=True))

    assert pair.answer(tiny_spec, TraceRequest.of(plan, capture_qk=False), report, long=True) is not None
    assert inside == [None]


def test_a_long_notes_trace_in_a_worker_reports_each_window_and_equals_the_trace_run_here(
        pair: WorkerPool, tiny: LoadedModel, tiny_spec: ModelSpec) -> None:
    plan = plan_note(tiny, LONG_NOTE)
    here: list[tuple[float, str]] = []
    ours = trace(tiny, plan, progress=lambda fraction, message: here.append((fraction, message)))
    there: list[tuple[float, str]] = []
    theirs = pair.answer(tiny_spec, TraceRequest.of(plan, capture_qk=False),
                         lambda fraction, message: there.append((fraction, message)), long=True)
    assert theirs is not None
    assert there == here and len(there) == len(plan.windows)
    assert_same(ours, theirs, "long trace")


def test_a_session_that_moves_on_stops_the_work_in_the_worker_which_serves_on(
        pair: WorkerPool, tiny: LoadedModel, tiny_spec: ModelSpec) -> None:
    """The progress report raises at the second window (as Streamlit does when the input changed): the trace
    ends in the worker there, the error is raised here, and the same workers answer the next request."""
    plan = plan_note(tiny, LONG_NOTE)
    before = pair.worker_pids(tiny_spec, long=True)
    reports: list[float] = []

    class MovedOn(Exception):
        pass

    def report(fraction: float, _message: str) -> None:
        reports.append(fraction)
        if len(reports) == 2:
            raise MovedOn

    with pytest.raises(MovedOn):
        pair.answer(tiny_spec, TraceRequest.of(plan, capture_qk=False), report, long=True)
    assert len(reports) == 2  # no report after the work was stopped
    assert pair.worker_pids(tiny_spec, long=True) == before
    assert_same(trace(tiny, plan), pair.answer(tiny_spec, TraceRequest.of(plan, capture_qk=False), long=True),
                "the next trace")


def analysis_calls(tiny: LoadedModel) -> dict[str, tuple[Any, tuple[Any, ...], dict[str, Any]]]:
    """The long analyses the pages run (function, inputs, arguments), on the tiny masked-LM."""
    plan = plan_note(tiny, NOTE)
    knocked = plan_note(tiny, NOTE, RunOptions(knocked_out=frozenset({(0, 1)})))
    target = masked_token_target(tiny, "pain")
    start = NOTE.index("denies")
    return {
        "integrated gradients": (explain, (tiny, plan, target), {"method": "integrated-gradients", "steps": 8}),
        "occlusion with a head knocked out": (explain, (tiny, knocked, target), {"method": "occlusion"}),
        "head scan": (head_importance, (tiny, plan, target), {}),
        "counterfactual edit": (counterfactual, (tiny, plan, start, start + len("denies"), "reports", target),
                                {"method": "saliency"}),
        "activation patching": (patch_pair, (tiny, plan, NOTE.replace("denies", "reports"), target), {}),
        "a collection's embeddings": (note_embeddings, (tiny, (plan, plan_note(tiny, LONG_NOTE))), {}),
    }


@pytest.mark.parametrize("name", ["integrated gradients", "occlusion with a head knocked out", "head scan",
                                  "counterfactual edit", "activation patching", "a collection's embeddings"])
def test_an_analysis_in_a_worker_equals_the_one_run_here(pool: WorkerPool, tiny: LoadedModel, tiny_spec: ModelSpec,
                                                         name: str) -> None:
    """The model travels as the worker's own copy, each note plan as its note and options (planned again
    there), the rest as it is; the answer comes back array for array the same."""
    function, inputs, arguments = analysis_calls(tiny)[name]
    request = AnalysisRequest.of(tiny, function, inputs, arguments, reports_progress=True, long=False)
    assert request is not None, "the request could not travel"
    theirs = pool.answer(tiny_spec, request)
    assert theirs is not None, "the worker did not answer"
    assert_same(function(*inputs, **arguments), theirs, name)


def test_an_analysis_in_a_worker_reports_its_steps_as_it_does_here(pair: WorkerPool, tiny: LoadedModel,
                                                                   tiny_spec: ModelSpec) -> None:
    function, inputs, arguments = analysis_calls(tiny)["head scan"]
    here: list[tuple[float, str]] = []
    ours = function(*inputs, **arguments, progress=lambda fraction, message: here.append((fraction, message)))
    there: list[tuple[float, str]] = []
    request = AnalysisRequest.of(tiny, function, inputs, arguments, reports_progress=True, long=True)
    theirs = pair.answer(tiny_spec, request, lambda fraction, message: there.append((fraction, message)),
                         long=True)
    assert theirs is not None
    assert there == here and len(there) >= 2
    assert_same(ours, theirs, "head scan")


def test_work_that_cannot_be_redone_in_a_worker_is_not_sent(tiny: LoadedModel, tmp_path: Path) -> None:
    function, inputs, arguments = analysis_calls(tiny)["head scan"]
    _model, plan, target = inputs
    other = load_model(str(write_bert(tmp_path / "other")))

    def of(function: Any, inputs: tuple[Any, ...], arguments: dict[str, Any]) -> AnalysisRequest | None:
        return AnalysisRequest.of(tiny, function, inputs, arguments, reports_progress=True, long=True)

    assert of(function, inputs, arguments) is not None
    assert of(function, (other, plan, target), arguments) is None  # another model
    assert of(function, (tiny, plan_note(other, NOTE), target), arguments) is None  # a note planned for it
    assert of(function, (tiny, trace(tiny, plan), target), arguments) is None  # a trace: the server holds it
    assert of(lambda *_inputs, **_arguments: None, inputs, arguments) is None  # not importable by name
    assert of(function, inputs, {"unpicklable": threading.Lock()}) is None
    assert of(function, inputs, {"huge": "x" * MAX_REQUEST_BYTES}) is None


def test_an_answer_that_does_not_pickle_is_left_to_the_caller_and_the_worker_serves_on(
        pool: WorkerPool, tiny: LoadedModel, tiny_spec: ModelSpec) -> None:
    before = pool.worker_pids(tiny_spec)
    lock = AnalysisRequest.of(tiny, threading.Lock, (), {}, reports_progress=False, long=False)
    assert lock is not None  # the request travels: only its answer (a lock) cannot come back
    assert pool.answer(tiny_spec, lock) is None
    assert pool.worker_pids(tiny_spec) == before
    assert pool.answer(tiny_spec, InsideRequest.of(plan_note(tiny, NOTE), 0)) is not None


def test_an_error_in_the_worker_is_raised_here_and_the_worker_serves_on(pool: WorkerPool, tiny: LoadedModel,
                                                                       tiny_spec: ModelSpec) -> None:
    plan = plan_note(tiny, NOTE)
    before = pool.worker_pids(tiny_spec)
    with pytest.raises(TargetError, match="Window 4 does not exist"):
        pool.answer(tiny_spec, InsideRequest.of(plan, 3))
    assert pool.answer(tiny_spec, InsideRequest.of(plan, 0)) is not None
    assert pool.worker_pids(tiny_spec) == before


def test_requests_from_several_threads_share_the_workers(pool: WorkerPool, tiny: LoadedModel,
                                                         tiny_spec: ModelSpec) -> None:
    """Four threads, one worker: each waits for it in turn (none is told to run it itself: None), and each gets
    the answer to its own note."""
    notes = [f"Patient {word} denies chest pain." for word in ("alert", "normal", "daily", "left")]
    plans = [plan_note(tiny, note) for note in notes]
    answers: dict[int, Any] = {}

    def ask(index: int) -> None:
        answers[index] = pool.answer(tiny_spec, TraceRequest.of(plans[index], capture_qk=False))

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(len(plans))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(answers) == [0, 1, 2, 3]
    for index, plan in enumerate(plans):
        assert answers[index].text == notes[index]
        assert_same(trace(tiny, plan), answers[index], f"note {index}")


def test_a_killed_worker_is_replaced_and_its_caller_runs_the_work_itself(tiny: LoadedModel,
                                                                          tiny_spec: ModelSpec) -> None:
    workers = WorkerPool(1, threads=1)
    try:
        workers.start(tiny_spec, tiny.info.key)
        assert workers.wait_ready(tiny_spec, 120)
        [first] = workers.worker_pids(tiny_spec)
        os.kill(first, signal.SIGKILL)
        assert wait_until(lambda: not process_alive(first))
        plan = plan_note(tiny, NOTE)
        assert workers.answer(tiny_spec, TraceRequest.of(plan, capture_qk=False)) is None  # lost: run it here
        assert workers.wait_ready(tiny_spec, 120)
        [second] = workers.worker_pids(tiny_spec)
        assert second != first
        assert_same(trace(tiny, plan), workers.answer(tiny_spec, TraceRequest.of(plan, capture_qk=False)), "trace")
    finally:
        workers.close()


def test_a_model_whose_workers_keep_dying_gets_no_more(tiny: LoadedModel, tiny_spec: ModelSpec) -> None:
    workers = WorkerPool(1, threads=1, max_losses=2)
    request = TraceRequest.of(plan_note(tiny, NOTE), capture_qk=False)
    try:
        workers.start(tiny_spec, tiny.info.key)
        for _death in range(2):
            assert workers.wait_ready(tiny_spec, 120)
            [pid] = workers.worker_pids(tiny_spec)
            os.kill(pid, signal.SIGKILL)
            assert wait_until(lambda: not process_alive(pid))  # noqa: B023 - waited for within the iteration
            assert workers.answer(tiny_spec, request) is None
        assert not workers.wait_ready(tiny_spec, 5)
        assert workers.worker_pids(tiny_spec) == [] and workers.state().starting == 0
        workers.start(tiny_spec, tiny.info.key)  # not tried again
        assert workers.state().starting == 0 and workers.answer(tiny_spec, request) is None
    finally:
        workers.close()


def test_a_model_that_does_not_load_in_a_worker_gets_no_workers(tmp_path: Path, tiny: LoadedModel) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json", encoding="utf-8")
    spec = parse_spec(str(broken))
    workers = WorkerPool(2, threads=1)
    try:
        workers.start(spec, f"folder:{broken}")
        assert not workers.wait_ready(spec, 120)
        assert workers.state().ready == 0 and workers.state().starting == 0
        assert workers.answer(spec, TraceRequest.of(plan_note(tiny, NOTE), capture_qk=False)) is None
        workers.start(spec, f"folder:{broken}")  # not tried again
        assert workers.state().starting == 0
    finally:
        workers.close()


def test_a_worker_that_loads_a_model_keyed_otherwise_is_not_used(tiny: LoadedModel, tiny_spec: ModelSpec) -> None:
    workers = WorkerPool(1, threads=1)
    try:
        workers.start(tiny_spec, "folder:/somewhere/else")
        assert not workers.wait_ready(tiny_spec, 120)
        assert workers.answer(tiny_spec, TraceRequest.of(plan_note(tiny, NOTE), capture_qk=False)) is None
    finally:
        workers.close()


def test_the_least_recently_used_models_workers_are_stopped(tiny: LoadedModel, tiny_spec: ModelSpec,
                                                            tmp_path: Path) -> None:
    other = parse_spec(str(write_bert(tmp_path / "other")))
    workers = WorkerPool(1, threads=1, max_models=1)
    try:
        workers.start(tiny_spec, tiny.info.key)
        assert workers.wait_ready(tiny_spec, 120)
        [first] = workers.worker_pids(tiny_spec)
        workers.start(other, f"folder:{other.location}")
        assert wait_until(lambda: not process_alive(first))
        assert workers.worker_pids(tiny_spec) == []
        assert workers.wait_ready(other, 120) and len(workers.worker_pids(other)) == 1
    finally:
        workers.close()
    assert workers.state().ready == 0


def test_a_worker_ends_with_the_server_and_writes_no_note_text(tiny_spec: ModelSpec, tmp_path: Path) -> None:
    """A server process asks its worker for a marker note (a trace, and a walk that fails), then dies without
    cleaning up: the worker ends too, and neither wrote the note anywhere on stdout or stderr."""
    marker = "zqmarker" + "ab12cd"
    script = textwrap.dedent(f"""
        import os, sys
        from cbert_core.model.loading import load_model, parse_spec
        from cbert_core.run.plan import plan_note
        from cbert_core.run.worker_requests import MAX_REQUEST_BYTES, AnalysisRequest, InsideRequest, TraceRequest
        from cbert_core.serving.worker_pool import WorkerPool
        spec = parse_spec({spec_argument(tiny_spec)!r})
        loaded = load_model(spec)
        pool = WorkerPool(1, threads=1)
        pool.start(spec, loaded.info.key)
        assert pool.wait_ready(spec, 120)
        plan = plan_note(loaded, "Patient {marker} denies chest pain.")
        assert {marker!r} in pool.answer(spec, TraceRequest.of(plan, capture_qk=False)).text
        try:
            pool.answer(spec, InsideRequest.of(plan, 7))
        except Exception as failure:
            print("failed as expected:", type(failure).__name__, flush=True)
        print("worker", *pool.worker_pids(spec), flush=True)
        os._exit(0)  # no clean-up: the worker must notice by itself
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    assert "failed as expected: TargetError" in run.stdout
    worker = int(run.stdout.split("worker")[-1].split()[0])
    assert wait_until(lambda: not process_alive(worker))
    assert marker not in run.stdout + run.stderr
