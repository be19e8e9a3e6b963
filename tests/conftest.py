"""Shared fixtures: tiny seeded checkpoints on disk and the bundled real model, offline."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # tests never reach a hub
os.environ.setdefault("CBERT_DEVICE", "cpu")  # the CPU path (a GPU machine can opt in with CBERT_DEVICE=auto)
# OpenMP threads sleep instead of spinning while waiting: on a shared 2-core machine spinning
# made torch 7-100x slower under load (measured). Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest  # noqa: E402
import torch  # noqa: E402

from cbert_core.model.loading import BUNDLED, LoadedModel, load_model  # noqa: E402
from tiny_models import write_bert  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bert(tmp_path_factory.mktemp("tiny") / "mlm")


@pytest.fixture(scope="session")
def tiny(tiny_dir: Path) -> LoadedModel:
    return load_model(str(tiny_dir))


@pytest.fixture(scope="session")
def bundled() -> LoadedModel:
    return load_model(BUNDLED)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "tools" / "make_shaped_checkpoint.py").is_file():
        pytest.skip("../shared is not present (optional real-size checks)")
    return SHARED


# ---------------------------------------------------------------- the real app in headless Chromium

@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory):
    """The app started as `make run` starts it, offline on the bundled model, for one test module."""
    from browser_support import running_app

    with running_app(env={"HF_HUB_OFFLINE": "1", "CBERT_MODEL": ""},
                     log_dir=tmp_path_factory.mktemp("logs")) as server:
        yield server


@pytest.fixture(scope="module")
def chromium():
    from browser_support import browser

    with browser() as instance:
        yield instance


@pytest.fixture()
def tab_and_traffic(chromium, app_server):
    """A fresh browser tab on the app, and what it receives and asks for. Afterwards: no dialog
    (no script of a note ran), no request to another host, no traceback in the server's log."""
    from browser_support import settle, watch

    context = chromium.new_context(viewport={"width": 1500, "height": 2000})
    page = context.new_page()
    traffic = watch(page)
    page.goto(app_server.url)
    settle(page)
    yield page, traffic
    assert traffic.dialogs == [] and traffic.outside_requests == []
    assert "Traceback" not in app_server.log()
    context.close()


@pytest.fixture()
def tab(tab_and_traffic):
    return tab_and_traffic[0]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run faster on one torch thread, and far faster on a busy 2-core machine (modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
