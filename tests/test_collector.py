"""Long-lived objects set aside from the cyclic collector: skipped by later collections, garbage still collected."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import pytest

from cbert_core.serving.cache import ResultCache
from cbert_core.serving.collector import set_aside_long_lived, set_aside_new_long_lived
from ui import caches


class Node:
    def __init__(self) -> None:
        self.partner: Node | None = None


def _cycle() -> tuple[Node, weakref.ref]:
    first, second = Node(), Node()
    first.partner, second.partner = second, first
    return first, weakref.ref(second)


@pytest.fixture(autouse=True)
def _unfrozen():
    yield
    gc.unfreeze()


def test_what_is_alive_is_set_aside_and_later_collections_skip_it() -> None:
    kept, kept_ref = _cycle()
    assert set_aside_long_lived() == gc.get_freeze_count() > 0
    assert not any(tracked is kept for tracked in gc.get_objects())  # in no generation a collection walks
    assert len(gc.get_objects()) < gc.get_freeze_count()  # a full collection walks far fewer objects than are alive
    del kept
    gc.collect()
    assert kept_ref() is not None  # a frozen cycle is not collected...
    set_aside_long_lived()
    assert kept_ref() is None  # ...until the next call gives it back to the collector (an evicted model)


def test_garbage_is_collected_before_and_after() -> None:
    old, old_ref = _cycle()
    del old
    set_aside_long_lived()
    assert old_ref() is None  # garbage at the time is collected, not frozen
    new, new_ref = _cycle()
    del new
    gc.collect()
    assert new_ref() is None  # objects made afterwards are collected as before


def test_setting_aside_what_is_new_leaves_what_was_set_aside_unwalked() -> None:
    earlier, earlier_ref = _cycle()
    set_aside_long_lived()
    del earlier  # garbage now, but frozen
    garbage, garbage_ref = _cycle()
    del garbage
    later, later_ref = _cycle()
    frozen_before = gc.get_freeze_count()
    assert set_aside_new_long_lived() > frozen_before
    assert garbage_ref() is None  # new garbage is collected, not frozen
    assert not any(tracked is later for tracked in gc.get_objects())  # what is new and alive is set aside
    assert earlier_ref() is not None  # the earlier frozen ones were not given back and walked
    set_aside_long_lived()
    assert earlier_ref() is None and later_ref() is not None


def test_loading_a_model_sets_what_is_alive_aside_and_a_cached_model_does_not(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(caches, "set_aside_long_lived", lambda: calls.append("set aside") or 0)
    models = ResultCache(max_items=3)
    monkeypatch.setattr(caches, "model_cache", lambda: models)  # no model loaded yet
    loaded = caches.get_model("bundled")
    assert calls == ["set aside"] and len(models) == 1
    assert caches.get_model("bundled") is loaded and calls == ["set aside"]  # from the cache: nothing to set aside


def test_sessions_that_wait_for_a_load_do_not_collect_again(monkeypatch) -> None:
    calls, entered, release = [], [], threading.Event()
    monkeypatch.setattr(caches, "set_aside_long_lived", lambda: calls.append("set aside") or 0)
    models = ResultCache(max_items=3)
    monkeypatch.setattr(caches, "model_cache", lambda: models)
    real_load = caches.load_model
    monkeypatch.setattr(caches, "load_model", lambda spec, progress: release.wait(30) and real_load(spec, progress))
    real_get_or_compute = models.get_or_compute

    def get_or_compute(key, compute):
        entered.append(key)
        return real_get_or_compute(key, compute)

    monkeypatch.setattr(models, "get_or_compute", get_or_compute)
    got = []
    sessions = [threading.Thread(target=lambda: got.append(caches.get_model("bundled"))) for _ in range(3)]
    for session in sessions:
        session.start()
    deadline = time.monotonic() + 30
    while len(entered) < 3 and time.monotonic() < deadline:  # all three asked while the first one loads
        time.sleep(0.01)
    release.set()
    for session in sessions:
        session.join(60)
    assert len(entered) == 3 and len(got) == 3 and got[0] is got[1] is got[2]
    assert calls == ["set aside"]  # only the session that loaded it collected
