"""What the Fine-tune page's three training stages share: their common settings, a run that keeps what it
did when the user stops it, the live loss curve, and saving the result as a checkpoint.

Stopping keeps what was done: Streamlit stops a script (Stop, or any changed input) by raising an exception
from the next ``st`` call, which would throw the half-trained model away with it. :class:`KeptRun` catches
that exception inside the training callbacks, tells the core to stop (its ``cancel``), lets the run return
what it did, and raises the exception again once the result is stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException

from cbert_core.corpus.collection import DataTable, candidate_text_columns, read_table
from cbert_core.errors import CbertError
from cbert_core.model.loading import ModelInfo
from cbert_core.serving.speed import Passes
from ui import state
from ui.audit import audit_work
from ui.caches import model_turn, speed_book
from ui.sidebar import use_model
from ui.widgets import KeptFile, Report, kept_upload, user_errors

KEEP = dict(persist_state="session")


@dataclass
class KeptRun:
    """Callbacks for a training run that stop it, keeping its result, when Streamlit interrupts the script.

    Pass :meth:`calls` around every callback that draws (progress, live charts) and the object itself as
    ``cancel``; after the run returns, store its result, then call :meth:`finish`.
    """

    interrupted: ScriptControlException | None = field(default=None)

    def __call__(self) -> bool:
        return self.interrupted is not None

    def calls(self, function: Callable[..., Any]) -> Callable[..., None]:
        def guarded(*args: Any) -> None:
            if self.interrupted is not None:
                return  # nothing more is drawn: every st call would raise again after a stop
            try:
                function(*args)
            except ScriptControlException as interruption:
                self.interrupted = interruption

        return guarded

    def finish(self) -> None:
        """Let Streamlit go on with the stop or rerun the run caught (after the result was stored)."""
        if self.interrupted is not None:
            raise self.interrupted


def common_settings(prefix: str, info: ModelInfo, **defaults: Any) -> dict[str, Any]:
    """The settings every stage has (epochs, layers trained, batch, held-out share, learning rates, length),
    drawn in the open expander; keys ``<prefix>_epochs`` and so on, first values from ``defaults``."""
    state.defaults(**{f"{prefix}_{name}": value for name, value in defaults.items()})
    columns = st.columns(4)
    values = dict(
        epochs=columns[0].number_input("Epochs", 1, 50, key=f"{prefix}_epochs", **KEEP),
        unfreeze_layers=columns[1].number_input("Unfreeze the top N layers", 0, info.num_layers,
                                                key=f"{prefix}_unfreeze", **KEEP,
                                                help="The layers below stay as they are (frozen, no dropout); "
                                                     "training fewer layers is faster and forgets less."),
        batch_size=columns[2].number_input("Batch size", 1, 128, key=f"{prefix}_batch", **KEEP),
        validation_fraction=columns[3].slider("Held-out share", 0.05, 0.5, key=f"{prefix}_validation", **KEEP),
    )
    columns = st.columns(3)
    values.update(
        lr_head=columns[0].number_input("Head learning rate", 1e-5, 1e-1, format="%.5f", key=f"{prefix}_lr_head",
                                        **KEEP),
        lr_encoder=columns[1].number_input("Encoder learning rate", 1e-6, 1e-2, format="%.6f",
                                           key=f"{prefix}_lr_enc", **KEEP),
        max_length=columns[2].number_input("Longest example (word pieces)", 16, info.max_tokens - 2,
                                           key=f"{prefix}_max_length", **KEEP),
    )
    return {name: (float(value) if name in {"lr_head", "lr_encoder", "validation_fraction"} else int(value))
            for name, value in values.items()}


@dataclass
class LiveLoss:
    """A progress bar and a loss curve redrawn at most once a second while a run trains."""

    bar: Any
    curve: Any
    losses: list[float] = field(default_factory=list)
    last_draw: float = 0.0

    @classmethod
    def drawn(cls) -> LiveLoss:
        return cls(bar=st.progress(0.0, text="Starting"), curve=st.empty())

    def step(self, report: Any) -> None:
        self.losses.append(float(report.loss))
        self.bar.progress(report.step / max(report.total_steps, 1),
                          text=f"Step {report.step} of {report.total_steps} (epoch {report.epoch + 1}): "
                               f"loss {report.loss:.4f}")
        if time.perf_counter() - self.last_draw > 1.0:
            self.curve.line_chart(pd.DataFrame({"training loss": self.losses}), height=220)
            self.last_draw = time.perf_counter()

    def progress(self, fraction: float, message: str) -> None:
        self.bar.progress(min(max(fraction, 0.0), 1.0), text=message)

    def clear(self) -> None:
        self.bar.empty()
        self.curve.empty()


def run_stage(analysis: str, info: ModelInfo, work: Passes | None, live: LiveLoss, run: KeptRun,
              train: Callable[[Report], Any]) -> Any:
    """``train(progress)`` for one stage's run, as every stage runs it: one audit line (ok, cancelled or
    failed), a turn on the shared cores that lets waiting sessions go first between steps, the live curve
    cleared after a whole run, and the run's speed recorded for estimates without the time it paused.

    Returns:
        What ``train`` returned (its ``result`` says whether it was cancelled); an error a user can cause
        is shown by ``user_errors``, which stops the script.
    """
    with user_errors(), audit_work(analysis, info.name) as audit_fields, \
            model_turn(run.calls(live.progress)) as (turn, step_progress):
        trained = train(step_progress)
        if trained.result.cancelled:
            audit_fields["outcome"] = "cancelled"
    if not run():
        live.clear()
    if work is not None and not trained.result.cancelled:  # a whole run: the speed of training this model
        speed_book().record_training(info.key, work, max(trained.result.seconds - turn.paused_s, 0.0),
                                     trained.result.setup_seconds)
    return trained


def uploaded_notes(label: str, key: str) -> tuple[KeptFile, DataTable, list[str]]:
    """A kept CSV/TSV/JSONL upload, its table and the columns that hold text; stops until a file is given.

    Raises:
        CbertError: the file has no column that holds text (the message lists its columns).
    """
    upload = kept_upload(label, types=["csv", "tsv", "txt", "jsonl", "json"], key=key)
    if upload is None:
        st.stop()
    table = read_table(upload.data, name=upload.name)
    text_columns = candidate_text_columns(table)
    if not text_columns:
        raise CbertError(f"{upload.name} has no column that holds text. The columns are: "
                         f"{', '.join(map(str, table.frame.columns))}.")
    return upload, table, text_columns


def result_header(outcome: Any, *, kept: str) -> None:
    """The "Result" heading of a stage, with a warning when the run was stopped (``kept`` says what the
    figures below still hold, e.g. "(no validation figures)")."""
    st.subheader("Result")
    if outcome.cancelled:
        st.warning(f"Training was stopped after {outcome.steps_done} of {outcome.total_steps} steps; the model as "
                   f"trained so far is kept {kept}.", icon=":material/warning:")


def save_section(trained: Any, *, prefix: str, saved_key: str, folder_name: str, what: str) -> None:
    """A folder, a Save button writing ``trained`` (its ``save(folder)``) there, and a button to use it."""
    st.subheader("Save as a checkpoint")
    st.caption(f"Writes a standard Hugging Face folder ({what}, safetensors weights, tokenizer) only to the folder "
               "you choose. The model picker loads it, so every page works on the trained model.")
    state.defaults(**{f"{prefix}_folder": str(Path.home() / folder_name / time.strftime("%Y%m%d-%H%M%S"))})
    folder = st.text_input("Folder", key=f"{prefix}_folder", **KEEP)
    if st.button("Save", key=f"go_save_{prefix}" if prefix != "ft" else "go_save"):
        with user_errors():
            saved = trained.save(folder)
        st.session_state[saved_key] = str(saved)
    if st.session_state.get(saved_key):
        st.success(f"Saved to {st.session_state[saved_key]}", icon=":material/check_circle:")
        if st.button("Use the trained model on every page", key=f"go_use_{prefix}" if prefix != "ft" else
                     "go_use_model"):
            use_model(st.session_state[saved_key])
