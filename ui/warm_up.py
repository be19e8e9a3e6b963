"""Import every page's modules once per server, in the background, while the model loads.

A page's first visit after a server start imports what that page needs: scikit-learn for Embeddings,
captum for Attribution, spaCy for Evaluate. On a quiet 2-core machine that is 0.1-0.9 s, holding the
interpreter lock for much of it; under eight sessions the first visit to Embeddings took 1.2-1.5 s
against a median of 0.3 s, and it was that page's slowest visit of the run (``bench/load.py`` prints when
each page's slowest visit began). Imported after the first page instead, the imports stalled the other
sessions' first pages (1.3-1.6 s). So on the server's first script run, a daemon thread runs each page's
own module-level import statements (read from the page files, so nothing is listed twice) while the model
loads, which mostly waits on files and native code, then sets what they loaded aside from later full
collections (:mod:`cbert_core.serving.collector`), without walking the model's objects again. Modules a
page imports only inside a function (UMAP, on request) stay lazy.
"""

from __future__ import annotations

import ast
import threading
from collections.abc import Iterable
from pathlib import Path
from types import CodeType

from cbert_core.serving.collector import set_aside_new_long_lived

THREAD_NAME = "warm-up-pages"


def page_imports(path: Path) -> CodeType:
    """The module-level import statements of the page file at ``path``, compiled (nothing else of it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    imports: list[ast.stmt] = [node for node in tree.body if isinstance(node, ast.Import)
                               or (isinstance(node, ast.ImportFrom) and node.module != "__future__")]
    return compile(ast.Module(body=imports, type_ignores=[]), str(path), "exec")


def import_pages(paths: Iterable[Path]) -> list[Path]:
    """Run each page's imports, then set the loaded modules aside; the pages whose imports failed.

    A failure is left for the page to show when it is opened: the other pages are still warmed.
    """
    failed = []
    for path in paths:
        try:
            exec(page_imports(path), {})  # noqa: S102 - this app's own page files, their import lines only
        except Exception:  # noqa: BLE001 - the page reports its own error when it is opened
            failed.append(path)
    set_aside_new_long_lived()  # the model, set aside when it was loaded, is not walked again
    return failed


# The warm-up thread, once started; eight sessions' first runs reach app.py's call in the same moment after a
# start, and each must find the one thread (a cache without the lock let two of them start one each: the second
# waited on the first's module locks, then both ran a full collection)
_started: list[threading.Thread] = []
_starting = threading.Lock()


def warm_up_pages(paths: tuple[Path, ...]) -> threading.Thread:
    """Start importing the modules of the pages at ``paths`` in a daemon thread, once per process; that thread."""
    with _starting:
        if not _started:
            thread = threading.Thread(target=import_pages, args=(paths,), name=THREAD_NAME, daemon=True)
            thread.start()
            _started.append(thread)
        return _started[0]
