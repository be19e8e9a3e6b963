"""Predictions: what the model thinks, for the head it has; with heads knocked out beside the intact model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from cbert_core.analyses import similarity
from cbert_core.analyses.labelling import classify, token_labels
from cbert_core.analyses.predict import fill_mask, mask_word, planned_passes, pseudo_log_likelihood
from cbert_core.run.plan import NotePlan
from cbert_core.views.labels import escape
from cbert_core.views.prediction_figures import cosine_bars, format_probability, probability_bars
from cbert_core.views.text_html import scores_html
from ui import state
from ui.caches import computed, estimate, is_computed
from ui.context import page
from ui.widgets import ask_once, knockout_picker, note_choice, user_errors

SURPRISE_MEAN, SURPRISE_SUM = "per piece (mean)", "per word (sum)"
FAST_STRIDE = 8  # the surprise map's fast mode masks every 8th piece together
SHARE_HELP = ("softmax(cosine / temperature) over the descriptions: the shares always sum to 100%, even when the "
              "text is far from every description. Read the cosine.")

st.title("Predictions")
now = page()
loaded, info, settings, result = now.loaded, now.info, now.settings, now.trace
knocked = knockout_picker(info)
versions = [("intact model", now.plan)] + ([("heads knocked out", now.with_heads_out(knocked))] if knocked else [])


def side_by_side(draw: callable) -> None:
    """Run ``draw(label, plan)`` for the intact model and, if chosen, the knocked-out one."""
    columns = st.columns(len(versions))
    for column, (label, plan) in zip(columns, versions):
        with column:
            if len(versions) > 1:
                st.markdown(f"**{label}**")
            draw(label, plan)


def masked_lm_section() -> None:
    """Fill-mask, a hidden word and the surprise map (a masked-language-model head)."""
    st.caption("This checkpoint has a masked-language-model head: it guesses hidden words. Type [MASK] in the "
               "note, or pick a word below to hide it. Guesses reflect patterns in the training text, not "
               "clinical truth.")
    st.subheader("Fill in the blanks")
    masks = result.mask_positions
    if len(masks) == 0:
        st.info("The note has no [MASK]. Type [MASK] where you want the model's suggestion, or mask a word below.",
                icon=":material/info:")
    else:
        def draw_fill(label: str, plan: NotePlan) -> None:
            with user_errors():
                filled = computed(fill_mask, loaded, plan, label="Filling in the masks", progress=False)
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
    choice = st.selectbox("Word", range(len(words)), format_func=word_names.__getitem__, persist_state="session",
                          key=note_choice("q_word", result.key, first_word, options=range(len(words))))
    start, end = (int(v) for v in spans[choice])

    def draw_masked(label: str, plan: NotePlan) -> None:
        with user_errors():
            hidden = computed(mask_word, loaded, plan, start, end, label="Filling in the hidden word", progress=False)
        rows = [index for index in range(len(hidden.positions)) if hidden.original_ids[index] >= 0]
        for index in rows:
            st.plotly_chart(probability_bars(list(hidden.top_tokens[index]), hidden.top_probs[index],
                                             f"piece '{escape(hidden.original_tokens[index])}' "
                                             f"(model gives it {format_probability(hidden.original_probs[index])})"),
                            key=f"pred_masked_{label}_{index}", width="stretch")
    side_by_side(draw_masked)

    st.subheader("Surprise map")
    st.caption("Each word piece is hidden in turn and the model scores the original: unusual abbreviations, "
               "typos and unexpected findings stand out in red (low pseudo-log-likelihood).")
    pll_passes = {stride: planned_passes(now.plan, stride=stride) for stride in (0, FAST_STRIDE)}
    pll_costs = {stride: f"{passes.rows:,} masked copies, {estimate(loaded, settings.options.precision, passes)}"
                 for stride, passes in pll_passes.items()}
    exact = st.toggle("Exact (one piece hidden at a time; slower)", key="pred_pll_exact", persist_state="session",
                      help=f"Fast mode hides every {FAST_STRIDE}th piece together: each piece still sees "
                           f"{FAST_STRIDE - 1}/{FAST_STRIDE} of its context. On this note, fast: "
                           f"{pll_costs[FAST_STRIDE]}; exact: {pll_costs[0]}.")
    state.defaults(pred_pll_per=SURPRISE_MEAN)
    per = st.radio("Score each word", (SURPRISE_MEAN, SURPRISE_SUM), key="pred_pll_per", horizontal=True,
                   persist_state="session",
                   help="A word of several pieces (a long drug name) adds up several log-probabilities, so its "
                        "sum is low however expected it is; the mean per piece compares words of any length.")
    stride = 0 if exact else FAST_STRIDE
    ready = is_computed(pseudo_log_likelihood, loaded, now.plan, stride=stride)
    if not ready:
        st.caption(f"{'Exact' if exact else 'Fast'} mode runs {pll_costs[stride]}.")
    if ask_once("Compute the surprise map", key="go_pll", ready=ready):
        with user_errors():
            pll = computed(pseudo_log_likelihood, loaded, now.plan, stride=stride, label="Scoring every word piece",
                           passes=pll_passes[stride])
        by_mean = per == SURPRISE_MEAN
        scores = pll.word_mean_logprobs if by_mean else pll.word_logprobs
        column = "mean log-probability per piece" if by_mean else "log-probability (sum over pieces)"
        finite = np.isfinite(scores)
        surprise = np.where(finite, -scores, 0.0)
        st.html(scores_html(settings.note, pll.word_spans, surprise.astype(np.float32),
                            title=[f"{column} = {v:.2f} ({n} piece{'s' if n != 1 else ''})" if np.isfinite(v)
                                   else "not scored" for v, n in zip(scores.tolist(), pll.word_piece_counts.tolist())]))
        st.caption("Colour: " + ("the **mean** log-probability of each word's pieces, so long words are not "
                                 "penalised for their length." if by_mean else
                                 "the **sum** of each word's pieces' log-probabilities: words of many pieces "
                                 "(long drug names) look more surprising for their length alone."))
        order = np.argsort(-surprise, kind="stable")[:15]
        st.dataframe(pd.DataFrame({"word": [settings.note[a:b] for a, b in pll.word_spans[order].tolist()],
                                   column: scores[order], "pieces": pll.word_piece_counts[order]}), hide_index=True)
        st.caption(f"Note pseudo-log-likelihood {pll.total:.1f}; {pll.forward_rows} masked copies in "
                   f"{pll.seconds:.1f} s ({pll.precision}).")


def classes_section() -> None:
    """Class probabilities (a sequence-classification head)."""
    st.caption("This checkpoint classifies the whole note. A note longer than one window is classified per "
               "window and the probabilities are averaged.")

    def draw_classes(label: str, plan: NotePlan) -> None:
        with user_errors():
            classes = computed(classify, loaded, plan, label="Classifying")
        st.plotly_chart(probability_bars(list(classes.labels), classes.probs, "Label probabilities"),
                        key=f"pred_classes_{label}", width="stretch")
    side_by_side(draw_classes)


def entities_section() -> None:
    """Entity labels per word (a token-classification head)."""
    st.caption("This checkpoint labels each word (for example problems, treatments, tests).")

    def draw_entities(label: str, plan: NotePlan) -> None:
        with user_errors():
            tagged = computed(token_labels, loaded, plan, label="Labelling words")
        spans = np.array([[e.start, e.end] for e in tagged.entities], dtype=np.int32).reshape(-1, 2)
        st.html(scores_html(settings.note, spans, np.array([e.score for e in tagged.entities], np.float32),
                            title=[f"{e.label} ({e.score:.0%})" for e in tagged.entities]))
        st.dataframe(pd.DataFrame([{"text": e.text, "label": e.label, "score": e.score, "start": e.start,
                                    "end": e.end} for e in tagged.entities]), hide_index=True)
    side_by_side(draw_entities)


def similarity_section() -> None:
    """Zero-shot similarity to label descriptions (a bare encoder)."""
    st.caption(f"{info.name} has no prediction head: it turns text into vectors. Here it ranks label "
               "descriptions you write by **embedding similarity** (cosine similarity of mean-pooled vectors). "
               "This is a zero-shot ranking aid, not a trained classifier and not a probability of disease.")
    state.defaults(**{state.DESCRIPTIONS: state.DEFAULT_DESCRIPTIONS}, pred_temperature=0.05)
    descriptions = [line.strip() for line in st.text_area(
        "Label descriptions (one per line)", key=state.DESCRIPTIONS, persist_state="session",
        height=100).splitlines() if line.strip()]
    temperature = st.slider("Temperature of the shares (lower = sharper)", 0.01, 1.0, key="pred_temperature",
                            help=SHARE_HELP, persist_state="session")
    references = similarity.REFERENCE_DESCRIPTIONS
    st.caption(f"Dashed line (\"none of these\"): the note's highest cosine to {len(references)} everyday phrases "
               f"unrelated to medicine ({', '.join(f'“{r}”' for r in references[:3])}, …), computed the same way "
               "(each sentence has its own). Shaded band: the margin, the spread (standard deviation) of those "
               "unrelated cosines. A description stands out only if its cosine beats both that line and the "
               "runner-up by more than the margin. The axis shows cosine's whole range, −1 to 1, so small "
               "differences look small.")

    def verdict_text(result: similarity.SimilarityResult) -> str:
        order = np.argsort(-result.note_similarity, kind="stable")
        best = int(order[0])
        top = float(result.note_similarity[best])
        name = escape(result.descriptions[best])
        if result.note_verdict == similarity.UNRELATED:
            return (f"**No description stands out**: the closest, “{name}” (cosine {top:.3f}), is not closer to "
                    f"the note than unrelated text ({result.note_reference:.3f}) by more than the margin "
                    f"({result.note_margin:.3f}).")
        runner = float(result.note_similarity[int(order[1])]) if len(order) > 1 else None
        if result.note_verdict == similarity.TOO_CLOSE:
            return (f"**No description stands out**: the top two cosines ({top:.3f} and {runner:.3f}) are within "
                    f"the margin ({result.note_margin:.3f}) of each other: on this note the model does not tell "
                    "them apart, whatever their shares say.")
        ahead = f"{top - runner:.3f} above the runner-up and " if runner is not None else ""
        return (f"“{name}” stands out: cosine {top:.3f}, {ahead}{top - result.note_reference:.3f} above unrelated "
                f"text (margin {result.note_margin:.3f}). A similarity to your wording, not a diagnosis.")

    def draw_similarity(label: str, plan: NotePlan) -> None:
        with user_errors():
            similar = computed(similarity.embedding_similarity, loaded, plan, descriptions=tuple(descriptions),
                               temperature=temperature, label="Comparing embeddings")
        st.plotly_chart(cosine_bars(similar.descriptions, similar.note_similarity, similar.note_probs,
                                    temperature=similar.temperature, reference=similar.note_reference,
                                    margin=similar.note_margin, title="Whole note: cosine similarity"),
                        key=f"pred_similar_{label}", width="stretch")
        (st.info if similar.stands_out else st.warning)(verdict_text(similar))
        share = f"share (softmax, T={similar.temperature:g})"
        numbers = {column: st.column_config.NumberColumn(format="%.3f") for column in
                   ("cosine", "cosine − unrelated text", "unrelated text", "margin")}
        numbers[share] = st.column_config.NumberColumn(format="percent", help=SHARE_HELP)
        st.dataframe(pd.DataFrame({
            "description": similar.descriptions, "cosine": similar.note_similarity, share: similar.note_probs,
            "cosine − unrelated text": similar.note_similarity - similar.note_reference}),
            hide_index=True, column_config=numbers)
        if len(similar.sentence_spans):
            best = similar.sentence_similarity.argmax(-1)
            rows = np.arange(len(best))
            st.dataframe(pd.DataFrame({
                "sentence": [settings.note[a:b] for a, b in similar.sentence_spans.tolist()],
                "closest description": [similar.descriptions[i] for i in best],
                "cosine": similar.sentence_similarity[rows, best], share: similar.sentence_probs[rows, best],
                "verdict": similar.sentence_verdicts, "unrelated text": similar.sentence_reference,
                "margin": similar.sentence_margin}),
                hide_index=True, width="stretch",
                column_config={**numbers, "sentence": st.column_config.TextColumn(width="large")})
    side_by_side(draw_similarity)


SECTIONS = {"masked-lm": masked_lm_section, "sequence-classification": classes_section,
            "token-classification": entities_section, "encoder": similarity_section}
SECTIONS[info.head_kind]()
