"""The pages' modules are imported once per server in the background, while the model loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import streamlit
from streamlit.testing.v1 import AppTest

from ui import warm_up

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "pages"

# In a fresh interpreter: nothing of scikit-learn or captum is loaded until the warm-up imports the given pages'
# modules; a page whose imports fail does not stop the others; the thread runs once per process; what was set
# aside earlier is left alone.
FRESH_PROCESS = """
import gc, sys
from pathlib import Path
from ui.warm_up import import_pages, warm_up_pages
pages = Path(sys.argv[1])
broken = Path(sys.argv[2])
assert "sklearn.decomposition" not in sys.modules and "captum" not in sys.modules
class Node:
    pass
first, second = Node(), Node()
first.partner, second.partner = second, first
import weakref
earlier = weakref.ref(second)
gc.collect()
gc.freeze()  # set aside earlier (the model, when it loaded)
del first, second  # garbage now, frozen
frozen_before = gc.get_freeze_count()
thread = warm_up_pages((broken, pages / "embeddings.py"))
thread.join(120)
assert warm_up_pages((broken, pages / "embeddings.py")) is thread  # once per process
print("sklearn.decomposition" in sys.modules, "captum" in sys.modules, gc.get_freeze_count() > frozen_before)
print(import_pages([broken]) == [broken])
print(earlier() is not None)  # what was set aside earlier is not walked again
"""


def test_the_warm_up_imports_the_pages_modules_in_the_background_and_sets_them_aside(tmp_path) -> None:
    broken = tmp_path / "broken_page.py"
    broken.write_text("import no_such_module_for_the_warm_up\nraise SystemExit('the page body never runs')\n")
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(PAGES), str(broken)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    # sklearn yes, captum (not asked) no, frozen, the broken page reported, the earlier frozen objects not walked
    assert done.stdout.split() == ["True", "False", "True", "True", "True"]


# Eight sessions' first runs call the warm-up in the same moment: one thread, started once.
RACE = """
import sys, threading
from pathlib import Path
from ui.warm_up import THREAD_NAME, warm_up_pages
page = (Path(sys.argv[1]),)
callers = 8
barrier = threading.Barrier(callers)
got = []

def first_run():
    barrier.wait()
    got.append(warm_up_pages(page))

runners = [threading.Thread(target=first_run) for _ in range(callers)]
for runner in runners:
    runner.start()
for runner in runners:
    runner.join()
print(len({id(thread) for thread in got}), len(got))
"""


def test_sessions_starting_together_start_one_warm_up(tmp_path) -> None:
    page = tmp_path / "page.py"
    page.write_text("import json\n")
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", RACE, str(page)], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split() == ["1", "8"]  # every caller got the same thread


def test_only_a_pages_import_lines_run(tmp_path) -> None:
    page = tmp_path / "page.py"
    page.write_text("from __future__ import annotations\nimport json\nfrom os import path as os_path\n"
                    "raise RuntimeError('the page body must not run')\n")
    names: dict = {}
    exec(warm_up.page_imports(page), names)  # noqa: S102 - the test's own file
    assert "json" in names and "os_path" in names


def test_the_app_starts_the_warm_up_with_every_page_in_the_sidebars_order_on_its_first_run(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(warm_up, "warm_up_pages", lambda paths: calls.append(paths))
    shown = []  # the pages the navigation shows, in its order
    navigation = streamlit.navigation

    def recording_navigation(pages, *args, **kwargs):
        shown[:] = list(pages)
        return navigation(pages, *args, **kwargs)

    monkeypatch.setattr(streamlit, "navigation", recording_navigation)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    assert not at.exception
    assert calls and set(calls[-1]) == set(PAGES.glob("*.py"))
    # the pages people meet first (Note, then the sidebar's order) are warmed first; Streamlit names a page's URL
    # after its file, and the default page's URL is the root
    assert [page.url_path for page in shown] == ["" if index == 0 else path.stem
                                                 for index, path in enumerate(calls[-1])]
