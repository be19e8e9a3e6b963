"""Fine-tune: train a classification head on labelled notes, see it learn, save it as a checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from cbert_core.corpus.collection import (
    candidate_label_columns,
    candidate_text_columns,
    collection_from_table,
    collection_from_texts,
    read_table,
)
from cbert_core.errors import CbertError
from cbert_core.text.examples import EXAMPLE_COLLECTION
from cbert_core.training.finetune import (
    FEW_VALIDATION_NOTES,
    FineTuneConfig,
    fine_tune,
    planned_passes,
    save_checkpoint,
)
from cbert_core.views.labels import escape
from cbert_core.views.training_figures import confusion_figure, loss_figure
from ui import state
from ui.caches import computed, estimate_text, model_turn, speed_book
from ui.context import page
from ui.sidebar import use_model
from ui.widgets import kept_upload, note_choice, user_errors

st.title("Fine-tune")
st.caption("Teach the model in force a note-level task from labelled examples (for example negated vs "
           "affirmed findings). The model shared with other users is never changed: training works on a copy, "
           "and the result is saved as a new checkpoint folder only when you say so.")
now = page()
loaded, info, settings = now.loaded, now.info, now.settings

source = st.radio("Training data", ["Example set (30 labelled sentences)", "Upload a labelled CSV or JSONL"],
                  horizontal=True, key="ft_source", persist_state="session")
with user_errors():
    if source.startswith("Example"):
        texts, labels = zip(*EXAMPLE_COLLECTION)
        collection = collection_from_texts(list(texts), labels=list(labels))
    else:
        upload = kept_upload("Labelled notes", types=["csv", "tsv", "txt", "jsonl", "json"], key="ft_upload")
        if upload is None:
            st.stop()
        table = read_table(upload.data, name=upload.name)
        text_columns = candidate_text_columns(table)
        if not text_columns:
            raise CbertError(f"{upload.name} has no column that holds text. The columns are: "
                             f"{', '.join(map(str, table.frame.columns))}.")
        label_columns = candidate_label_columns(table)
        if not label_columns:
            raise CbertError("Fine-tuning needs a label column with a few distinct values; none was found.")
        columns = st.columns(2)
        # The column choices belong to the file: kept while it stays in use, reset for another file.
        text_column = columns[0].selectbox("Text column", text_columns, persist_state="session", key=note_choice(
            "ft_text_column", upload.digest, text_columns[0], options=text_columns))
        label_column = columns[1].selectbox("Label column", label_columns, persist_state="session", key=note_choice(
            "ft_label_column", upload.digest, label_columns[0], options=label_columns))
        collection = collection_from_table(table, text_column=text_column, label_column=label_column)
counts = pd.Series(collection.labels).value_counts()
st.caption(f"{len(collection.texts):,} labelled notes: " + ", ".join(f"{escape(str(k))} {v}" for k, v in counts.items()))

with st.expander("Training settings", expanded=False):
    columns = st.columns(4)
    state.defaults(ft_epochs=5, ft_unfreeze=min(2, info.num_layers), ft_batch=16, ft_validation=0.2, ft_lr_head=1e-3,
                ft_lr_enc=5e-5, ft_max_length=min(128, info.max_tokens - 2))
    keep = dict(persist_state="session")
    epochs = columns[0].number_input("Epochs", 1, 50, key="ft_epochs", **keep)
    unfreeze = columns[1].number_input("Unfreeze the top N layers", 0, info.num_layers, key="ft_unfreeze", **keep)
    batch_size = columns[2].number_input("Batch size", 1, 128, key="ft_batch", **keep)
    validation = columns[3].slider("Validation share", 0.1, 0.5, key="ft_validation", **keep)
    columns = st.columns(3)
    lr_head = columns[0].number_input("Head learning rate", 1e-5, 1e-1, format="%.5f", key="ft_lr_head", **keep)
    lr_encoder = columns[1].number_input("Encoder learning rate", 1e-6, 1e-2, format="%.6f", key="ft_lr_enc",
                                         **keep)
    max_length = columns[2].number_input("Longest example (word pieces)", 16, info.max_tokens - 2,
                                         key="ft_max_length", **keep)
config = FineTuneConfig(epochs=int(epochs), unfreeze_layers=int(unfreeze), batch_size=int(batch_size),
                        validation_fraction=float(validation), lr_head=float(lr_head), lr_encoder=float(lr_encoder),
                        max_length=int(max_length), lowercase=now.plan.lowercase)

try:  # the same split and examples as the run (tokenizes every note: once per collection and settings)
    work = computed(planned_passes, loaded, collection, config, label="Counting the training examples' word pieces",
                    progress=False)
except CbertError:  # the training data cannot be used: Train says why
    work = None
if work is not None:
    trained_layers = f"the top {config.unfreeze_layers} layer(s) and the head" if config.unfreeze_layers else "the head"
    found = speed_book().estimate_training(info.key, info.hidden_size, work)
    st.caption(f"Trains {trained_layers} on {sum(n for _t, n in work.examples):,} notes for {config.epochs} "
               f"epoch(s), then checks {sum(n for _t, n in work.validation):,} held-out notes: "
               f"{estimate_text(found)}.")
if st.button("Train", type="primary", key="go_train"):
    bar = st.progress(0.0, text="Starting")
    curve = st.empty()
    losses: list[float] = []
    last_draw = [0.0]

    def on_step(step: object) -> None:
        losses.append(float(step.loss))
        bar.progress(step.step / max(step.total_steps, 1),
                     text=f"Step {step.step} of {step.total_steps} (epoch {step.epoch}): loss {step.loss:.4f}")
        if time.perf_counter() - last_draw[0] > 1.0:  # a live loss curve, redrawn at most once a second
            curve.line_chart(pd.DataFrame({"training loss": losses}), height=220)
            last_draw[0] = time.perf_counter()

    st.caption("Change any input or press Stop (top right) to cancel training.")
    # A turn on the shared cores like every analysis: between steps, other sessions' waiting work goes first.
    with user_errors(), model_turn(lambda fraction, message: bar.progress(min(fraction, 1.0), text=message)) as (
            turn, step_progress):
        trained = fine_tune(loaded, collection, config=config, on_step=lambda step: (on_step(step), turn.pause()),
                            progress=step_progress)
    bar.empty()
    curve.empty()
    if work is not None and not trained.result.cancelled:  # a whole run: the speed of training this model
        speed_book().record_training(info.key, work, max(trained.result.seconds - turn.paused_s, 0.0),
                                     trained.result.setup_seconds)
    st.session_state[state.FT_MODEL] = trained  # this session's own copy; never shared

trained = st.session_state.get(state.FT_MODEL)
if trained is None:
    st.stop()
outcome = trained.result
st.subheader("Result")
if outcome.cancelled:
    st.warning("Training was cancelled; the figures below are for the steps that ran.", icon=":material/warning:")
columns = st.columns(4)
columns[0].metric("Validation accuracy", f"{outcome.validation_accuracy:.1%}" if outcome.validation_accuracy
                  is not None else "n/a")
columns[1].metric("Majority baseline", f"{outcome.majority_baseline:.1%}")
columns[2].metric("Macro-F1", f"{outcome.macro_f1:.3f}" if outcome.macro_f1 is not None else "n/a")
columns[3].metric("Training time", f"{outcome.seconds:.0f} s")
interval = outcome.accuracy_interval(0.95)
if interval is not None:
    size = outcome.validation_size
    st.caption(f"These figures rest on {size:,} held-out validation note{'s' if size != 1 else ''} "
               f"({outcome.validation_correct:,} classified correctly); 95% interval of the accuracy: "
               f"{interval[0]:.0%} to {interval[1]:.0%}.")
    if size < FEW_VALIDATION_NOTES:
        st.warning(f"Only {size:,} validation notes: the accuracy of {outcome.validation_accuracy:.1%} is uncertain. "
                   f"With 95% confidence the model's real accuracy lies anywhere between {interval[0]:.0%} and "
                   f"{interval[1]:.0%} (Wilson interval). Add labelled notes or raise the validation share for "
                   f"a firmer figure.", icon=":material/warning:")
left, right = st.columns(2)
with left:
    st.plotly_chart(loss_figure(outcome.losses), key="ft_loss", width="stretch")
with right:
    if outcome.confusion is not None:
        st.plotly_chart(confusion_figure(outcome.confusion, outcome.labels), key="ft_confusion", width="stretch")

st.subheader("Save as a checkpoint")
st.caption("Writes a standard Hugging Face folder (config with the label names, safetensors weights, tokenizer). "
           "The model picker loads it, so every page works on the fine-tuned model.")
default_folder = str(Path.home() / "cbert-finetuned" / time.strftime("%Y%m%d-%H%M%S"))
state.defaults(ft_folder=default_folder)
folder = st.text_input("Folder", key="ft_folder", persist_state="session")
if st.button("Save", key="go_save"):
    with user_errors():
        saved = save_checkpoint(trained, folder)
    st.session_state[state.FT_SAVED_FOLDER] = str(saved)
if st.session_state.get(state.FT_SAVED_FOLDER):
    st.success(f"Saved to {st.session_state[state.FT_SAVED_FOLDER]}", icon=":material/check_circle:")
    if st.button("Use the fine-tuned model on every page", key="go_use_model"):
        use_model(st.session_state[state.FT_SAVED_FOLDER])
