"""The Fine-tune page's tagger stage: train a word tagger on labelled spans, score the spans it finds on
held-out texts, list the wrong ones (each opens in the explorer), save it for the Predictions page."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from cbert_core.corpus.span_files import SPAN_FORMAT_HELP, read_span_file
from cbert_core.errors import CbertError
from cbert_core.text.spans import SpanDataset, example_dataset
from cbert_core.training.tagger import TaggerConfig, planned_passes, train_tagger
from cbert_core.views.labels import escape
from cbert_core.views.text_html import scores_html
from cbert_core.views.training_figures import entity_scores_figure, loss_figure
from ui import state
from ui.caches import computed, estimate_text, speed_book
from ui.context import PageContext
from ui.note_inputs import open_note
from ui.training_run import KEEP, KeptRun, LiveLoss, common_settings, result_header, run_stage, save_section
from ui.widgets import kept_upload, note_choice, user_errors

FIRST_PIECE, ALL_PIECES = "the first piece of each word", "every piece"


def spans_html(text: str, spans: list[tuple[int, int]], labels: list[str]) -> str:
    """The text with ``spans`` tinted, each titled with its label."""
    return scores_html(text, np.asarray(spans, dtype=np.int32).reshape(-1, 2), np.ones(len(spans), np.float32),
                       title=labels)


def tagger_stage(now: PageContext) -> None:
    """Span annotations -> a token-classification head, entity scores, wrong spans, the checkpoint."""
    loaded, info = now.loaded, now.info
    st.caption("Teach the model to tag words: it learns a label per word piece (B- begins a span, I- continues it, "
               "O is outside) from texts with labelled character spans, the way clinical entity and assertion "
               "taggers are made.")
    source = st.radio("Training data", ["Example spans (conditions and their assertion in 80 sentences)",
                                        "Upload spans (CSV/JSONL with character spans, or CoNLL BIO)"],
                      horizontal=True, key="tg_source", **KEEP)
    with user_errors():
        if source.startswith("Example"):
            dataset = example_dataset()
        else:
            st.caption(f"Expected: {SPAN_FORMAT_HELP}.")
            upload = kept_upload("Labelled spans", types=["csv", "tsv", "jsonl", "json", "conll", "bio", "iob", "txt"],
                                 key="tg_upload")
            if upload is None:
                st.stop()
            dataset = read_span_file(upload.data, upload.name)
    for warning in dataset.warnings:
        st.warning(warning, icon=":material/warning:")
    counts = pd.Series([span.label for example in dataset.examples for span in example.spans]).value_counts()
    st.caption(f"{len(dataset):,} texts with {dataset.span_count:,} spans: " +
               ", ".join(f"{escape(str(k))} {v}" for k, v in counts.items()))
    with st.expander("A few of the texts, spans tinted (hover for the label)"):
        for example in dataset.examples[:5]:
            st.html(spans_html(example.text, [(s.start, s.end) for s in example.spans],
                               [s.label for s in example.spans]))

    with st.expander("Training settings", expanded=False):
        chosen = common_settings("tg", info, epochs=15, unfreeze=min(2, info.num_layers), batch=8, validation=0.2,
                                 lr_head=5e-3, lr_enc=1e-4, max_length=min(128, info.max_tokens - 2))
        state.defaults(tg_units=FIRST_PIECE)
        units = st.radio("Label", [FIRST_PIECE, ALL_PIECES], key="tg_units", horizontal=True, **KEEP,
                         help="First piece: a word's other pieces are ignored in training (the Predictions page "
                              "reads a word by its first piece). Every piece: each piece of a span is trained on, "
                              "and a span that starts inside a word keeps its own pieces.")
    config = TaggerConfig(**chosen, all_pieces=units == ALL_PIECES, lowercase=now.plan.lowercase)

    try:
        work = computed(planned_passes, loaded, dataset, config, label="Counting the texts' word pieces",
                        progress=False)
    except CbertError as problem:
        st.error(str(problem), icon=":material/warning:")
        work = None
    if work is not None:
        found = speed_book().estimate_training(info.key, info.hidden_size, work)
        st.caption(f"Trains on {sum(n for _t, n in work.examples):,} texts for {config.epochs} epoch(s), then tags "
                   f"{sum(n for _t, n in work.validation):,} held-out texts: {estimate_text(found)}.")
    if st.button("Train the tagger", type="primary", key="go_tag"):
        st.caption("Press Stop (top right) or change any input to stop: the model as trained so far is kept.")
        live, run = LiveLoss.drawn(), KeptRun()
        trained = run_stage("train_tagger", info, work, live, run, lambda progress: train_tagger(
            loaded, dataset, config=config, on_step=run.calls(live.step), progress=progress, cancel=run))
        st.session_state[state.TG_MODEL] = (trained, dataset)  # this session's own copy; never shared
        run.finish()

    kept = st.session_state.get(state.TG_MODEL)
    if kept is None:
        st.stop()
    trained, trained_on = kept
    outcome = trained.result
    result_header(outcome, kept="(no held-out scores)")
    overall = outcome.score()
    columns = st.columns(4)
    for column, (name, value) in zip(columns, (("Entity F1", "f1"), ("Precision", "precision"),
                                                ("Recall", "recall"))):
        column.metric(name, f"{getattr(overall, value):.2f}" if overall is not None else "n/a")
    columns[3].metric("Training time", f"{outcome.seconds:.0f} s")
    if overall is not None:
        st.caption(f"On {len(outcome.validation_rows):,} held-out texts holding {overall.support:,} annotated spans: a "
                   "span counts only when the tagger finds its label and both its ends exactly (seqeval, on "
                   f"{'word pieces' if outcome.config.all_pieces else 'words'}).")
    if outcome.widened_spans:
        st.caption(f"{outcome.widened_spans:,} span(s) started or ended inside a "
                   f"{'word piece' if outcome.config.all_pieces else 'word'} and were widened to whole ones.")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(loss_figure(outcome.losses), key="tg_loss", width="stretch")
    with right:
        if outcome.scores:
            st.plotly_chart(entity_scores_figure([s.label for s in outcome.scores], [s.precision for s in outcome.scores],
                                                 [s.recall for s in outcome.scores], [s.f1 for s in outcome.scores]),
                            key="tg_scores", width="stretch")
    if outcome.scores:
        st.dataframe(pd.DataFrame([{"label": s.label, "precision": s.precision, "recall": s.recall, "F1": s.f1,
                                    "annotated spans": s.support} for s in outcome.scores]),
                     hide_index=True, key="tg_score_table")
    if outcome.wrong:
        wrong_spans_section(outcome, trained_on)
    elif overall is not None:
        st.success("Every held-out span was found exactly.", icon=":material/check_circle:")
    save_section(trained, prefix="tg", saved_key=state.TG_SAVED_FOLDER, folder_name="cbert-tagger",
                 what="a token-classification config with the B-/I-/O tags")


def wrong_spans_section(outcome: object, dataset: SpanDataset) -> None:
    """The wrong spans as a table; one of them drawn on its text and opened in the explorer."""
    st.subheader("Wrong spans")
    texts = [dataset.examples[item.example].text for item in outcome.wrong]

    def shown(text: str, span: tuple[int, int] | None) -> str:
        return "" if span is None else text[span[0]:span[1]]

    st.dataframe(pd.DataFrame([{
        "text": item.example + 1, "what went wrong": item.kind,
        "annotated": shown(text, item.expected), "annotated label": item.expected_label or "",
        "found": shown(text, item.predicted), "found label": item.predicted_label or "",
        "sentence": text[:120]} for item, text in zip(outcome.wrong, texts)]), hide_index=True, width="stretch",
        key="tg_wrong_table")
    names = tuple(f"text {item.example + 1}: {item.kind} '{shown(text, item.expected or item.predicted)}'"
                  for item, text in zip(outcome.wrong, texts))
    chosen = st.selectbox("Look at a wrong span", range(len(names)), format_func=names.__getitem__, **KEEP,
                          key=note_choice("tg_wrong", (outcome.seconds, len(names)), 0, options=range(len(names))))
    item, text = outcome.wrong[chosen], texts[chosen]
    annotated = [(s.start, s.end) for s in dataset.examples[item.example].spans]
    st.markdown("Annotated:")
    st.html(spans_html(text, annotated, [s.label for s in dataset.examples[item.example].spans]))
    if item.predicted is not None:
        st.markdown(f"Found: '{escape(shown(text, item.predicted))}' as {escape(item.predicted_label)}")
    if st.button("Open this text in the explorer", key="go_open_wrong", icon=":material/open_in_new:"):
        open_note(text)
