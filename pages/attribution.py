"""Attribution: why the model predicts what it does; faithfulness, head importance, counterfactual edits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

import ui
from cbert_core.analyses import counterfactual as cf
from cbert_core.analyses import faithfulness as faith
from cbert_core.analyses import knockout_scan, predict
from cbert_core.analyses.attribution import Attribution, attribute, planned_passes
from cbert_core.analyses.targets import class_target, masked_token_target, similarity_target, token_class_target
from cbert_core.model.precision import bf16_is_fast
from cbert_core.serving.speed import Passes
from cbert_core.views.attribution_figures import head_scan_figure
from cbert_core.views.labels import escape, head_name
from cbert_core.views.text_html import scores_html

METHOD_NAMES = {"integrated-gradients": "Integrated Gradients", "gradient-x-input": "Gradient × Input",
                "saliency": "Saliency (gradient norm)", "occlusion": "Leave one word out"}
BASELINE_NAMES = {"pad": "[PAD] (keeps [CLS]/[SEP])", "mask": "[MASK]"}
COUNTERFACTUAL_CHOICES = {"predictions only": "predictions only", **METHOD_NAMES}
EXPLAINED = "attr_explained_request"  # the explanation the user asked for; knockout changes recompute it

st.title("Attribution")
st.caption("Which words pushed the prediction up (red) or down (blue)? Several methods answer differently; the "
           "faithfulness scores below say which explanation holds up on this note.")
now = ui.current()
loaded, info, settings, result = now.loaded, now.loaded.info, now.settings, now.trace
knocked = ui.knockout_picker(info)
common = dict(lowercase=settings.lowercase, max_chars=settings.max_chars, overlap=settings.overlap)

# ---------------------------------------------------------------- the target
window: int | None = None
with ui.user_errors():
    if info.head_kind == "masked-lm":
        masks = result.mask_positions
        if len(masks) == 0:
            st.info("Explaining a masked-word prediction needs a [MASK] in the note. Type [MASK] where a word "
                    "should go (see the Predictions page).", icon=":material/info:")
            st.stop()
        columns = st.columns(2)
        mask_names = tuple(f"[MASK] {i + 1}" for i in range(len(masks)))
        mask_index = columns[0].selectbox("Which [MASK]", range(len(masks)), format_func=mask_names.__getitem__,
                                          key=ui.note_choice_key("q_mask", now.trace_key, 0, options=range(len(masks))))
        filled = ui.analysis("fill_mask", now, ((),), lambda report: predict.fill_mask(loaded, settings.note,
                                                                                        **common), "Filling in")
        candidates = list(filled.top_tokens[mask_index])
        word = columns[1].selectbox("Explain the probability of", candidates,
                                    key=ui.note_choice_key("q_target", (now.trace_key, mask_index), candidates[0],
                                                           options=candidates))
        target = masked_token_target(loaded, word, mask_index=mask_index, lowercase=settings.lowercase)
        window = int(result.owner[int(masks[mask_index])])
    elif info.head_kind == "token-classification":
        spans = result.word_spans
        columns = st.columns(2)
        span_words = tuple(settings.note[a:b] for a, b in spans.tolist())
        word_index = columns[0].selectbox("Word", range(len(spans)), format_func=span_words.__getitem__,
                                          key=ui.note_choice_key("q_tokword", now.trace_key, 0,
                                                                 options=range(len(spans))))
        label = columns[1].selectbox("Label", list(info.labels), key="attr_token_label")
        target = token_class_target(loaded, int(spans[word_index][0]), label)
        first_piece = int(np.flatnonzero(result.word_ids == word_index)[0])
        window = int(result.owner[first_piece])
    else:
        if info.head_kind == "sequence-classification":
            label = st.selectbox("Explain the class", list(info.labels), key="attr_class")
            target = class_target(loaded, label)
        else:
            descriptions = [line.strip() for line in st.session_state.get(
                "pred_descriptions", "pneumonia present\nno evidence of pneumonia").splitlines() if line.strip()]
            description = st.selectbox("Explain the embedding similarity to", descriptions, key="attr_description",
                                       help="Edit the descriptions on the Predictions page.")
            target = similarity_target(loaded, description, lowercase=settings.lowercase)
        if len(result.windows) > 1:
            part = ui.note_part_picker(now, "q_attr_part", "Part of the note to explain")
            window = part.window
            st.caption(f"This note is longer than the {info.max_tokens} positions the model reads at once, and "
                       f"a {'class' if target.kind == 'class' else 'similarity'} depends on everything the model "
                       f"reads: the explanation is of window {window + 1}'s own "
                       f"{'prediction' if target.kind == 'class' else 'similarity'}, as the model computes it "
                       "from that window.")
target_key = (target.kind, target.label, target.token_id, target.mask_index, target.char_index, target.class_index,
              window)
explained_span = result.windows[window if window is not None else 0]
positions = explained_span.size + 2
window_words = len(np.unique(result.word_ids[explained_span.start + 1:explained_span.stop + 1]))

with st.expander("Methods and settings", expanded=False):
    ui.defaults(attr_methods=list(METHOD_NAMES), attr_steps=50, attr_memory=1.5)
    methods = st.multiselect("Methods", list(METHOD_NAMES), key="attr_methods",
                             format_func=METHOD_NAMES.get)
    columns = st.columns(3)
    baseline = columns[0].radio("Baseline (\"no information\")", ["pad", "mask"], key="attr_baseline",
                                format_func=BASELINE_NAMES.__getitem__)
    steps = columns[1].number_input("Integrated Gradients steps", 10, 300, step=10, key="attr_steps")
    memory = columns[2].number_input("Memory bound (GB)", 0.05, 8.0, step=0.25, key="attr_memory",
                                     help="A method that would need more refuses with a message instead of "
                                          "exhausting the server's memory. Batches are sized to fit it.")
    early = st.toggle("Stop Integrated Gradients early when it has converged", key="attr_early",
                      help="Integrates with 16 Gauss-Legendre points first and keeps that result when its "
                           "convergence delta is under 1 % of the score difference (often about 3x faster); "
                           "otherwise runs the full number of steps.")
tolerance = 0.01 if early else None
memory_bytes = int(float(memory) * 2**30)
versions = [("intact model", frozenset())] + ([("heads knocked out", knocked)] if knocked else [])


def method_params(method: str, heads: frozenset) -> tuple:
    early_stop = tolerance if method == "integrated-gradients" else None
    return (target_key, method, baseline, int(steps), early_stop, memory_bytes, tuple(sorted(heads)))


def method_passes(method: str) -> Passes:
    return planned_passes(method, positions, window_words, steps=int(steps), tolerance=tolerance)


def run_method(method: str, heads: frozenset) -> Attribution:
    return ui.analysis("attribution", now, method_params(method, heads), lambda report: attribute(
        loaded, settings.note, target, method=method, steps=int(steps), tolerance=tolerance, baseline=baseline,
        memory_limit=memory_bytes, knocked_out=heads, precision=settings.precision, window=window,
        progress=report, **common), f"{METHOD_NAMES[method]}", passes=method_passes(method))


# ---------------------------------------------------------------- attributions
st.subheader("Explanations")
request = (now.trace_key, target_key)
missing = [(m, label, heads) for m in methods for label, heads in versions
           if not ui.has_analysis("attribution", now, method_params(m, heads))]
if methods and not missing:  # shown at once (computed earlier on this server): the user sees them as asked for
    st.session_state[EXPLAINED] = request
explained = st.session_state.get(EXPLAINED) == request
if not methods:
    st.info("Choose at least one method under Methods and settings.", icon=":material/info:")
elif missing and not explained:
    work = sum((method_passes(m) for m, _label, _heads in missing), Passes())
    asking = st.container()  # cleared once clicked, so the button does not linger above the results
    asking.caption(f"Runs {len(missing)} explanation(s) of {positions:,} positions: {ui.estimate(now, work)}."
                   + (" This server's CPU has native bf16: the Precision switch under Advanced in the sidebar "
                      "makes it about twice as fast." if settings.precision == "fp32" and bf16_is_fast() else ""))
    if asking.button("Explain", type="primary", key="go_explain"):
        st.session_state[EXPLAINED] = request
        st.rerun()
results: dict[tuple[str, str], Attribution] = {}
if methods and (explained or not missing):
    with ui.user_errors():
        for method in methods:
            for label, heads in versions:
                results[(method, label)] = run_method(method, heads)

if results and len(result.windows) > 1:
    st.caption(f"Coloured: the words of window {explained_span.index + 1} (pieces {explained_span.start + 1:,}–"
               f"{explained_span.stop:,}), the part of the note the model read for this prediction.")
for method in methods if results else ():
    st.markdown(f"#### {METHOD_NAMES[method]}")
    columns = st.columns(len(versions))
    for column, (label, heads) in zip(columns, versions):
        found = results[(method, label)]
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
    with ui.user_errors():
        for method in methods:
            for label, heads in versions:
                found = results[(method, label)]
                scored = ui.analysis("faithfulness", now, method_params(method, heads),
                                     lambda report, found=found: faith.faithfulness(loaded, found, progress=report),
                                     f"Faithfulness of {METHOD_NAMES[method]}", passes=faith.planned_passes(positions))
                rows.append({"method": METHOD_NAMES[method], "model": label,
                             "comprehensiveness ↑": scored.comprehensiveness, "sufficiency ↓": scored.sufficiency})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

# ---------------------------------------------------------------- head importance
st.subheader("Head importance scan")
st.caption("Each head is knocked out in turn and the change in the prediction recorded. Red: the prediction "
           "drops without the head (it supports the prediction); blue: it rises. Click a head to knock it out in "
           "the explanations above (click a crossed-out head to bring it back).")
scan_passes = knockout_scan.planned_passes(info.num_layers, info.num_heads, positions)
if ui.has_analysis("heads", now, (target_key,)) or st.button(
        "Scan every head", key="go_scan", help=f"Runs the model once per head: {ui.estimate(now, scan_passes)}."):
    with ui.user_errors():
        scan = ui.analysis("heads", now, (target_key,), lambda report: knockout_scan.head_importance(
            loaded, settings.note, target, window=window, progress=report, **common), "Knocking out each head",
            passes=scan_passes)
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
            if clicked not in st.session_state.get("ko_heads", []):
                st.session_state["ko_pending"] = clicked
                st.rerun()
        else:  # the cross over a knocked-out head: bring it back
            layer, head = sorted(knocked)[index]
            st.session_state["ko_release"] = head_name(layer, head)
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
                              key=ui.note_choice_key("q_cf", now.trace_key, first_word, options=range(len(words))))
ui.defaults(attr_cf_with="reports")
replacement = columns[1].text_input("Replace with", key="attr_cf_with")
cf_choice = columns[2].selectbox("Also explain with", ["predictions only", *methods], key="attr_cf_method",
                                 format_func=COUNTERFACTUAL_CHOICES.__getitem__)
cf_method = None if cf_choice == "predictions only" else cf_choice
start, end = (int(v) for v in spans[chosen])
cf_params = (target_key, start, end, replacement, cf_method)
cf_passes = Passes(forward=((positions, 2),)) + (method_passes(cf_method) + method_passes(cf_method)
                                                 if cf_method else Passes())
if replacement.strip() and (ui.has_analysis("counterfactual", now, cf_params) or st.button(
        "Compare", key="go_cf", help=f"Runs both versions: {ui.estimate(now, cf_passes)}.")):
    with ui.user_errors():
        edit = ui.analysis("counterfactual", now, cf_params, lambda report: cf.counterfactual(
            loaded, settings.note, start, end, replacement, target, method=cf_method, window=window,
            progress=report, lowercase=settings.lowercase), "Comparing both versions", passes=cf_passes)
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
