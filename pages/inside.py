"""Inside the model: the note through the embedding layer, every encoder layer and the output head."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from cbert_core.analyses.inside import attention_step, embedding_walk, encoder_stack, logit_lens, verify_layer
from cbert_core.model.heads import head_adapter
from cbert_core.run.note_parts import FOCUS_RADIUS, focus_positions
from cbert_core.views.attention_figures import neuron_view
from cbert_core.views.inside_figures import (
    attention_step_figure,
    embedding_parts_figure,
    head_share_figure,
    layer_token_heatmap,
    logit_lens_figure,
)
from cbert_core.views.labels import escape, head_name, position_labels
from ui import state
from ui.caches import get_inside
from ui.captions import CAPTIONS
from ui.context import page
from ui.widgets import note_choice, note_part_picker, user_errors

st.title("Inside the model")
st.caption("The note's journey through the model with the real numbers: first the embedding layer, then each "
           "encoder layer (attention, then a feed-forward step), then the output layer.")
now = page()
loaded, info = now.loaded, now.info
part = note_part_picker(now.trace, info, "q_inside_part")
with user_errors():
    inside = get_inside(loaded, now.plan, part.window)
labels = position_labels(inside.tokens, inside.note_positions)
masks = [int(p) for p in inside.mask_positions]
if part.kind != "window":
    first_choice = int(np.searchsorted(inside.note_positions, part.first))
else:
    first_choice = masks[0] if masks else min(1, inside.num_positions - 1)
query = st.selectbox("Word piece to follow", range(inside.num_positions), format_func=labels.__getitem__,
                     key=note_choice("q_inside", (now.trace.key, part.window, part.first, part.last), first_choice,
                                     options=range(inside.num_positions)), persist_state="session",
                     help="The piece whose attention step, head shares and output are shown below.")
shown = focus_positions(inside.note_positions, part, query, FOCUS_RADIUS)  # local rows the views draw
if inside.window_count > 1:
    st.caption(f"The note is read in {inside.window_count} overlapping windows; this pass is window "
               f"{inside.window + 1}: pieces {int(inside.note_positions[1]):,}–{int(inside.note_positions[-2]):,} with "
               "[CLS] and [SEP] around them, exactly as the other pages read it.")
if shown.size < inside.num_positions:
    what = (f"the {part.kind} chosen above" if part.kind != "window"
            else f"{FOCUS_RADIUS} pieces either side of the piece followed")
    st.caption(f"The charts show {shown.size} of the {inside.num_positions} positions of this pass ({what}). Pick "
               "a section or a sentence above to look elsewhere. Drag across a chart to zoom in; double-click to zoom "
               "out.")
shown_labels = [labels[i] for i in shown]

st.header("1 · Embedding layer")
st.caption(CAPTIONS["embeddings"])
walk = embedding_walk(inside)
if walk.projected:
    st.caption(CAPTIONS["embedding_projection"])
shares = ", ".join(f"{name} {share:.0%}" for name, share in zip(walk.part_names, walk.note_norm_shares))
st.markdown(f"Across this pass, the parts' average shares are: **{shares}**.")
st.plotly_chart(embedding_parts_figure(walk.part_names, walk.norm_shares[shown], shown_labels, walk.sum_norms[shown],
                                       walk.output_norms[shown]), key="inside_embeddings", width="stretch")

st.header("2 · Attention, step by step")
st.caption(CAPTIONS["attention_step"])
columns = st.columns(2)
if state.OPEN_INSIDE_LAYER in st.session_state:  # a layer opened from another page (Mechanisms)
    st.session_state["inside_layer"] = min(int(st.session_state.pop(state.OPEN_INSIDE_LAYER)), inside.num_layers)
layer = columns[0].number_input("Layer", 1, inside.num_layers, key="inside_layer", persist_state="session") - 1
head = columns[1].number_input("Head", 1, inside.num_heads, key="inside_head", persist_state="session") - 1
step = attention_step(inside, layer, head, query)
st.plotly_chart(neuron_view(step.query, step.keys, labels, labels[query], step.scale, step.weights, shown=shown),
                key="inside_qk", width="stretch")
if shown.size < inside.num_positions:
    st.caption(f"Keys shown: the {shown.size} positions in view. The softmax runs over all {inside.num_positions} "
               f"keys; the weights in view add up to {float(step.weights[shown].sum()):.0%}.")
left, right = st.columns([3, 2])
with left:
    st.plotly_chart(attention_step_figure(labels, step.scores, step.weights, np.linalg.norm(step.values, axis=-1)),
                    key="inside_step", width="stretch")
with right:
    st.plotly_chart(head_share_figure(step.head_shares, head), key="inside_share", width="stretch")
    st.caption(CAPTIONS["head_share"])
    st.markdown(f"{head_name(layer, head)} gives **{step.share:.0%}** of layer {layer + 1}'s attention update "
                f"at {labels[query]}.")
check = verify_layer(loaded, inside, layer)
st.caption(f"{CAPTIONS['check']} Largest difference in layer {layer + 1}: {check.max_error:.1e} (head output "
           f"{check.context_error:.1e}, attention update {check.attention_update_error:.1e}, layer output "
           f"{check.layer_output_error:.1e}).")

st.header("3 · The encoder stack")
st.caption(CAPTIONS["encoder_stack"])
stack = encoder_stack(inside)
left, right = st.columns(2)
with left:
    st.plotly_chart(layer_token_heatmap(stack.attention_relative[:, shown], shown_labels, "Attention's change",
                                        "relative size"), key="inside_att_rel", width="stretch")
with right:
    st.plotly_chart(layer_token_heatmap(stack.ffn_relative[:, shown], shown_labels, "Feed-forward's change",
                                        "relative size"), key="inside_ffn_rel", width="stretch")
st.caption("Both maps: the size of each layer's change relative to the running summary it is added to.")
st.plotly_chart(layer_token_heatmap(stack.stream_norms[:, shown], shown_labels, "Size of the running summary",
                                    "norm", first_layer=0), key="inside_stream", width="stretch")
st.caption("The norm of the running summary entering each layer, and after the last.")

st.header("4 · Output layer")
output = inside.output
st.caption(CAPTIONS[f"output.{output.kind}"])
if output.kind == "masked-lm":
    st.markdown(f"At {labels[query]}:")
st.dataframe(pd.DataFrame(head_adapter(output.kind).rows(output, inside.tokens, query, shown)), hide_index=True,
             width="stretch")
if output.kind == "masked-lm":  # the logit lens reads the masked-LM head off every layer
    st.subheader("Logit lens")
    st.caption(CAPTIONS["logit_lens"])
    with user_errors():
        lens = logit_lens(loaded, inside, query)
    st.plotly_chart(logit_lens_figure(lens.layer_names, lens.final_probs, lens.input_token_probs,
                                      escape(lens.final_token), escape(lens.token)), key="inside_lens",
                    width="stretch")
    st.dataframe(pd.DataFrame({name: [f"{token} ({prob:.0%})" for token, prob in zip(tokens, probs)]
                               for name, tokens, probs in zip(lens.layer_names, lens.top_tokens, lens.top_probs)}),
                 hide_index=True, width="stretch")
st.page_link("pages/predictions.py", label="What the model predicts, and why: the Predictions page",
             icon=":material/arrow_forward:")
