"""The Fine-tune page's first stage: train a note classifier (a sequence-classification head)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cbert_core.corpus.collection import (
    candidate_label_columns,
    collection_from_table,
    collection_from_texts,
)
from cbert_core.errors import CbertError
from cbert_core.text.examples import EXAMPLE_COLLECTION
from cbert_core.training.finetune import FEW_VALIDATION_NOTES, FineTuneConfig, fine_tune, planned_passes
from cbert_core.views.labels import escape
from cbert_core.views.training_figures import confusion_figure, loss_figure
from ui import state
from ui.caches import computed, estimate_text, speed_book
from ui.context import PageContext
from ui.training_run import (
    KEEP,
    KeptRun,
    LiveLoss,
    common_settings,
    result_header,
    run_stage,
    save_section,
    uploaded_notes,
)
from ui.widgets import note_choice, user_errors


def classify_stage(now: PageContext) -> None:
    """Labelled notes -> a classification head, its validation figures, and the checkpoint."""
    loaded, info = now.loaded, now.info
    st.caption("Teach the model a note-level task from labelled examples (for example negated vs affirmed "
               "findings): a classification head reads each note's [CLS] vector.")
    source = st.radio("Training data", ["Example set (30 labelled sentences)", "Upload a labelled CSV or JSONL"],
                      horizontal=True, key="ft_source", **KEEP)
    with user_errors():
        if source.startswith("Example"):
            texts, labels = zip(*EXAMPLE_COLLECTION)
            collection = collection_from_texts(list(texts), labels=list(labels))
        else:
            upload, table, text_columns = uploaded_notes("Labelled notes", "ft_upload")
            label_columns = candidate_label_columns(table)
            if not label_columns:
                raise CbertError("Fine-tuning needs a label column with a few distinct values; none was found.")
            columns = st.columns(2)
            # The column choices belong to the file: kept while it stays in use, reset for another file.
            text_column = columns[0].selectbox("Text column", text_columns, **KEEP, key=note_choice(
                "ft_text_column", upload.digest, text_columns[0], options=text_columns))
            label_column = columns[1].selectbox("Label column", label_columns, **KEEP, key=note_choice(
                "ft_label_column", upload.digest, label_columns[0], options=label_columns))
            collection = collection_from_table(table, text_column=text_column, label_column=label_column)
    counts = pd.Series(collection.labels).value_counts()
    st.caption(f"{len(collection.texts):,} labelled notes: " +
               ", ".join(f"{escape(str(k))} {v}" for k, v in counts.items()))

    with st.expander("Training settings", expanded=False):
        chosen = common_settings("ft", info, epochs=5, unfreeze=min(2, info.num_layers), batch=16, validation=0.2,
                                 lr_head=1e-3, lr_enc=5e-5, max_length=min(128, info.max_tokens - 2))
    config = FineTuneConfig(**chosen, lowercase=now.plan.lowercase)

    try:  # the same split and examples as the run (tokenizes every note: once per collection and settings)
        work = computed(planned_passes, loaded, collection, config, label="Counting the training examples' word pieces",
                        progress=False)
    except CbertError:  # the training data cannot be used: Train says why
        work = None
    if work is not None:
        trained_layers = (f"the top {config.unfreeze_layers} layer(s) and the head" if config.unfreeze_layers
                          else "the head")
        found = speed_book().estimate_training(info.key, info.hidden_size, work)
        st.caption(f"Trains {trained_layers} on {sum(n for _t, n in work.examples):,} notes for {config.epochs} "
                   f"epoch(s), then checks {sum(n for _t, n in work.validation):,} held-out notes: "
                   f"{estimate_text(found)}.")
    if st.button("Train", type="primary", key="go_train"):
        st.caption("Press Stop (top right) or change any input to stop training: what was trained so far is kept.")
        live, run = LiveLoss.drawn(), KeptRun()
        trained = run_stage("fine_tune", info, work, live, run, lambda progress: fine_tune(
            loaded, collection, config=config, on_step=run.calls(live.step), progress=progress, cancel=run))
        st.session_state[state.FT_MODEL] = trained  # this session's own copy; never shared
        run.finish()

    trained = st.session_state.get(state.FT_MODEL)
    if trained is None:
        st.stop()
    outcome = trained.result
    result_header(outcome, kept="(no validation figures)")
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
            st.warning(f"Only {size:,} validation notes: the accuracy of {outcome.validation_accuracy:.1%} is "
                       f"uncertain. With 95% confidence the model's real accuracy lies anywhere between "
                       f"{interval[0]:.0%} and {interval[1]:.0%} (Wilson interval). Add labelled notes or raise the "
                       f"validation share for a firmer figure.", icon=":material/warning:")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(loss_figure(outcome.losses), key="ft_loss", width="stretch")
    with right:
        if outcome.confusion is not None:
            st.plotly_chart(confusion_figure(outcome.confusion, outcome.labels), key="ft_confusion", width="stretch")
    save_section(trained, prefix="ft", saved_key=state.FT_SAVED_FOLDER, folder_name="cbert-finetuned",
                 what="config with the label names")
