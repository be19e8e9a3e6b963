"""Load: concurrent browser sessions on one server, each analysing its own note across the pages.

The mixed workload: of ``--sessions`` sessions, ``--long-sessions`` run long work on every round (the
Attribution page's explanations, then the scan of every head) while the others only open the short
pages (Tokenization, Attention, Embeddings, Inside the model, Note), which trace. It runs twice in the
same process on the same machine: once with the scheduler (fair turns on the shared model), once with
it bypassed (``CBERT_SCHEDULER=off`` and ``CBERT_MODEL_WORKERS=off``, the code path before both: every
session's work at once, in the server's own process; ``--modes in-process`` adds the scheduler without the
model worker processes). For each it
prints, per kind of work, the median, 95th percentile and worst time (the last two also as multiples of
the median), the throughput, the server's resident memory at start, every minute and at the end, cross-talk findings
and the hooks left on the shared model; then the goals (worst short page <= 3x its median, over all short
pages and per page, throughput not lower than bypassed). Short pages are timed twice: until drawn and calm
in the browser, and until the server's "script finished" message for the page reached the browser
("served"): the sessions' browsers share the server's cores, so the first also holds their drawing, which
users' browsers do on their own machines.

    .venv/bin/python bench/load.py [--sessions 8] [--long-sessions 2] [--minutes 5] [--model bundled] [--quick]
                                   [--clients browsers|protocol] [--passes 1]

``--clients protocol``: the sessions are websocket clients that send what a browser sends and draw
nothing. The browsers of 8 sessions take about 70% of a 2-core machine's CPU (printed with each run), so
with browsers the page times mostly measure the browsers' drawing on the server's own cores; the protocol
clients measure what the server does.

``--passes N``: run the modes N times over, every other pass in reverse order (scheduler, bypassed, bypassed,
scheduler...), each run on a fresh server, and compare throughput over all of a mode's runs together: the
machine's speed drifts over the minutes, and with one run of each the mode run second took the drift.

``--quick``: 3 sessions (1 long) for a minute per mode on the bundled model (a round may not finish).
"""

from __future__ import annotations

import os
import statistics

from common import announce, bench_parser

# isort: split
# after common, which puts tests/ on the path
from browser_support import running_app
from load_sessions import EXPLAIN, SCAN, SHORT, LoadReport, alternating_order, pooled_rate, run_load
from protocol_sessions import run_protocol_load

# "bypassed" is the code path before the scheduler and the model worker processes; "in-process" is the scheduler
# with short model work run in the server's own process (no workers)
MODES = {"scheduler": {}, "scheduler-1-slot": {"CBERT_MODEL_SLOTS": "1"},
         "in-process": {"CBERT_MODEL_WORKERS": "off"},
         "bypassed": {"CBERT_SCHEDULER": "off", "CBERT_MODEL_WORKERS": "off"}}
GOAL_WORST_OVER_MEDIAN = 3.0
# The first seconds after a server start: every session's first visit to each page, while the app imports the
# pages' modules in the background (ui/warm_up.py) and sets them aside from the collector. Printed apart too.
WARM_UP_S = 15.0


def _spread(times: list[float]) -> str:
    """Count, median, 95th percentile and worst of ``times``, the last two also as multiples of the median."""
    median = statistics.median(times)
    p95 = statistics.quantiles(times, n=20, method="inclusive")[-1] if len(times) > 1 else times[0]  # within the data
    return (f"{len(times):5d}  {median:8.2f}  {p95:5.2f}  {max(times):7.2f}  {max(times) / median:12.1f}"
            f"  {p95 / median:10.1f}")


def after_warm_up(report: LoadReport) -> dict[str, list[float]]:
    """Each short page's times of the pieces of work that began once the server had warmed up."""
    return {title: kept for title, times in report.by_page.items()
            if (kept := [seconds for seconds, began in zip(times, report.began_by_page.get(title, []))
                         if began >= WARM_UP_S])}


