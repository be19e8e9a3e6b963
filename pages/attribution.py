"""Attribution: why the model predicts what it does; faithfulness, head importance, counterfactual edits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import ui
from cbert_core import attribution as attr
from cbert_core import predict
from cbert_core.faithfulness import faithfulness
from cbert_core.precision import bf16_is_fast
from cbert_core.views.attention_figures import CALM_LAYOUT
from cbert_core.views.labels import escape, head_name
from cbert_core.views.text_html import scores_html

METHOD_NAMES = {"integrated-gradients": "Integrated Gradients", "gradient-x-input": "Gradient × Input",
                "saliency": "Saliency (gradient norm)", "occlusion": "Leave one word out"}
BASELINE_NAMES = {"pad": "[PAD] (keeps [CLS]/[SEP])", "mask": "[MASK]"}
COUNTERFACTUAL_CHOICES = {"predictions only": "predictions only", **METHOD_NAMES}

st.title("Attribution")
st.caption("Which words pushed the prediction up (red) or down (blue)? Several methods answer differently; the "
           "faithfulness scores below say which explanation holds up on this note.")
now = ui.current()
loaded, info, settings = now.loaded, now.loaded.info, now.settings
knocked = ui.knockout_picker(info)
common = dict(lowercase=settings.lowercase, max_chars=settings.max_chars)

# ---------------------------------------------------------------- the target
with ui.user_errors():
    if info.head_kind == "masked-lm":
        masks = now.trace.mask_positions
        if len(masks) == 0:
            st.info("Explaining a masked-word prediction needs a [MASK] in the note. Type [MASK] where a word "
                    "should go (see the Predictions page).", icon=":material/info:")
            st.stop()
        columns = st.columns(2)
        mask_names = tuple(f"[MASK] {i + 1}" for i in range(len(masks)))
        mask_index = columns[0].selectbox("Which [MASK]", range(len(masks)), format_func=mask_names.__getitem__,
                                          key=ui.note_choice_key("q_mask", now.trace_key, 0))
        filled = ui.analysis("fill_mask", now, ((),), lambda report: predict.fill_mask(loaded, settings.note,
                                                                                        **common), "Filling in")
        word = columns[1].selectbox("Explain the probability of", list(filled.top_tokens[mask_index]),
                                    key=ui.note_choice_key("q_target", (now.trace_key, mask_index),
                                                           filled.top_tokens[mask_index][0]))
        target = attr.masked_token_target(loaded, word, mask_index=mask_index, lowercase=settings.lowercase)
    elif info.head_kind == "sequence-classification":
        label = st.selectbox("Explain the class", list(info.labels), key="attr_class")
        target = attr.class_target(loaded, label)
    elif info.head_kind == "token-classification":
        spans = now.trace.word_spans
        columns = st.columns(2)
        span_words = tuple(settings.note[a:b] for a, b in spans.tolist())
        word_index = columns[0].selectbox("Word", range(len(spans)), format_func=span_words.__getitem__,
                                          key=ui.note_choice_key("q_tokword", now.trace_key, 0))
        label = columns[1].selectbox("Label", list(info.labels), key="attr_token_label")
        target = attr.token_class_target(loaded, int(spans[word_index][0]), label)
    else:
        descriptions = [line.strip() for line in st.session_state.get(
            "pred_descriptions", "pneumonia present\nno evidence of pneumonia").splitlines() if line.strip()]
        description = st.selectbox("Explain the embedding similarity to", descriptions, key="attr_description",
                                   help="Edit the descriptions on the Predictions page.")
        target = attr.similarity_target(loaded, description, lowercase=settings.lowercase)
target_key = (target.kind, target.label, target.token_id, target.mask_index, target.char_index, target.class_index)

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

versions = [("intact model", frozenset())] + ([("heads knocked out", knocked)] if knocked else [])


memory_bytes = int(float(memory) * 2**30)


def method_params(method: str, heads: frozenset) -> tuple:
    early_stop = tolerance if method == "integrated-gradients" else None
    return (target_key, method, baseline, int(steps), early_stop, memory_bytes, tuple(sorted(heads)))


def run_method(method: str, heads: frozenset) -> attr.Attribution:
    return ui.analysis("attribution", now, method_params(method, heads), lambda report: attr.attribute(
        loaded, settings.note, target, method=method, steps=int(steps), tolerance=tolerance, baseline=baseline,
        memory_limit=memory_bytes, knocked_out=heads, precision=settings.precision, progress=report, **common),
        f"{METHOD_NAMES[method]}")


ready = all(ui.has_analysis("attribution", now, method_params(m, h)) for m in methods for _l, h in versions)
if not methods:
    st.stop()
if not ready and not st.button("Explain", type="primary", key="go_explain"):
    st.caption(f"Runs {len(methods)} method(s){' twice (intact and knocked out)' if knocked else ''}; "
               "Integrated Gradients with 50 steps takes a few seconds per hundred tokens."
               + (" This server's CPU has native bf16: the Precision switch under Advanced in the sidebar makes "
                  "it about twice as fast." if settings.precision == "fp32" and bf16_is_fast() else ""))
    st.stop()

# ---------------------------------------------------------------- attributions
results: dict[tuple[str, str], attr.Attribution] = {}
with ui.user_errors():
    for method in methods:
        for label, heads in versions:
            results[(method, label)] = run_method(method, heads)

for method in methods:
    st.subheader(METHOD_NAMES[method])
    columns = st.columns(len(versions))
    for column, (label, _heads) in zip(columns, versions):
        found = results[(method, label)]
        with column:
            if len(versions) > 1:
                st.markdown(f"**{label}**: {target.score_name} {found.score:.3f}")
            st.html(scores_html(settings.note, found.word_spans, found.word_scores,
                                title=[f"{score:+.4f}" for score in found.word_scores]))
            if method == "integrated-gradients":
                st.caption(f"Convergence delta {found.delta:+.4f} ({found.relative_delta:.1%} of the score "
                           f"difference {found.score - found.baseline_score:+.3f}); {found.steps} steps, "
                           f"{found.seconds:.1f} s in {found.precision}. A small delta means the scores add up to the prediction.")
            table = pd.DataFrame({"word": [settings.note[a:b] for a, b in found.word_spans.tolist()],
                                  "score": found.word_scores})
            st.download_button("Word scores (CSV)", table.to_csv(index=False).encode("utf-8"),
                               file_name=f"attribution_{method}_{label.replace(' ', '_')}.csv", mime="text/csv",
                               key=f"dl_{method}_{label}")

# ---------------------------------------------------------------- faithfulness
st.subheader("Which explanation to trust here")
st.caption("Comprehensiveness: how much the prediction drops when the top-scored words are removed (higher "
           "is better). Sufficiency: how much it drops when only those words are kept (lower is better). "
           "Averaged over removing 10 %, 20 %, ... 100 % of the words (AOPC, as the ferret library defines them).")
rows = []
with ui.user_errors():
    for method in methods:
        for label, heads in versions:
            found = results[(method, label)]
            scored = ui.analysis("faithfulness", now, (target_key, method, baseline, int(steps), memory_bytes,
                                                       tuple(sorted(heads))),
                                 lambda report, found=found: faithfulness(loaded, found, progress=report),
                                 f"Faithfulness of {METHOD_NAMES[method]}")
            rows.append({"method": METHOD_NAMES[method], "model": label,
                         "comprehensiveness ↑": scored.comprehensiveness, "sufficiency ↓": scored.sufficiency})
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

# ---------------------------------------------------------------- head importance
st.subheader("Head importance scan")
st.caption("Each head is knocked out in turn and the change in the prediction recorded. Red: the prediction "
           "drops without the head (it supports the prediction); blue: it rises. Click a head to knock it out in "
           "the views above.")
if ui.has_analysis("heads", now, (target_key,)) or st.button("Scan every head", key="go_scan"):
    with ui.user_errors():
        scan = ui.analysis("heads", now, (target_key,), lambda report: attr.head_importance(
            loaded, settings.note, target, progress=report, **common), "Knocking out each head")
    layers, heads_per_layer = scan.scores.shape
    limit = float(np.nanmax(np.abs(scan.scores))) or 1.0
    grid_layer, grid_head = np.meshgrid(np.arange(layers), np.arange(heads_per_layer), indexing="ij")
    figure = go.Figure(go.Scatter(
        x=grid_head.ravel() + 1, y=grid_layer.ravel() + 1, mode="markers",
        text=[f"{head_name(a, b)}: {scan.scores[a, b]:+.4f}" for a, b in zip(grid_layer.ravel(), grid_head.ravel())],
        marker=dict(symbol="square", size=int(max(12, min(34, 420 / max(layers, heads_per_layer)))),
                    color=scan.scores.ravel(), colorscale="RdBu", cmin=-limit, cmax=limit, showscale=True),
        hovertemplate="%{text}<extra>click to knock out</extra>"))
    figure.update_layout(title=f"Change in {target.score_name} of '{escape(target.label)}' without each head",
                         height=int(30 * layers + 200), **CALM_LAYOUT)
    figure.update_yaxes(title="layer", autorange="reversed", dtick=1)
    figure.update_xaxes(title="head", dtick=1)
    event = st.plotly_chart(figure, on_select="rerun", selection_mode="points", key="scan_heads", width="stretch")
    points = event.selection.points if event and event.selection else []
    if points:
        index = int(points[0]["point_index"])
        clicked = head_name(index // heads_per_layer, index % heads_per_layer)
        if clicked not in st.session_state.get("ko_heads", []):
            st.session_state["ko_pending"] = clicked
            st.rerun()

# ---------------------------------------------------------------- counterfactual
st.subheader("Counterfactual edit")
st.caption("Replace a word in place (for example 'denies' with 'reports') and compare both versions.")
columns = st.columns(3)
spans = now.trace.word_spans
words = [settings.note[a:b] for a, b in spans.tolist()]
word_names = tuple(f"{word} (word {i + 1})" for i, word in enumerate(words))
first_word = next((i for i, w in enumerate(words) if w.lower() == "denies"), 0)
chosen = columns[0].selectbox("Word to replace", range(len(words)), format_func=word_names.__getitem__,
                              key=ui.note_choice_key("q_cf", now.trace_key, first_word))
ui.defaults(attr_cf_with="reports")
replacement = columns[1].text_input("Replace with", key="attr_cf_with")
cf_choice = columns[2].selectbox("Also explain with", ["predictions only", *methods], key="attr_cf_method",
                                 format_func=COUNTERFACTUAL_CHOICES.__getitem__)
cf_method = None if cf_choice == "predictions only" else cf_choice
start, end = (int(v) for v in spans[chosen])
if replacement.strip() and (ui.has_analysis("counterfactual", now, (target_key, start, end, replacement, cf_method))
                            or st.button("Compare", key="go_cf")):
    with ui.user_errors():
        edit = ui.analysis("counterfactual", now, (target_key, start, end, replacement, cf_method),
                           lambda report: attr.counterfactual(loaded, settings.note, start, end, replacement, target,
                                                              method=cf_method, progress=report, **common),
                           "Comparing both versions")
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
                                edit.original.attribution.word_scores))
            st.markdown("**Edited**")
            st.html(scores_html(edit.edited.text, edit.edited.attribution.word_spans,
                                edit.edited.attribution.word_scores))
