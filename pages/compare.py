"""Compare: two models on the same note: tokens, attention, predictions and representation similarity (CKA)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from cbert_core.analyses.compare import casing_for_second_model, compare_traces
from cbert_core.model.heads import head_adapter
from cbert_core.views.attention_figures import attention_heatmap
from cbert_core.views.compare_figures import cka_heatmap
from cbert_core.views.labels import escape, head_name, position_labels
from ui import state
from ui.caches import computed, get_model, get_plan, get_trace, trace_estimate
from ui.context import page, with_options
from ui.widgets import user_errors

SECOND_MAP = {"above": "CKA above the reference", "reference": "The reference itself"}

st.title("Compare")
st.caption("The same note through two models: how each splits it, where a chosen head looks, what each predicts, "
           "and which of their layers hold similar information (linear CKA: 1 = the same up to rotation and "
           "scale, 0 = unrelated).")
now = page()
settings = now.settings
suggestion = st.session_state.get(state.FT_SAVED_FOLDER) or ("bundled" if now.info.spec.kind != "bundled" else "")
state.defaults(cmp_model=suggestion, cmp_second_map="above", cmp_own_scale=False)
second = st.text_input("Second model: 'bundled', a local folder (e.g. a model you fine-tuned) or a hub id",
                       key="cmp_model", placeholder="/path/to/model", persist_state="session").strip()
if not second:
    st.info("Name a second model to compare with the one in force.", icon=":material/info:")
    st.stop()
with user_errors():
    other = get_model(second)
    # The second model reads the note with its own casing unless the sidebar's switch means the same for it.
    other_settings = with_options(settings, lowercase=casing_for_second_model(
        now.info, other.info, settings.options.lowercase))
    other_plan = get_plan(other, other_settings.note, other_settings.options)
    # Not run yet for this note (a long note takes a while on a large model): say what it costs while it runs.
    cost = trace_estimate(other, other_plan)
    other_trace = get_trace(other, other_plan, label=f"Running the note through {other.info.name}"
                            + (f", {cost}" if cost else ""))
models = [(now.loaded, now.trace), (other, other_trace)]
if other.info.key == now.info.key:
    st.warning("Both sides are the same model; pick another one to see differences.", icon=":material/warning:")

with user_errors():
    comparison = computed(compare_traces, now.trace, other_trace, loaded_a=now.loaded, loaded_b=other,
                          label="Comparing representations")

names = [model.info.name for model, _trace in models]
st.subheader("Word pieces")
columns = st.columns(2)
for column, (model, result) in zip(columns, models):
    column.metric(model.info.name, f"{len(result.tokens) - 2:,} pieces")
    column.caption("Reads the note lower-cased." if result.lowercase else "Reads the note with its case kept.")
token_diff = comparison.tokenization
st.caption(f"{len(token_diff.differing)} of {token_diff.word_count} words are split differently.")
if token_diff.differing:
    st.dataframe(pd.DataFrame([{"word": word, names[0]: " ".join(a), names[1]: " ".join(b)}
                               for word, a, b in token_diff.differing[:300]]), hide_index=True, width="stretch")

st.subheader("Layer-to-layer similarity (linear CKA)")
shown = st.radio("Beside the CKA map, show", list(SECOND_MAP), format_func=SECOND_MAP.__getitem__,
                 key="cmp_second_map", horizontal=True, persist_state="session")
left, right = st.columns(2)
left.plotly_chart(cka_heatmap(comparison.cka, comparison.reference, names[0], names[1], "cka"), key="cmp_cka",
                  width="stretch")
right.plotly_chart(cka_heatmap(comparison.cka, comparison.reference, names[0], names[1], shown),
                   key="cmp_cka_reference", width="stretch")
st.caption(f"Reference: the same CKA against {escape(names[1])} with random, untrained weights (same architecture, "
           f"seed {comparison.reference_seed}) on the same words; words alone make layers this alike, so only CKA "
           "above it reflects training.")
sample = (f" (a seeded sample from {comparison.reference_windows} of {comparison.windows_b} windows)"
          if comparison.sampled else "")
st.caption(f"Computed on {len(comparison.word_spans):,} of the {comparison.shared_words:,} words both models split "
           f"into the same characters{sample}; each word is the mean of its pieces.")

st.subheader("Attention of one head in each")
own_scale = st.toggle("Scale each map on its own", key="cmp_own_scale", persist_state="session")
columns = st.columns(2)
maps = []
for side, (column, (model, result)) in enumerate(zip(columns, models)):
    with column:
        st.markdown(f"**{escape(model.info.name)}**")
        inner = st.columns(2)
        layer = inner[0].number_input("Layer", 1, model.info.num_layers, key=f"cmp_layer_{side}",
                                      persist_state="session") - 1
        head = inner[1].number_input("Head", 1, model.info.num_heads, key=f"cmp_head_{side}",
                                      persist_state="session") - 1
        positions = result.window_positions(0)
        maps.append((result.attentions[0][layer, head].astype(np.float32),
                     position_labels([result.tokens[p] for p in positions], positions), head_name(layer, head)))
largest = [float(weights.max()) for weights, _labels, _title in maps]
shared_top = None if own_scale else max(largest)
for side, (column, (weights, labels, title)) in enumerate(zip(columns, maps)):
    column.plotly_chart(attention_heatmap(weights, labels, labels, title, zmax=shared_top),
                        key=f"cmp_attention_{side}", width="stretch")
if own_scale:
    st.caption(f"Each map is scaled to its own largest weight ({largest[0]:.3f} and {largest[1]:.3f}): "
               "the same colour means different weights in the two.")
else:
    st.caption(f"Both maps share one colour scale, 0 to {shared_top:.3f} (the larger of the two maxima), so "
               "their colours compare.")

st.subheader("Predictions")
columns = st.columns(2)
for column, (model, result) in zip(columns, models):
    with column:
        st.markdown(f"**{escape(model.info.name)}** ({model.info.head_kind})")
        rows = head_adapter(model.info.head_kind).trace_rows(result.head, result.tokens, result.mask_positions,
                                                              model.tokenizer(result.lowercase).convert_ids_to_tokens)
        if rows:
            st.dataframe(pd.DataFrame(rows), hide_index=True, height=min(40 + 35 * len(rows), 320))
        elif model.info.head_kind == "masked-lm":
            st.caption("No [MASK] in the note.")
        else:
            st.caption("A bare encoder: no prediction head (see the Predictions page for embedding similarity).")
