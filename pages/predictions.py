"""Predictions: what the model thinks, for the head it has; with heads knocked out beside the intact model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import ui
from cbert_core import predict
from cbert_core.views.attention_figures import CALM_LAYOUT
from cbert_core.views.labels import escape
from cbert_core.views.text_html import scores_html

DEFAULT_DESCRIPTIONS = "pneumonia present\nno evidence of pneumonia"

st.title("Predictions")
now = ui.current()
loaded, info, settings, result = now.loaded, now.loaded.info, now.settings, now.trace
knocked = ui.knockout_picker(info)
versions = [("intact model", frozenset())] + ([("heads knocked out", knocked)] if knocked else [])
common = dict(lowercase=settings.lowercase, max_chars=settings.max_chars)


def probability_bars(names: list[str], probs: np.ndarray, title: str) -> go.Figure:
    figure = go.Figure(go.Bar(x=probs, y=[escape(name) for name in names], orientation="h", marker_color="#1f6f8b",
                              hovertemplate="%{y}: %{x:.1%}<extra></extra>"))
    figure.update_layout(title=title, height=max(220, 28 * len(names) + 90), xaxis=dict(tickformat=".0%"),
                         **CALM_LAYOUT)
    figure.update_yaxes(autorange="reversed", type="category")
    return figure


def side_by_side(draw: callable) -> None:
    """Run ``draw(label, heads)`` for the intact model and, if chosen, the knocked-out one."""
    columns = st.columns(len(versions))
    for column, (label, heads) in zip(columns, versions):
        with column:
            if len(versions) > 1:
                st.markdown(f"**{label}**")
            draw(label, heads)


if info.head_kind == "masked-lm":
    st.caption("This checkpoint has a masked-language-model head: it guesses hidden words. Type [MASK] in the "
               "note, or pick a word below to hide it. Guesses reflect patterns in the training text, not "
               "clinical truth.")
    st.subheader("Fill in the blanks")
    masks = result.mask_positions
    if len(masks) == 0:
        st.info("The note has no [MASK]. Type [MASK] where you want the model's suggestion, or mask a word below.",
                icon=":material/info:")
    else:
        def draw_fill(label: str, heads: frozenset) -> None:
            with ui.user_errors():
                filled = ui.analysis("fill_mask", now, (tuple(sorted(heads)),), lambda report: predict.fill_mask(
                    loaded, settings.note, knocked_out=heads, **common), "Filling in the masks")
            for index in range(len(filled.positions)):
                start, end = filled.char_spans[index]
                before = settings.note[max(0, start - 40):start].replace("\n", " ")
                st.plotly_chart(probability_bars(list(filled.top_tokens[index]), filled.top_probs[index],
                                                 f"[MASK] {index + 1} … {escape(before)} ___"),
                                key=f"pred_fill_{label}_{index}", width="stretch")
        side_by_side(draw_fill)

    st.subheader("Hide a word and see what the model would put there")
    spans = result.word_spans
    words = [result.text[a:b] for a, b in spans.tolist()]
    word_names = tuple(f"{word}  (word {i + 1})" for i, word in enumerate(words))
    first_word = min(len(words) - 1, next((i for i, w in enumerate(words) if w.lower() in
                                           {"denies", "copd", "pneumonia"}), 0))
    choice = st.selectbox("Word", range(len(words)), format_func=word_names.__getitem__,
                          key=ui.note_choice_key("q_word", now.trace_key, first_word))
    start, end = (int(v) for v in spans[choice])

    def draw_masked(label: str, heads: frozenset) -> None:
        with ui.user_errors():
            hidden = ui.analysis("mask_word", now, (start, end, tuple(sorted(heads))), lambda report: predict.mask_word(
                loaded, settings.note, start, end, knocked_out=heads, **common), "Filling in the hidden word")
        rows = [index for index in range(len(hidden.positions)) if hidden.original_ids[index] >= 0]
        for index in rows:
            st.plotly_chart(probability_bars(list(hidden.top_tokens[index]), hidden.top_probs[index],
                                             f"piece '{escape(hidden.original_tokens[index])}' "
                                             f"(model gives it {hidden.original_probs[index]:.1%})"),
                            key=f"pred_masked_{label}_{index}", width="stretch")
    side_by_side(draw_masked)

    st.subheader("Surprise map")
    st.caption("Each word piece is hidden in turn and the model scores the original: unusual abbreviations, "
               "typos and unexpected findings stand out in red (low pseudo-log-likelihood).")
    exact = st.toggle("Exact (one piece hidden at a time; slower)", key="pred_pll_exact",
                      help="Fast mode hides every 8th piece together: each piece still sees 7/8 of its context.")
    stride = 0 if exact else 8
    if ui.has_analysis("pll", now, (stride, ())) or st.button("Compute the surprise map", key="go_pll"):
        with ui.user_errors():
            pll = ui.analysis("pll", now, (stride, ()), lambda report: predict.pseudo_log_likelihood(
                loaded, settings.note, stride=stride, precision=settings.precision, progress=report, **common),
                "Scoring every word piece")
        finite = np.isfinite(pll.word_logprobs)
        surprise = np.where(finite, -pll.word_logprobs, 0.0)
        st.html(scores_html(settings.note, pll.word_spans, surprise.astype(np.float32),
                            title=[f"log p = {v:.2f}" if np.isfinite(v) else "not scored" for v in pll.word_logprobs]))
        order = np.argsort(-surprise)[:15]
        st.dataframe(pd.DataFrame({"word": [settings.note[a:b] for a, b in pll.word_spans[order].tolist()],
                                   "log-probability": pll.word_logprobs[order]}), hide_index=True)
        st.caption(f"Note pseudo-log-likelihood {pll.total:.1f}; {pll.forward_rows} masked copies in "
                   f"{pll.seconds:.1f} s ({pll.precision}).")

elif info.head_kind == "sequence-classification":
    st.caption("This checkpoint classifies the whole note. A note longer than one window is classified per "
               "window and the probabilities are averaged.")

    def draw_classes(label: str, heads: frozenset) -> None:
        with ui.user_errors():
            classes = ui.analysis("classify", now, (tuple(sorted(heads)),), lambda report: predict.classify(
                loaded, settings.note, knocked_out=heads, progress=report, **common), "Classifying")
        st.plotly_chart(probability_bars(list(classes.labels), classes.probs, "Label probabilities"),
                        key=f"pred_classes_{label}", width="stretch")
    side_by_side(draw_classes)

elif info.head_kind == "token-classification":
    st.caption("This checkpoint labels each word (for example problems, treatments, tests).")

    def draw_entities(label: str, heads: frozenset) -> None:
        with ui.user_errors():
            tagged = ui.analysis("entities", now, (tuple(sorted(heads)),), lambda report: predict.token_labels(
                loaded, settings.note, knocked_out=heads, **common), "Labelling words")
        spans = np.array([[e.start, e.end] for e in tagged.entities], dtype=np.int32).reshape(-1, 2)
        st.html(scores_html(settings.note, spans, np.array([e.score for e in tagged.entities], np.float32),
                            title=[f"{e.label} ({e.score:.0%})" for e in tagged.entities]))
        st.dataframe(pd.DataFrame([{"text": e.text, "label": e.label, "score": e.score, "start": e.start,
                                    "end": e.end} for e in tagged.entities]), hide_index=True)
    side_by_side(draw_entities)

else:
    st.caption(f"{info.name} has no prediction head: it turns text into vectors. Here it ranks label "
               "descriptions you write by **embedding similarity** (cosine similarity of mean-pooled vectors). "
               "This is a zero-shot ranking aid, not a trained classifier and not a probability of disease.")
    ui.defaults(pred_descriptions=DEFAULT_DESCRIPTIONS, pred_temperature=0.05)
    descriptions = [line.strip() for line in st.text_area(
        "Label descriptions (one per line)", key="pred_descriptions",
        height=100).splitlines() if line.strip()]
    temperature = st.slider("Temperature (lower = sharper ranking)", 0.01, 1.0, key="pred_temperature")

    def draw_similarity(label: str, heads: frozenset) -> None:
        with ui.user_errors():
            similar = ui.analysis("similarity", now, (tuple(descriptions), temperature, tuple(sorted(heads))),
                                  lambda report: predict.embedding_similarity(
                                      loaded, settings.note, descriptions, temperature=temperature,
                                      knocked_out=heads, progress=report, **common), "Comparing embeddings")
        st.plotly_chart(probability_bars(list(similar.descriptions), similar.note_probs,
                                         "Whole note: share of the similarity ranking"),
                        key=f"pred_similar_{label}", width="stretch")
        st.dataframe(pd.DataFrame({"description": similar.descriptions, "cosine": similar.note_similarity}),
                     hide_index=True)
        if len(similar.sentence_spans):
            best = similar.sentence_probs.argmax(-1)
            st.dataframe(pd.DataFrame({
                "sentence": [settings.note[a:b] for a, b in similar.sentence_spans.tolist()],
                "closest description": [similar.descriptions[i] for i in best],
                "share": similar.sentence_probs.max(-1)}), hide_index=True, width="stretch")
    side_by_side(draw_similarity)
