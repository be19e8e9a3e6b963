"""Compare: two models on the same note: tokens, attention, predictions and representation similarity (CKA)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

import ui
from cbert_core.compare import compare_traces
from cbert_core.views.attention_figures import CALM_LAYOUT, attention_heatmap
from cbert_core.views.labels import escape, head_name, position_labels

st.title("Compare")
st.caption("The same note through two models: how each splits it, where a chosen head looks, what each predicts, "
           "and which of their layers hold similar information (linear CKA: 1 = the same up to rotation and "
           "scale, 0 = unrelated).")
now = ui.current()
settings = now.settings
suggestion = st.session_state.get("ft_saved_folder") or ("bundled" if now.loaded.info.spec.kind != "bundled" else "")
ui.defaults(cmp_model=suggestion)
second = st.text_input("Second model: 'bundled', a local folder (e.g. a model you fine-tuned) or a hub id",
                       key="cmp_model", placeholder="/path/to/model").strip()
if not second:
    st.info("Name a second model to compare with the one in force.", icon=":material/info:")
    st.stop()
with ui.user_errors():
    other = ui.get_model(second)
    other_trace, other_key = ui.get_trace(other, settings)
models = [(now.loaded, now.trace), (other, other_trace)]
if other.info.key == now.loaded.info.key:
    st.warning("Both sides are the same model; pick another one to see differences.", icon=":material/warning:")

with ui.user_errors():
    comparison = ui.cached(("compare", now.trace_key, other_key), lambda report: compare_traces(
        now.trace, other_trace, tokenizer_a=now.loaded.tokenizer(now.trace.lowercase),
        tokenizer_b=other.tokenizer(other_trace.lowercase), progress=report), "Comparing representations")

names = [model.info.name for model, _trace in models]
st.subheader("Word pieces")
columns = st.columns(2)
for column, (model, result) in zip(columns, models):
    column.metric(model.info.name, f"{len(result.tokens) - 2:,} pieces")
token_diff = comparison.tokenization
st.caption(f"{len(token_diff.differing)} of {token_diff.word_count} words are split differently.")
if token_diff.differing:
    st.dataframe(pd.DataFrame([{"word": word, names[0]: " ".join(a), names[1]: " ".join(b)}
                               for word, a, b in token_diff.differing[:300]]), hide_index=True, width="stretch")

st.subheader("Layer-to-layer similarity (linear CKA)")
figure = go.Figure(go.Heatmap(
    z=comparison.cka, x=["emb"] + [f"L{i}" for i in range(1, comparison.cka.shape[1])],
    y=["emb"] + [f"L{i}" for i in range(1, comparison.cka.shape[0])], zmin=0, zmax=1, colorscale="Viridis",
    hovertemplate=f"{escape(names[0])} %{{y}} · {escape(names[1])} %{{x}}: %{{z:.3f}}<extra>CKA</extra>"))
figure.update_layout(height=max(360, 30 * comparison.cka.shape[0] + 140), **CALM_LAYOUT)
figure.update_yaxes(title=escape(names[0]), autorange="reversed")
figure.update_xaxes(title=escape(names[1]))
st.plotly_chart(figure, key="cmp_cka", width="stretch")
st.caption(f"Computed on {comparison.shared_words} words both models split into the same characters"
           f"{' (a sample)' if comparison.sampled else ''}; each word is the mean of its pieces.")

st.subheader("Attention of one head in each")
columns = st.columns(2)
for side, (column, (model, result)) in enumerate(zip(columns, models)):
    with column:
        st.markdown(f"**{escape(model.info.name)}**")
        inner = st.columns(2)
        layer = inner[0].number_input("Layer", 1, model.info.num_layers, key=f"cmp_layer_{side}") - 1
        head = inner[1].number_input("Head", 1, model.info.num_heads, key=f"cmp_head_{side}") - 1
        positions = result.window_positions(0)
        labels = position_labels([result.tokens[p] for p in positions], positions)
        st.plotly_chart(attention_heatmap(result.attentions[0][layer, head].astype(np.float32), labels, labels,
                                          head_name(layer, head)), key=f"cmp_attention_{side}", width="stretch")

st.subheader("Predictions")
columns = st.columns(2)
for column, (model, result) in zip(columns, models):
    with column:
        st.markdown(f"**{escape(model.info.name)}** ({model.info.head_kind})")
        head_output = result.head
        if head_output.kind == "masked-lm":
            masks = result.mask_positions
            if len(masks) == 0:
                st.caption("No [MASK] in the note.")
            tokenizer = model.tokenizer(result.lowercase)
            for mask in masks[:3]:
                tokens = tokenizer.convert_ids_to_tokens(head_output.top_ids[mask].tolist())
                st.dataframe(pd.DataFrame({"token": tokens, "probability": np.exp(head_output.top_logprobs[mask])}),
                             hide_index=True)
        elif head_output.kind == "sequence-classification":
            probs = np.exp(head_output.sequence_logits) / np.exp(head_output.sequence_logits).sum(-1, keepdims=True)
            st.dataframe(pd.DataFrame({"label": head_output.labels, "probability": probs.mean(0)}), hide_index=True)
        elif head_output.kind == "token-classification":
            best = head_output.token_logits.argmax(-1)
            st.dataframe(pd.DataFrame({"token": result.tokens, "label": [head_output.labels[i] for i in best]}),
                         hide_index=True, height=240)
        else:
            st.caption("A bare encoder: no prediction head (see the Predictions page for embedding similarity).")
