"""Attribution: why the model predicts what it does; faithfulness, head importance, counterfactual edits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from cbert_core.analyses import faithfulness as faith
from cbert_core.analyses import knockout_scan
from cbert_core.analyses.attribution import Attribution, attribute, planned_passes
from cbert_core.analyses.counterfactual import counterfactual
from cbert_core.analyses.predict import fill_mask
from cbert_core.analyses.targets import Target, class_target, masked_token_target, similarity_target, token_class_target
from cbert_core.model.precision import bf16_is_fast
from cbert_core.run.plan import NotePlan
from cbert_core.serving.speed import Passes
from cbert_core.views.attribution_figures import head_scan_figure
from cbert_core.views.labels import escape, head_name
from cbert_core.views.text_html import scores_html
from ui import state
from ui.caches import computed, estimate, is_computed
from ui.context import page
from ui.widgets import ask_once, knockout_picker, note_choice, note_part_picker, user_errors

METHOD_NAMES = {"integrated-gradients": "Integrated Gradients", "gradient-x-input": "Gradient × Input",
                "saliency": "Saliency (gradient norm)", "occlusion": "Leave one word out"}
BASELINE_NAMES = {"pad": "[PAD] (keeps [CLS]/[SEP])", "mask": "[MASK]"}
COUNTERFACTUAL_CHOICES = {"predictions only": "predictions only", **METHOD_NAMES}
EXPLAINED = "attr_explained_request"  # the explanation the user asked for; knockout changes recompute it

st.title("Attribution")
st.caption("Which words pushed the prediction up (red) or down (blue)? Several methods answer differently; the "
           "faithfulness scores below say which explanation holds up on this note.")
now = page()
loaded, info, settings, result = now.loaded, now.info, now.settings, now.trace
if st.session_state.get(state.EVAL_RETURN):
    st.page_link("pages/evaluate.py", label="Back to the Evaluate page, where this note was opened",
                 icon=":material/arrow_back:")
knocked = knockout_picker(info)
precision = settings.options.precision


def word_at(char: int) -> int:
    """The word of the note that holds character ``char`` (or the last one before it)."""
    return max(0, int(np.searchsorted(result.word_spans[:, 0], char, side="right")) - 1)


# A row opened from the Evaluate page: explain its predicted class, with its edit as the counterfactual.
pending = st.session_state.pop(state.ATTR_PENDING, None)
if pending is not None:
    if pending.get("zero_shot"):
        st.session_state["attr_description"] = pending["class"]
        st.session_state[state.ATTR_TARGET_KIND] = "similarity"
    elif info.head_kind == "token-classification":
        st.session_state["attr_token_label"] = pending["class"]
        if pending.get("word") is not None:
            spans = result.word_spans
            st.session_state[note_choice("q_tokword", result.key, 0, options=range(len(spans)))] = \
                word_at(pending["word"])
    else:
        st.session_state["attr_class"] = pending["class"]
    if pending.get("cf") is not None:  # the edit, when it replaces one of the words this page offers
        start, end, replacement = pending["cf"]
        word = word_at(start)
        if tuple(int(v) for v in result.word_spans[word]) == (start, end):
            st.session_state[note_choice("q_cf", result.key, 0, options=range(len(result.word_spans)))] = word
            st.session_state["attr_cf_with"] = replacement

# ---------------------------------------------------------------- the target


def masked_word_target() -> tuple[Target, int | None]:
    """A masked-LM explains the probability of a word at one of the note's [MASK]s, in that mask's window."""
    masks = result.mask_positions
    if len(masks) == 0:
        st.info("Explaining a masked-word prediction needs a [MASK] in the note. Type [MASK] where a word "
                "should go (see the Predictions page).", icon=":material/info:")
        st.stop()
    columns = st.columns(2)
    mask_names = tuple(f"[MASK] {i + 1}" for i in range(len(masks)))
    mask_index = columns[0].selectbox("Which [MASK]", range(len(masks)), format_func=mask_names.__getitem__,
                                      key=note_choice("q_mask", result.key, 0, options=range(len(masks))),
                                      persist_state="session")
    filled = computed(fill_mask, loaded, now.plan, label="Filling in", progress=False)
    candidates = list(filled.top_tokens[mask_index])
    word = columns[1].selectbox("Explain the probability of", candidates,
                                key=note_choice("q_target", (result.key, mask_index), candidates[0],
                                                options=candidates), persist_state="session")
    target = masked_token_target(loaded, word, mask_index=mask_index, lowercase=now.plan.lowercase)
    return target, int(result.owner[int(masks[mask_index])])


def word_label_target() -> tuple[Target, int | None]:
    """A token classifier explains one label at one word, in the window that owns the word."""
    spans = result.word_spans
    columns = st.columns(2)
    span_words = tuple(settings.note[a:b] for a, b in spans.tolist())
    word_index = columns[0].selectbox("Word", range(len(spans)), format_func=span_words.__getitem__,
                                      key=note_choice("q_tokword", result.key, 0, options=range(len(spans))),
                                      persist_state="session")
    label = columns[1].selectbox("Label", list(info.labels), key="attr_token_label", persist_state="session")
    first_piece = int(np.flatnonzero(result.word_ids == word_index)[0])
    return token_class_target(loaded, int(spans[word_index][0]), label), int(result.owner[first_piece])


def note_level_target(target: Target) -> tuple[Target, int | None]:
    """A class or a similarity depends on all the model reads: a long note is explained one window at a time."""
    if len(result.windows) == 1:
        return target, None
    part = note_part_picker(result, info, "q_attr_part", "Part of the note to explain")
    what = "prediction" if target.kind == "class" else "similarity"
    st.caption(f"This note is longer than the {info.max_tokens} positions the model reads at once, and a "
               f"{'class' if target.kind == 'class' else 'similarity'} depends on everything the model reads: the "
               f"explanation is of window {part.window + 1}'s own {what}, as the model computes it from that window.")
    return target, part.window


def class_choice() -> tuple[Target, int | None]:
    label = st.selectbox("Explain the class", list(info.labels), key="attr_class", persist_state="session")
    return note_level_target(class_target(loaded, label))


def description_choice() -> tuple[Target, int | None]:
    descriptions = [line.strip() for line in st.session_state.get(
        state.DESCRIPTIONS, state.DEFAULT_DESCRIPTIONS).splitlines() if line.strip()]
    description = st.selectbox("Explain the embedding similarity to", descriptions, key="attr_description",
                               help="Edit the descriptions on the Predictions page.", persist_state="session")
    return note_level_target(similarity_target(loaded, description, lowercase=now.plan.lowercase))


def masked_lm_choice() -> tuple[Target, int | None]:
    """A masked-LM explains a masked word, or (as the Evaluate page's zero-shot predictions) a similarity."""
    kinds = {"masked word": "a masked word's probability", "similarity": "similarity to a label description"}
    kind = st.radio("Explain", list(kinds), format_func=kinds.__getitem__, horizontal=True,
                    key=state.ATTR_TARGET_KIND, persist_state="session")
    return masked_word_target() if kind == "masked word" else description_choice()


TARGET_CHOICES = {"masked-lm": masked_lm_choice, "token-classification": word_label_target,
                  "sequence-classification": class_choice, "encoder": description_choice}
with user_errors():
    target, window = TARGET_CHOICES[info.head_kind]()
explained_span = result.windows[window if window is not None else 0]
positions = explained_span.size + 2
window_words = len(np.unique(result.word_ids[explained_span.start + 1:explained_span.stop + 1]))

with st.expander("Methods and settings", expanded=False):
    state.defaults(attr_methods=list(METHOD_NAMES), attr_steps=50, attr_memory=1.5)
    methods = st.multiselect("Methods", list(METHOD_NAMES), key="attr_methods", persist_state="session",
                             format_func=METHOD_NAMES.get)
    columns = st.columns(3)
    baseline = columns[0].radio("Baseline (\"no information\")", ["pad", "mask"], key="attr_baseline",
                                format_func=BASELINE_NAMES.__getitem__, persist_state="session")
    steps = columns[1].number_input("Integrated Gradients steps", 10, 300, step=10, key="attr_steps",
                                    persist_state="session")
    memory = columns[2].number_input("Memory bound (GB)", 0.05, 8.0, step=0.25, key="attr_memory",
                                     persist_state="session",
                                     help="A method that would need more refuses with a message instead of "
                                          "exhausting the server's memory. Batches are sized to fit it.")
    early = st.toggle("Stop Integrated Gradients early when it has converged", key="attr_early",
                      persist_state="session",
                      help="Integrates with 16 Gauss-Legendre points first and keeps that result when its "
                           "convergence delta is under 1 % of the score difference (often about 3x faster); "
                           "otherwise runs the full number of steps.")
tolerance = 0.01 if early else None
memory_bytes = int(float(memory) * 2**30)
versions = [("intact model", now.plan)] + ([("heads knocked out", now.with_heads_out(knocked))] if knocked else [])


def method_arguments(method: str) -> dict:
    """The arguments of one method's attribution (they make its cache key: the steps and the early stop
    only for Integrated Gradients, the only method they change)."""
    arguments = dict(method=method, baseline=baseline, memory_limit=memory_bytes, window=window)
    if method == "integrated-gradients":
        arguments.update(steps=int(steps), tolerance=tolerance)
    return arguments


def method_passes(method: str) -> Passes:
    return planned_passes(method, positions, window_words, steps=int(steps), tolerance=tolerance)


def run_method(method: str, plan: NotePlan) -> Attribution:
    return computed(attribute, loaded, plan, target, label=METHOD_NAMES[method], passes=method_passes(method),
                    **method_arguments(method))


# ---------------------------------------------------------------- attributions
st.subheader("Explanations")
request = (result.key, target, window)
missing = [(m, label, plan) for m in methods for label, plan in versions
           if not is_computed(attribute, loaded, plan, target, **method_arguments(m))]
if methods and not missing:  # shown at once (computed earlier on this server): the user sees them as asked for
    st.session_state[EXPLAINED] = request
explained = st.session_state.get(EXPLAINED) == request
if not methods:
    st.info("Choose at least one method under Methods and settings.", icon=":material/info:")
elif missing and not explained:
    work = sum((method_passes(m) for m, _label, _plan in missing), Passes())
    asking = st.container()
    asking.caption(f"Runs {len(missing)} explanation(s) of {positions:,} positions: "
                   f"{estimate(loaded, precision, work)}."
                   + (" This server's CPU has native bf16: the Precision switch under Advanced in the sidebar "
                      "makes it about twice as fast." if precision == "fp32" and bf16_is_fast() else ""))
    if asking.button("Explain", type="primary", key="go_explain"):
        st.session_state[EXPLAINED] = request
        st.rerun()
results: dict[tuple[str, str], Attribution] = {}
if methods and (explained or not missing):
    with user_errors():
        for method in methods:
            for label, plan in versions:
                results[(method, label)] = run_method(method, plan)

if results and len(result.windows) > 1:
    st.caption(f"Coloured: the words of window {explained_span.index + 1} (pieces {explained_span.start + 1:,}–"
               f"{explained_span.stop:,}), the part of the note the model read for this prediction.")
for method in methods if results else ():
    st.markdown(f"#### {METHOD_NAMES[method]}")
    columns = st.columns(len(versions))
    for column, (label, plan) in zip(columns, versions):
        found = results[(method, label)]
        heads = plan.options.knocked_out
        with column:
            if len(versions) > 1:
                out_names = ", ".join(head_name(a, b) for a, b in sorted(heads)) if heads else ""
                st.markdown(f"**{label}**{f' ({out_names})' if out_names else ''}: {target.score_name} "
                            f"{found.score:.3f}")
            fixed_words = found.word_fixed
            st.html(scores_html(settings.note, found.word_spans, found.word_scores,
                                title=[f"{score:+.4f}" for score in found.word_scores], excluded=fixed_words))
            if method == "integrated-gradients":
                st.caption(f"Convergence delta {found.delta:+.4f} ({found.relative_delta:.1%} of the score "
                           f"difference {found.score - found.baseline_score:+.3f}); {found.steps} steps, "
                           f"{found.seconds:.1f} s in {found.precision}. A small delta means the scores add up to "
                           "the prediction.")
            elif fixed_words.any():
                st.caption("The [MASK] being explained (dashed outline) is the question, not evidence: it is left "
                           "out of the colour scale.")
            table = pd.DataFrame({"word": [settings.note[a:b] for a, b in found.word_spans.tolist()],
                                  "score": found.word_scores})
            st.download_button("Word scores (CSV)", table.to_csv(index=False).encode("utf-8"),
                               file_name=f"attribution_{method}_{label.replace(' ', '_')}.csv", mime="text/csv",
                               key=f"dl_{method}_{label}")

# ---------------------------------------------------------------- faithfulness
if results:
    st.subheader("Which explanation to trust here")
    st.caption("Comprehensiveness: how much the prediction drops when the top-scored words are removed (higher "
               "is better). Sufficiency: how much it drops when only those words are kept (lower is better). "
               "Averaged over removing 10 %, 20 %, ... 100 % of the words (AOPC, as the ferret library defines "
               "them).")
    rows = []
    with user_errors():
        for method in methods:
            for label, _plan in versions:
                found = results[(method, label)]
                scored = computed(faith.faithfulness, loaded, found, label=f"Faithfulness of {METHOD_NAMES[method]}",
                                  passes=faith.planned_passes(positions))
                rows.append({"method": METHOD_NAMES[method], "model": label,
                             "comprehensiveness ↑": scored.comprehensiveness, "sufficiency ↓": scored.sufficiency})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

# ---------------------------------------------------------------- head importance
st.subheader("Head importance scan")
st.caption("Each head is knocked out in turn and the change in the prediction recorded. Red: the prediction "
           "drops without the head (it supports the prediction); blue: it rises. Click a head to knock it out in "
           "the explanations above (click a crossed-out head to bring it back).")
scan_passes = knockout_scan.planned_passes(info.num_layers, info.num_heads, positions)
scanned = is_computed(knockout_scan.head_importance, loaded, now.plan, target, window=window)
if ask_once("Scan every head", key="go_scan", ready=scanned,
            help=f"Runs the model once per head: {estimate(loaded, precision, scan_passes)}."):
    with user_errors():
        scan = computed(knockout_scan.head_importance, loaded, now.plan, target, window=window,
                        label="Knocking out each head", passes=scan_passes)
    title = f"Change in {target.score_name} of '{escape(target.label)}' without each head"
    event = st.plotly_chart(head_scan_figure(scan.scores, title, knocked), on_select="rerun",
                            selection_mode="points", key="scan_heads", width="stretch")
    if knocked:
        st.markdown("**Knocked out in the explanations above:** "
                    + ", ".join(head_name(a, b) for a, b in sorted(knocked)))
    points = event.selection.points if event and event.selection else []
    if points:
        point = points[0]
        index = int(point["point_index"])
        if int(point.get("curve_number", 0)) == 0:
            clicked = head_name(index // info.num_heads, index % info.num_heads)
            if clicked not in st.session_state.get(state.KO_HEADS, []):
                st.session_state[state.KO_PENDING] = clicked
                st.rerun()
        else:  # the cross over a knocked-out head: bring it back
            layer, head = sorted(knocked)[index]
            st.session_state[state.KO_RELEASE] = head_name(layer, head)
            st.rerun()

# ---------------------------------------------------------------- counterfactual
st.subheader("Counterfactual edit")
st.caption("Replace a word in place (for example 'denies' with 'reports') and compare both versions.")
columns = st.columns(3)
spans = result.word_spans
words = [settings.note[a:b] for a, b in spans.tolist()]
word_names = tuple(f"{word} (word {i + 1})" for i, word in enumerate(words))
first_word = next((i for i, w in enumerate(words) if w.lower() == "denies"), 0)
chosen = columns[0].selectbox("Word to replace", range(len(words)), format_func=word_names.__getitem__,
                              key=note_choice("q_cf", result.key, first_word, options=range(len(words))),
                              persist_state="session")
state.defaults(attr_cf_with="reports")
replacement = columns[1].text_input("Replace with", key="attr_cf_with", persist_state="session")
cf_choice = columns[2].selectbox("Also explain with", ["predictions only", *methods], key="attr_cf_method",
                                 persist_state="session",
                                 format_func=COUNTERFACTUAL_CHOICES.__getitem__)
cf_method = None if cf_choice == "predictions only" else cf_choice
start, end = (int(v) for v in spans[chosen])
cf_arguments = dict(method=cf_method, window=window)
cf_passes = Passes(forward=((positions, 2),)) + (method_passes(cf_method) + method_passes(cf_method)
                                                 if cf_method else Passes())
cf_ready = is_computed(counterfactual, loaded, now.plan, start, end, replacement, target, **cf_arguments)
if replacement.strip() and ask_once("Compare", key="go_cf", ready=cf_ready,
                                    help=f"Runs both versions: {estimate(loaded, precision, cf_passes)}."):
    with user_errors():
        edit = computed(counterfactual, loaded, now.plan, start, end, replacement, target, **cf_arguments,
                        label="Comparing both versions", passes=cf_passes)
    st.markdown(f"Edit: **{escape(settings.note[start:end])}** → **{escape(replacement)}** "
                f"(word {chosen + 1}).")
    left, right = st.columns(2)
    order = np.argsort(-np.abs(edit.prob_change))[:12]
    with left:
        st.markdown(f"**{target.score_name}**: {edit.original.score:.3f} → {edit.edited.score:.3f} "
                    f"({edit.score_change:+.3f})")
        st.dataframe(pd.DataFrame({"candidate": [edit.names[i] for i in order],
                                   "original": edit.original_probs[order], "edited": edit.edited_probs[order],
                                   "change": edit.prob_change[order]}), hide_index=True, width="stretch")
    with right:
        if edit.original.attribution is not None and edit.edited.attribution is not None:
            st.markdown("**Original**")
            st.html(scores_html(edit.original.text, edit.original.attribution.word_spans,
                                edit.original.attribution.word_scores, excluded=edit.original.attribution.word_fixed))
            st.markdown("**Edited**")
            st.html(scores_html(edit.edited.text, edit.edited.attribution.word_spans,
                                edit.edited.attribution.word_scores, excluded=edit.edited.attribution.word_fixed))