def crowding(report: LoadReport) -> dict[str, tuple[float, float]]:
    """Per short page: the other work in flight during its slowest visit, and during its visits around the median."""
    found = {}
    for title, times in report.by_page.items():
        began = report.began_by_page.get(title, [])
        if len(began) != len(times) or len(times) < 5:
            continue
        visits = sorted(zip(times, began))
        middle = visits[int(len(visits) * 0.4):int(len(visits) * 0.6) + 1]
        found[title] = (report.in_flight(visits[-1][1], visits[-1][0]),
                        statistics.mean(report.in_flight(start, seconds) for seconds, start in middle))
    return found


def throughput_ratio(runs: list[tuple[str, str, LoadReport]]) -> float:
    """Work per minute with the scheduler over that bypassed, each mode's ``runs`` (label, mode, report) pooled."""
    bypassed = pooled_rate(report for _, mode, report in runs if mode == "bypassed")
    scheduler = pooled_rate(report for _, mode, report in runs if mode == "scheduler")
    return scheduler / bypassed if bypassed else float("nan")


def one_mode(name: str, env: dict[str, str], args) -> LoadReport:
    with running_app(env={"HF_HUB_OFFLINE": "1", "CBERT_MODEL": args.model, **env}) as server:
        port = int(server.url.rsplit(":", 1)[1])
        if args.clients == "protocol":
            report = run_protocol_load(server.url, port, sessions=args.sessions, seconds=args.minutes * 60,
                                       long_sessions=args.long_sessions)
        else:
            report = run_load(server.url, port, sessions=args.sessions, seconds=args.minutes * 60,
                              long_sessions=args.long_sessions, browser_nice=args.browser_nice)
    if args.clients == "protocol":
        clients = "websocket clients (nothing drawn: times are until the server's script end)"
    else:
        clients = "browsers at " + ("normal priority" if args.browser_nice is None else f"nice {args.browser_nice}")
    print(f"\n[{name}] {args.sessions} sessions ({args.long_sessions} long) x {args.minutes:g} min on {args.model}: "
          f"rounds per session {report.rounds}, {len(report.page_times)} timed pieces of work in "
          f"{report.elapsed_s:.0f} s; {clients}")
    print(f"[{name}] page time: median {report.median_page_s:.2f} s, worst {report.worst_page_s:.2f} s (all kinds)")
    print(f"[{name}]   kind                  count  median s  p95 s  worst s  worst/median  p95/median  per minute")
    for kind in (SHORT, EXPLAIN, SCAN):
        times = report.times.get(kind, [])
        if not times:
            print(f"[{name}]   {kind:20s}      0")
            continue
        print(f"[{name}]   {kind:20s}  {_spread(times)}  {len(times) / report.elapsed_s * 60:10.2f}")
    for title, times in report.by_page.items():
        print(f"[{name}]     {title:18s}  {_spread(times)}")
    if report.served_by_page:
        print(f"[{name}]   served (click to the server's script end, without the browser's drawing):")
    for title, times in report.served_by_page.items():
        print(f"[{name}]     {title:18s}  {_spread(times)}")
    if report.began_by_page:
        print(f"[{name}]   each page's slowest began at: " + ", ".join(
            f"{title} {began[times.index(max(times))]:.0f} s" for title, times in report.by_page.items()
            if (began := report.began_by_page.get(title))) + " into the run")
        print(f"[{name}]   other pieces of work in flight, on average, during each page's slowest visit and "
              "during its visits around the median (40th to 60th percentile): " + ", ".join(
                  f"{title} {slowest:.1f} vs {middle:.1f}" for title, (slowest, middle) in crowding(report).items()))
        print(f"[{name}]   once the server has warmed up (pieces of work that began {WARM_UP_S:.0f} s or more "
              "into the run):")
        for title, times in after_warm_up(report).items():
            print(f"[{name}]     {title:18s}  {_spread(times)}")
    if report.cpu_span_s:
        cores = len(os.sched_getaffinity(0))
        print(f"[{name}] CPU time over the run's {report.cpu_span_s:.0f} s on {cores} cores: " + ", ".join(
            f"{who} {seconds:.0f} s ({seconds / (report.cpu_span_s * cores):.0%} of the cores)"
            for who, seconds in report.cpu_s.items()))
    print(f"[{name}] server RSS: " + ", ".join(f"{label} {value / 2**30:.2f} GB" for label, value in report.rss))
    print(f"[{name}] server status afterwards: {report.server_status}")
    print(f"[{name}] cross-talk / failures: {report.problems or 'none'}")
    print(f"[{name}] hooks left on the model afterwards: {report.hooks_after}; alert() dialogs: "
          f"{len(report.dialogs)}; requests to other hosts: {len(report.outside_requests)}")
    return report


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--long-sessions", type=int, default=2, help="sessions that run Attribution and the head scan")
    parser.add_argument("--minutes", type=float, default=5.0, help="per mode")
    parser.add_argument("--model", default="bundled", help="CBERT_MODEL for the server")
    parser.add_argument("--modes", default="scheduler,bypassed", help="which of: " + ", ".join(MODES))
    parser.add_argument("--passes", type=int, default=1,
                        help="run the modes this many times over, every other pass reversed, and pool each mode's "
                             "runs for the throughput comparison (a steady drift of the machine then weighs alike)")
    parser.add_argument("--clients", choices=("browsers", "protocol"), default="browsers",
                        help="browsers: a headless Chromium tab per session, timed until drawn; protocol: a "
                             "websocket client per session that speaks Streamlit's protocol and draws nothing, "
                             "so the server has the cores (tests/protocol_sessions.py)")
    parser.add_argument("--browser-nice", type=int, default=None,
                        help="run the sessions' browser at this niceness (e.g. 19), so it takes only the CPU the "
                             "server leaves, as users' browsers on their own machines would")
    args = parser.parse_args()
    announce(args.quick)
    if args.quick:
        args.sessions, args.long_sessions, args.minutes, args.model = 3, 1, 1.0, "bundled"
    modes, passes = args.modes.split(","), max(1, args.passes)
    order = alternating_order(modes, passes)
    # (label, mode, report) per run; a label tells the runs of one mode apart when there are several
    runs = []
    for name in order:
        label = name if passes == 1 else f"{name} #{sum(mode == name for _, mode, _ in runs) + 1}"
        runs.append((label, name, one_mode(label, MODES[name], args)))
    print()
    for label, _, report in runs:
        short = report.times.get(SHORT, [])
        ratio = max(short) / statistics.median(short) if short else float("nan")
        print(f"goal [{label}]: worst short page {ratio:.1f}x its median (goal <= {GOAL_WORST_OVER_MEDIAN:.0f}x)")
        timed = "drawn" if args.clients == "browsers" else "served"  # protocol clients: until the script end
        for measure, by_page in ((timed, report.by_page), ("served", report.served_by_page),
                                 (f"{timed}, once warmed up", after_warm_up(report))):
            if not by_page:  # each page against its own median: pages of different cost are not mixed
                continue
            page, times = max(by_page.items(), key=lambda item: max(item[1]) / statistics.median(item[1]))
            print(f"goal [{label}]: per page, {measure}, the worst is at most "
                  f"{max(times) / statistics.median(times):.1f}x that page's median ({page}; "
                  f"goal <= {GOAL_WORST_OVER_MEDIAN:.0f}x)")
    if {"scheduler", "bypassed"} <= set(modes):
        done = {mode: pooled_rate(report for _, name, report in runs if name == mode) for mode in modes}
        ratio = throughput_ratio(runs)
        print(f"goal: throughput with the scheduler {done['scheduler']:.2f} vs bypassed {done['bypassed']:.2f} "
              f"pieces of work per minute ({ratio:.2f}x; goal >= 1x)"
              + (f", over {passes} runs of each in the order {', '.join(order)}" if passes > 1 else ""))
        if passes > 1:  # each pass's own ratio: the spread the pooled figure averages over
            ratios = [throughput_ratio(runs[start:start + len(modes)]) for start in range(0, len(runs), len(modes))]
            print("goal: each pass's throughput ratio: " + ", ".join(f"{one:.2f}x" for one in ratios))


if __name__ == "__main__":
    main()
