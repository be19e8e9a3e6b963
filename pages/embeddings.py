"""Embeddings: token projections per layer, trajectories, cosine similarity, the note embedding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from cbert_core.analyses.projection import (
    METHOD_NAMES,
    cosine_matrix,
    note_embeddings,
    point_groups,
    project,
    trajectories,
)
from cbert_core.views import export
from cbert_core.views.embedding_figures import (
    layer_curves,
    note_path_figure,
    projection_scatter,
    similarity_heatmap,
    token_contexts,
    trajectory_figure,
)
from cbert_core.views.labels import layer_name, position_labels
from ui.caches import computed, projection_estimate, projection_timer
from ui.context import page
from ui.state import defaults
from ui.widgets import download, note_choice

st.title("Embeddings")
st.caption("Every token is a vector (a long list of numbers) after each layer. Here they are flattened to two "
           "dimensions so you can see which tokens the model treats alike, and how that changes with depth.")
now = page()
result = now.trace
layers = result.num_layers
labels = position_labels(result.tokens, range(result.num_positions))

controls = st.columns([3, 1, 1])
defaults(emb_layer=layers)
layer = controls[0].slider("Layer (0 = the embedding layer)", 0, layers, key="emb_layer", persist_state="session")
method = controls[1].selectbox("Projection", list(METHOD_NAMES), key="emb_method", persist_state="session",
                               format_func=METHOD_NAMES.__getitem__,
                               help="PCA is instant; UMAP and t-SNE take longer and are computed on request.")
colour_by = controls[2].selectbox("Colour by", ["section", "sentence", "piece kind"], key="emb_colour",
                                  persist_state="session")

if method != "pca" and not st.session_state.get(f"emb_run_{method}"):
    points = result.num_positions
    st.info(f"{METHOD_NAMES[method]} is computed for each layer you pick, on this note's {points:,} positions: "
            f"{projection_estimate(method, points)}.", icon=":material/timer:")
    if st.button(f"Compute {METHOD_NAMES[method]}", key=f"go_{method}"):
        st.session_state[f"emb_run_{method}"] = True
        st.rerun()
    method = "pca"

projected = computed(project, result, layer=layer, method=method, label=f"Computing {METHOD_NAMES[method]}",
                     progress=method != "pca", measure=projection_timer(method))
groups = point_groups(result, projected.positions, colour_by)
hover = token_contexts(result.text, result.offsets, labels, projected.positions)
axes = (("PC 1", "PC 2") if projected.method == "pca" else (f"{METHOD_NAMES[projected.method]} 1",
                                                          f"{METHOD_NAMES[projected.method]} 2"))
explained = (f" (PCA axes explain {sum(projected.explained):.0%} of the variance)" if projected.explained else "")
scatter = projection_scatter(projected.coords, groups, hover,
                             f"{METHOD_NAMES[projected.method]} of tokens after {layer_name(layer)}{explained}", axes)
st.plotly_chart(scatter, key="emb_scatter", width="stretch")
downloads = st.columns(2)
with downloads[0]:
    download("Coordinates (CSV)", lambda: export.table_to_csv_bytes(pd.DataFrame({
        "position": projected.positions, "token": [result.tokens[p] for p in projected.positions],
        "x": projected.coords[:, 0], "y": projected.coords[:, 1], "group": groups})),
        f"projection_layer{layer}.csv", "text/csv", "dl_emb_csv")
with downloads[1]:
    download("This chart (HTML)", lambda: export.figure_to_html_bytes(scatter), f"projection_layer{layer}.html",
                "text/html", "dl_emb_html")

st.subheader("Chosen tokens")
content_positions = [int(p) for p in np.flatnonzero(~result.special)]
default = [p for p in content_positions if result.tokens[p].lower() in {"copd", "cop", "pneumonia", "chest"}][:4]
chosen = st.multiselect("Tokens to follow", content_positions, format_func=labels.__getitem__, max_selections=12,
                        key=note_choice("q_follow", now.trace.key, default or content_positions[:3],
                                        options=content_positions), persist_state="session")
if chosen:
    left, right = st.columns(2)
    with left:
        paths = computed(trajectories, result, positions=tuple(chosen), label="Following the tokens", progress=False)
        st.plotly_chart(trajectory_figure(paths.coords, [labels[p] for p in chosen],
                                          "Paths through the layers (E = embeddings, then layer numbers)"),
                        key="emb_paths", width="stretch")
    with right:
        matrix = cosine_matrix(result.hidden_states[layer, chosen])
        st.plotly_chart(similarity_heatmap(matrix, [labels[p] for p in chosen],
                                           f"Cosine similarity after {layer_name(layer)}"),
                        key="emb_cosine", width="stretch")

st.subheader("The note as one vector")
st.caption("Two common ways to summarize a note: the [CLS] position's vector, or the average of every word "
           "piece's vector (how all-MiniLM-L6-v2 makes sentence embeddings).")
note = computed(note_embeddings, result, label="Summarizing the note", progress=False)
left, right = st.columns(2)
with left:
    st.plotly_chart(layer_curves({"[CLS] vs last layer": note.cls_to_final, "mean vs last layer": note.mean_to_final,
                                  "[CLS] vs mean": note.cls_to_mean},
                                 "How similar the note vector is to its final form", "cosine"),
                    key="emb_note_curves", width="stretch")
with right:
    st.plotly_chart(note_path_figure(note.coords, "The note vector through the layers (shared PCA plane)"),
                    key="emb_note_path", width="stretch")
