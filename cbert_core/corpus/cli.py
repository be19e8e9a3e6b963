"""``python -m cbert_core``: run analyses over a CSV/JSONL of notes and write one Parquet row per note.

Exit codes: 0 done; 2 bad arguments; 3 the input file or a column cannot be
used; 4 the output cannot be written; 5 the model cannot be loaded; 1 any other
problem the user can fix; 130 interrupted. Messages go to stderr and never
contain note text.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from cbert_core.corpus.batch import (
    ANALYSES,
    DEFAULT_CHUNK,
    BatchSettings,
    progress_bar,
    run_local,
    run_ray,
    to_parquet_bytes,
)
from cbert_core.corpus.collection import CorpusLimits, candidate_text_columns, collection_from_table, read_table
from cbert_core.errors import (
    CbertError,
    DataFileError,
    ExportError,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedModelError,
)
from cbert_core.model.loading import parse_spec, resolve_default_model
from cbert_core.text.examples import LABELLED_COLUMNS, LABELLED_EXAMPLES
from cbert_core.views.export import check_writable, write_bytes

EXAMPLE_INPUT = "example"  # the input that names the built-in labelled example set (unless a file has that name)
EXIT_OK, EXIT_OTHER, EXIT_USAGE, EXIT_INPUT, EXIT_OUTPUT, EXIT_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 5, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cbert_core",
        description="Run a clinical BERT model over a file of notes and write the results as Parquet "
                    "(one row per note).",
        epilog="Exit codes: 0 done, 2 bad arguments, 3 input problem, 4 output problem, 5 model problem, "
               "1 other problem.")
    parser.add_argument("input", help="CSV, TSV or JSONL file of notes (UTF-8), or 'example' for the built-in "
                                      f"labelled example set ({len(LABELLED_EXAMPLES)} short sentences written "
                                      "for the project)")
    parser.add_argument("-o", "--output", required=True, help="Parquet file to write")
    parser.add_argument("--text-column", help="column holding the note text (needed when several columns "
                                              "hold text)")
    parser.add_argument("--id-column", help="column holding note ids (default: row numbers)")
    parser.add_argument("--model", help="model folder, hub id or 'bundled' (default: as the app resolves it: "
                                        "$CBERT_MODEL, cached Bio_ClinicalBERT, the hub, then the bundled model)")
    parser.add_argument("--analyses", nargs="+", default=["tokens", "embeddings"], metavar="NAME",
                        help=f"any of: {', '.join(ANALYSES)} (default: tokens embeddings)")
    parser.add_argument("--pooling", choices=("mean", "cls"), default="mean", help="note embedding pooling")
    parser.add_argument("--layer", type=int, default=-1, help="layer of the embedding (0 = embeddings, -1 = last)")
    casing = parser.add_mutually_exclusive_group()
    casing.add_argument("--lowercase", dest="lowercase", action="store_true", default=None,
                        help="lower-case before tokenizing")
    casing.add_argument("--keep-case", dest="lowercase", action="store_false", help="keep case")
    parser.add_argument("--labels", nargs="+", default=[], metavar="DESCRIPTION",
                        help="label descriptions for zero-shot similarity (the predictions of a bare encoder; "
                             "'zero-shot' with any model)")
    parser.add_argument("--pll-stride", type=int, default=8,
                        help="masked-LM predictions: pieces this far apart are masked together (0 = exact, slow)")
    parser.add_argument("--attribution-method", default="integrated-gradients",
                        choices=("integrated-gradients", "gradient-x-input", "saliency", "occlusion"))
    parser.add_argument("--attribution-steps", type=int, default=20, help="integrated-gradients steps")
    parser.add_argument("--engine", choices=("local", "ray"), default="local")
    parser.add_argument("--workers", type=int, default=1, help="Ray workers (each loads the model once)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="notes per unit of work")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process")
    parser.add_argument("--max-rows", type=int, default=5_000)
    parser.add_argument("--max-chars", type=int, default=100_000, help="longest note kept (characters)")
    parser.add_argument("--max-mb", type=float, default=50.0, help="largest input file (MB)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _model_text(value: str | None) -> str:
    if value:
        return value
    spec = resolve_default_model().spec
    return "bundled" if spec.kind == "bundled" else spec.location


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    """Do the work for parsed arguments; typed errors propagate to :func:`main`."""
    unknown = [name for name in args.analyses if name not in ANALYSES]
    if unknown:
        raise _UsageError(f"unknown analysis {', '.join(unknown)}; choose from {', '.join(ANALYSES)}")
    output = Path(args.output).expanduser()
    check_writable(output)
    limits = CorpusLimits(max_rows=args.max_rows, max_chars=args.max_chars, max_bytes=int(args.max_mb * 1e6))
    if args.input == EXAMPLE_INPUT and not Path(args.input).exists():
        table = pd.DataFrame(list(LABELLED_EXAMPLES), columns=list(LABELLED_COLUMNS)).iloc[:args.max_rows]
        args.text_column = args.text_column or "text"
        args.id_column = args.id_column or "id"
    else:
        table = read_table(args.input, limits=limits)
    text_column = args.text_column
    if text_column is None:
        candidates = candidate_text_columns(table)
        if len(candidates) != 1:
            listed = ", ".join(repr(c) for c in candidates) or "none"
            raise DataFileError(f"Choose the note column with --text-column (columns that hold text: {listed}).")
        text_column = candidates[0]
        _say(f"Using column '{text_column}' for the note text.")
    collection = collection_from_table(table, text_column=text_column, id_column=args.id_column, limits=limits)
    for warning in collection.warnings:
        _say(f"warning: {warning}")
    model = _model_text(args.model)
    spec = parse_spec(model)
    settings = BatchSettings(
        model=model, analyses=tuple(dict.fromkeys(args.analyses)), lowercase=args.lowercase, pooling=args.pooling,
        layer=args.layer, batch_size=args.batch_size, labels=tuple(args.labels), threads=args.threads,
        pll_stride=args.pll_stride, attribution_method=args.attribution_method,
        attribution_steps=args.attribution_steps,
        env={key: os.environ[key] for key in ("HF_HUB_OFFLINE", "HF_HOME", "CBERT_MODEL") if key in os.environ},
    )
    frame = pd.DataFrame({"row": collection.rows, "id": list(collection.ids), "text": list(collection.texts)})
    _say(f"{len(frame):,} notes, model {spec.label}, analyses {', '.join(settings.analyses)}, engine {args.engine}.")
    advance, close = progress_bar(len(frame), enabled=not args.quiet)
    started = time.perf_counter()
    try:
        if args.engine == "ray":
            results = _unwrap_ray(lambda: run_ray(frame, settings, chunk_size=args.chunk_size, workers=args.workers,
                                                  progress=advance))
        else:
            results = run_local(frame, settings, chunk_size=args.chunk_size, progress=advance)
    finally:
        close()
    write_bytes(output, to_parquet_bytes(results, settings, spec.label))
    _say(f"Wrote {len(results):,} rows to {output} in {time.perf_counter() - started:.1f} s.")
    return EXIT_OK


def _unwrap_ray(work):  # noqa: ANN001, ANN202 - small adapter
    """Run ``work`` and turn a typed error raised inside a Ray worker back into that error."""
    try:
        return work()
    except CbertError:
        raise
    except Exception as failed:  # Ray wraps worker exceptions in its own types
        cause = failed
        while cause is not None and not isinstance(cause, CbertError):
            cause = getattr(cause, "cause", None) or cause.__cause__
        if isinstance(cause, CbertError):
            raise type(cause)(str(cause).splitlines()[-1] if "\n" in str(cause) else str(cause)) from None
        raise


class _UsageError(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return run(args)
    except _UsageError as bad:
        parser.print_usage(sys.stderr)
        _say(f"error: {bad}")
        return EXIT_USAGE
    except DataFileError as bad:
        _say(f"error: {bad}")
        return EXIT_INPUT
    except ExportError as bad:
        _say(f"error: {bad}")
        return EXIT_OUTPUT
    except (ModelNotFoundError, UnsupportedModelError, ModelLoadError) as bad:
        _say(f"error: {bad}")
        return EXIT_MODEL
    except CbertError as bad:
        _say(f"error: {bad}")
        return EXIT_OTHER
    except KeyboardInterrupt:
        _say("Interrupted; nothing was written.")
        return EXIT_INTERRUPTED
