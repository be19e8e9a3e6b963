"""Load: 8 concurrent browser sessions for 5 minutes, each analysing its own note across the pages.

Prints rounds per session, median and worst page times, the server's resident memory at start,
after 1 minute and at the end, cross-talk findings and the hooks left on the shared model.

    .venv/bin/python bench/load.py [--sessions 8] [--minutes 5] [--model bundled] [--quick]

``--quick``: 2 sessions for 15 seconds on the bundled model (a round may not finish).
"""

from __future__ import annotations

from common import announce, bench_parser

# isort: split
# after common, which puts tests/ on the path
from browser_support import running_app
from load_sessions import run_load


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--model", default="bundled", help="CBERT_MODEL for the server")
    args = parser.parse_args()
    announce(args.quick)
    if args.quick:
        args.sessions, args.minutes, args.model = 2, 0.25, "bundled"
    with running_app(env={"HF_HUB_OFFLINE": "1", "CBERT_MODEL": args.model}) as server:
        port = int(server.url.rsplit(":", 1)[1])
        report = run_load(server.url, port, sessions=args.sessions, seconds=args.minutes * 60)
    print(f"{args.sessions} sessions x {args.minutes:g} min on {args.model}: rounds per session {report.rounds}, "
          f"{len(report.page_times)} page loads")
    print(f"page time: median {report.median_page_s:.2f} s, worst {report.worst_page_s:.2f} s")
    print("server RSS: " + ", ".join(f"{label} {value / 2**30:.2f} GB" for label, value in report.rss))
    print(f"server status afterwards: {report.server_status}")
    print(f"cross-talk / failures: {report.problems or 'none'}")
    print(f"hooks left on the model afterwards: {report.hooks_after}; alert() dialogs: {len(report.dialogs)}; "
          f"requests to other hosts: {len(report.outside_requests)}")


if __name__ == "__main__":
    main()
