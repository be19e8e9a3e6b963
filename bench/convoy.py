"""Convoy: one session's model work beside other sessions' Python work in the same server process.

Under ``bench/load.py`` (8 sessions, protocol clients) the walk through one window of a short note on
"Inside the model" took about 0.9 s in the server against 0.03 s alone, while the same page's Python
work (its figures) took about 3x its time alone. This bench shows why without a server. The model's work
is hundreds of small torch operations, and each one lets go of the interpreter lock while it computes
and must take it back afterwards; a thread that runs Python (a page script building a figure) keeps the
lock until the interpreter's switch interval (5 ms) is up, so every operation can wait that long for it.
Torch work in other threads, which lets go of the lock, costs far less.

    .venv/bin/python bench/convoy.py [--model bundled] [--repeats 8] [--quick]

It times a trace and the "Inside the model" walk of a short note (the load bench's kind): alone; beside
one and two threads building Plotly figures (what page scripts spend the lock on); beside two threads of
torch matrix products (one torch thread each); each with torch's default thread count and with one.
Medians of ``--repeats``, and each as a multiple of the time alone with the same thread count. Then the
other CPU work a page does in the server: the Embeddings page's plane (PCA) of a 512-piece window's hidden
states at every layer, by a full SVD (before) and as the app does (``principal_plane``).

``--quick``: a tiny model, two repeats and torch's default thread count only, no ../shared.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

from common import announce, bench_parser, cpu_line, tiny_checkpoint

# isort: split
# after common, which sets torch's thread waiting before anything imports it
import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

NOTE = ("HISTORY: " + " ".join(f"Patient denies chest pain number {i}." for i in range(8))
        + " COPD [MASK] exacerbation.")
QUICK_NOTE = "Patient denies chest pain. COPD [MASK] exacerbation."  # within the tiny model's 64 positions
FIGURE_VALUES = np.random.default_rng(0).random((6, 48))  # a page figure's heatmap


def build_figures(stop: threading.Event) -> None:
    """What a page script does with the lock: Plotly figures built and serialised, over and over."""
    while not stop.is_set():
        build_figure()


def build_figure() -> None:
    """One Plotly figure built and serialised, as a page script does."""
    figure = go.Figure(go.Heatmap(z=FIGURE_VALUES, x=[f"piece {i}" for i in range(FIGURE_VALUES.shape[1])]))
    figure.update_layout(title="a page's figure", height=300)
    pio.to_json(figure, validate=False)


def multiply_matrices(stop: threading.Event) -> None:
    """Torch work that lets go of the lock while it computes, on one torch thread."""
    import torch

    torch.set_num_threads(1)
    matrix = torch.randn(384, 384)
    while not stop.is_set():
        matrix @ matrix


def median_ms(work: Callable[[], object], repeats: int) -> float:
    work()  # warm
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def beside(load: Callable[[threading.Event], None] | None, count: int,
           measures: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median milliseconds of each measure while ``count`` threads run ``load``."""
    stop = threading.Event()
    threads = [threading.Thread(target=load, args=(stop,), daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.2)  # the load is running
        return {name: median_ms(work, repeats) for name, work in measures.items()}
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--model", default="bundled", help="a model spec as the app takes it (default: bundled)")
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    announce(args.quick)
    if args.quick:
        args.model, args.repeats = str(tiny_checkpoint()), 2

    import torch

    from cbert_core.model.loading import load_model
    from cbert_core.run.inside_capture import inside_trace
    from cbert_core.run.plan import plan_note
    from cbert_core.run.trace import trace
    from cbert_core.run.worker_requests import InsideRequest, TraceRequest
    from cbert_core.serving.worker_pool import WorkerPool

    loaded = load_model(args.model)
    plan = plan_note(loaded, QUICK_NOTE if args.quick else NOTE)
    here = {"trace": lambda: trace(loaded, plan), "inside walk": lambda: inside_trace(loaded, plan)}
    default_threads = torch.get_num_threads()
    print(cpu_line())
    print(f"model {args.model}: a note of {len(plan.tokens.tokens)} pieces; torch {torch.__version__}, "
          f"{default_threads} threads by default; medians of {args.repeats}")
    loads = (("alone", None, 0), ("1 thread building figures", build_figures, 1),
             ("2 threads building figures", build_figures, 2), ("2 threads of torch products", multiply_matrices, 2))
    names = [*here, *(f"{name} in a worker" for name in here)]
    print(f"{'beside':30s} {'torch threads':>13s} " + " ".join(f"{name + ' ms':>26s} {'x alone':>8s}"
                                                               for name in names))
    for threads in [default_threads] if args.quick else sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        pool = WorkerPool(1, threads=threads)  # a worker process with its own copy, on as many torch threads
        try:
            pool.start(loaded.info.spec, loaded.info.key)
            if not pool.wait_ready(loaded.info.spec, 300):
                raise SystemExit("the model worker did not start")
            measures = {**here, "trace in a worker": lambda: answered(pool, loaded, TraceRequest.of(plan, capture_qk=False)),
                        "inside walk in a worker": lambda: answered(pool, loaded, InsideRequest.of(plan, 0))}
            alone: dict[str, float] = {}
            for label, load, count in loads:
                times = beside(load, count, measures, args.repeats)
                alone = alone or times
                print(f"{label:30s} {threads:13d} " + " ".join(
                    f"{times[name]:26.1f} {times[name] / alone[name]:8.1f}" for name in names))
        finally:
            pool.close()
    planes(loaded.info.hidden_size, 64 if args.quick else 7 * 512, args.repeats)


def planes(hidden: int, rows: int, repeats: int) -> None:
    """The Embeddings page's plane (PCA) of ``rows`` hidden states: wall and CPU time, full SVD against the app's."""
    from sklearn.decomposition import PCA

    from cbert_core.analyses.projection import principal_plane

    data = np.random.default_rng(0).standard_normal((rows, hidden)).astype(np.float32)
    fits = {"full SVD (before)": lambda: PCA(2, svd_solver="full", random_state=0).fit_transform(data),
            "principal_plane (the app)": lambda: principal_plane(data)}
    print(f"\nthe Embeddings page's plane of {rows} x {hidden} hidden states (a 512-piece window at every layer), "
          f"medians of {repeats}; CPU counts every thread of the process (BLAS's too)")
    measured = {}
    for label, fit in fits.items():
        fit()  # warm
        walls, cpus = [], []
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            fit()
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        measured[label] = statistics.median(walls) * 1000, statistics.median(cpus) * 1000
    before_wall, before_cpu = measured["full SVD (before)"]
    for label, (wall, cpu) in measured.items():
        print(f"  {label:28s} {wall:8.1f} ms ({before_wall / wall:.1f}x faster)  CPU {cpu:8.1f} ms "
              f"({before_cpu / cpu:.1f}x less)")


def answered(pool: object, loaded: object, request: object) -> object:
    """The worker's answer (the bench stops if the worker did not answer: its times would be the caller's)."""
    found = pool.answer(loaded.info.spec, request)
    if found is None:
        raise SystemExit("the model worker did not answer")
    return found


if __name__ == "__main__":
    main()
