"""One accessor for a page: this run's settings, model, planned note and trace.

The sidebar decides the settings and loads the model once per run (:func:`set_run`); a page asks
:func:`page` for a :class:`PageContext` and gets the same objects, with the note planned once and
traced once (both cached for every session). Nothing travels through session state: the context
belongs to this script run (Streamlit runs the entry script and the page in one thread).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager
from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

from cbert_core.model.loading import LoadedModel, ModelInfo
from cbert_core.run.plan import NotePlan, RunOptions
from cbert_core.run.trace import Trace
from ui.caches import get_plan, get_trace
from ui.widgets import user_errors

_RUN = threading.local()


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What the sidebar decided for this run."""

    model_spec: str  # text for cbert_core.model.loading.parse_spec
    note: str
    options: RunOptions  # casing, overlap, length limit, precision (heads are knocked out per page)


@dataclass(frozen=True, kw_only=True)
class PageContext:
    """The model, the settings and the note in force, planned and traced."""

    loaded: LoadedModel
    settings: Settings
    plan: NotePlan
    trace: Trace

    @property
    def info(self) -> ModelInfo:
        return self.loaded.info

    def with_heads_out(self, heads: frozenset[tuple[int, int]]) -> NotePlan:
        """The planned note with ``heads`` knocked out (same pieces and windows)."""
        return self.plan.with_options(knocked_out=heads)

    def traced_with_queries(self) -> Trace:
        """The trace with every head's query and key vectors kept (the neuron view)."""
        return get_trace(self.loaded, self.plan, capture_qk=True)


def begin_run() -> None:
    """Forget the last run's context (the entry script calls this first)."""
    _RUN.context = None


def set_run(loaded: LoadedModel | None, settings: Settings | None) -> None:
    """The sidebar's decision for this run (None: the model could not be loaded)."""
    _RUN.context = None if loaded is None or settings is None else (loaded, settings)


def run_settings() -> tuple[LoadedModel, Settings] | None:
    return getattr(_RUN, "context", None)


def page() -> PageContext:
    """This run's model and note, planned and traced; stops the page with a message on a user error."""
    decided = run_settings()
    if decided is None:
        if PagesManager.uses_pages_directory:
            # The first request after a server start asked for this page's address: Streamlit ran the file on
            # its own, as a legacy pages/ app would. Switch to app.py's navigation and run again.
            PagesManager.uses_pages_directory = False
            st.rerun()
        st.stop()
    loaded, settings = decided
    with user_errors():
        plan = get_plan(loaded, settings.note, settings.options)
        result = get_trace(loaded, plan)
    return PageContext(loaded=loaded, settings=settings, plan=plan, trace=result)


def with_options(settings: Settings, **changes: object) -> Settings:
    """``settings`` with some run options changed (e.g. another model's casing)."""
    return dataclasses.replace(settings, options=dataclasses.replace(settings.options, **changes))


def _leave_legacy_pages_mode() -> None:
    """A page file that Streamlit runs on its own reruns through the entry script before it draws anything.

    Until the entry script has called ``st.navigation`` once, Streamlit treats the app as a legacy
    pages/ app: the first request for a page's address after a server start (``/attention``) runs
    that page file alone, without app.py and so without its sign-in gate. Every page imports this
    module before it draws, and the first import in the process happens in exactly that run: switch
    the legacy mode off and rerun, so that app.py (the gate first) runs instead.
    """
    if PagesManager.uses_pages_directory and get_script_run_ctx(suppress_warning=True) is not None:
        PagesManager.uses_pages_directory = False
        st.rerun()


_leave_legacy_pages_mode()
