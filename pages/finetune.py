"""Fine-tune: train a classification head on labelled notes, see it learn, save it as a checkpoint."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import ui
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
from cbert_core.views.attention_figures import CALM_LAYOUT
from cbert_core.views.labels import escape

st.title("Fine-tune")
st.caption("Teach the model in force a note-level task from labelled examples (for example negated vs "
           "affirmed findings). The model shared with other users is never changed: training works on a copy, "
           "and the result is saved as a new checkpoint folder only when you say so.")
now = ui.current()
loaded, info, settings = now.loaded, now.loaded.info, now.settings

source = st.radio("Training data", ["Example set (30 labelled sentences)", "Upload a labelled CSV or JSONL"],
                  horizontal=True, key="ft_source")
with ui.user_errors():
    if source.startswith("Example"):
        texts, labels = zip(*EXAMPLE_COLLECTION)
        collection = collection_from_texts(list(texts), labels=list(labels))
    else:
        upload = ui.kept_upload("Labelled notes", types=["csv", "tsv", "txt", "jsonl", "json"], key="ft_upload")
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
        text_column = columns[0].selectbox("Text column", text_columns, key=ui.note_choice_key(
            "ft_text_column", upload.digest, text_columns[0]))
        label_column = columns[1].selectbox("Label column", label_columns, key=ui.note_choice_key(
            "ft_label_column", upload.digest, label_columns[0]))
        collection = collection_from_table(table, text_column=text_column, label_column=label_column)
counts = pd.Series(collection.labels).value_counts()
st.caption(f"{len(collection.texts):,} labelled notes: " + ", ".join(f"{escape(str(k))} {v}" for k, v in counts.items()))

with st.expander("Training settings", expanded=False):
    columns = st.columns(4)
    ui.defaults(ft_epochs=5, ft_unfreeze=min(2, info.num_layers), ft_batch=16, ft_validation=0.2, ft_lr_head=1e-3,
                ft_lr_enc=5e-5, ft_max_length=min(128, info.max_tokens - 2))
    epochs = columns[0].number_input("Epochs", 1, 50, key="ft_epochs")
    unfreeze = columns[1].number_input("Unfreeze the top N layers", 0, info.num_layers, key="ft_unfreeze")
    batch_size = columns[2].number_input("Batch size", 1, 128, key="ft_batch")
    validation = columns[3].slider("Validation share", 0.1, 0.5, key="ft_validation")
    columns = st.columns(3)
    lr_head = columns[0].number_input("Head learning rate", 1e-5, 1e-1, format="%.5f", key="ft_lr_head")
    lr_encoder = columns[1].number_input("Encoder learning rate", 1e-6, 1e-2, format="%.6f", key="ft_lr_enc")
    max_length = columns[2].number_input("Longest example (word pieces)", 16, info.max_tokens - 2,
                                         key="ft_max_length")
config = FineTuneConfig(epochs=int(epochs), unfreeze_layers=int(unfreeze), batch_size=int(batch_size),
                        validation_fraction=float(validation), lr_head=float(lr_head), lr_encoder=float(lr_encoder),
                        max_length=int(max_length), lowercase=settings.lowercase)

digest = hashlib.sha256(repr((collection.texts, collection.labels)).encode("utf-8", "surrogatepass")).hexdigest()
try:  # the same split and examples as the run (tokenizes every note once per collection and settings)
    plan = ui.cached(("ft_plan", info.key, digest, config), lambda report: planned_passes(loaded, collection, config),
                     "Counting the training examples' word pieces")
except CbertError:  # the training data cannot be used: Train says why
    plan = None
if plan is not None:
    trained_layers = f"the top {config.unfreeze_layers} layer(s) and the head" if config.unfreeze_layers else "the head"
    found = ui.speed_book().estimate_training(info.key, info.hidden_size, plan)
    st.caption(f"Trains {trained_layers} on {sum(n for _t, n in plan.examples):,} notes for {config.epochs} "
               f"epoch(s), then checks {sum(n for _t, n in plan.validation):,} held-out notes: "
               f"{ui.estimate_text(found)}.")
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
    with ui.user_errors():
        trained = fine_tune(loaded, collection, config=config, on_step=on_step,
                            progress=lambda fraction, message: bar.progress(min(fraction, 1.0), text=message))
    bar.empty()
    curve.empty()
    if plan is not None and not trained.result.cancelled:  # a whole run: the speed of training this model
        ui.speed_book().record_training(info.key, plan, trained.result.seconds, trained.result.setup_seconds)
    st.session_state["ft_model"] = trained  # this session's own copy; never shared

trained = st.session_state.get("ft_model")
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
    loss = go.Figure(go.Scatter(y=outcome.losses, mode="lines", line=dict(color="#1f6f8b")))
    loss.update_layout(title="Training loss per step", height=320, xaxis_title="step", yaxis_title="loss",
                       **CALM_LAYOUT)
    st.plotly_chart(loss, key="ft_loss", width="stretch")
with right:
    if outcome.confusion is not None:
        names = [escape(label) for label in outcome.labels]
        matrix = go.Figure(go.Heatmap(z=outcome.confusion, x=names, y=names, colorscale="Blues",
                                      text=np.asarray(outcome.confusion).astype(str), texttemplate="%{text}",
                                      hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))
        matrix.update_layout(title="Confusion matrix (validation)", height=320, **CALM_LAYOUT)
        matrix.update_yaxes(title="true", autorange="reversed")
        matrix.update_xaxes(title="predicted")
        st.plotly_chart(matrix, key="ft_confusion", width="stretch")

st.subheader("Save as a checkpoint")
st.caption("Writes a standard Hugging Face folder (config with the label names, safetensors weights, tokenizer). "
           "The model picker loads it, so every page works on the fine-tuned model.")
default_folder = str(Path.home() / "cbert-finetuned" / time.strftime("%Y%m%d-%H%M%S"))
ui.defaults(ft_folder=default_folder)
folder = st.text_input("Folder", key="ft_folder")
if st.button("Save", key="go_save"):
    with ui.user_errors():
        saved = save_checkpoint(trained, folder)
    st.session_state["ft_saved_folder"] = str(saved)
if st.session_state.get("ft_saved_folder"):
    st.success(f"Saved to {st.session_state['ft_saved_folder']}", icon=":material/check_circle:")
    if st.button("Use the fine-tuned model on every page", key="go_use_model"):
        ui.use_model(st.session_state["ft_saved_folder"])
