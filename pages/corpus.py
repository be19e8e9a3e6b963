"""Corpus: a collection of notes as points per layer, and contextual token search across it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from cbert_core.corpus.collection import (
    candidate_label_columns,
    candidate_text_columns,
    collection_from_table,
    collection_from_texts,
    read_table,
)
from cbert_core.corpus.embeddings import note_embeddings, planned_passes, project_notes
from cbert_core.corpus.token_search import build_token_index, search_trace_token
from cbert_core.errors import CbertError
from cbert_core.text.examples import EXAMPLE_COLLECTION
from cbert_core.views.embedding_figures import projection_scatter
from cbert_core.views.labels import escape, layer_name, position_labels
from ui import state
from ui.caches import computed, estimate, get_collection_plans, is_computed
from ui.context import page
from ui.note_inputs import open_note
from ui.widgets import ask_once, kept_upload, note_choice, user_errors

st.title("Corpus")
st.caption("Many notes at once: where each note sits in the model's space, layer by layer, and which words in "
           "the collection the model reads most like a word of the current note.")
now = page()
loaded, info, settings = now.loaded, now.info, now.settings

source = st.radio("Collection", ["Example set (30 labelled sentences)", "Upload CSV or JSONL"], horizontal=True,
                  key="corpus_source", persist_state="session")
collection = None
with user_errors():
    if source.startswith("Example"):
        texts, labels = zip(*EXAMPLE_COLLECTION)
        collection = collection_from_texts(list(texts), labels=list(labels))
    else:
        upload = kept_upload("Notes (CSV with a header row, or JSONL: one JSON object per line)",
                                types=["csv", "tsv", "txt", "jsonl", "json"], key="corpus_upload")
        if upload is None:
            st.stop()
        table = read_table(upload.data, name=upload.name)
        for warning in table.warnings:
            st.warning(warning, icon=":material/warning:")
        text_columns = candidate_text_columns(table)
        if not text_columns:
            raise CbertError(f"{upload.name} has no column that holds text. The columns are: "
                             f"{', '.join(map(str, table.frame.columns))}.")
        columns = st.columns(2)
        # The column choices belong to the file: kept while it stays in use, reset for another file.
        text_column = columns[0].selectbox("Text column", text_columns, persist_state="session", key=note_choice(
            "corpus_text_column", upload.digest, text_columns[0], options=text_columns))
        label_options = ["(none)", *candidate_label_columns(table)]
        label_column = columns[1].selectbox("Label column (optional)", label_options, persist_state="session",
                                            key=note_choice("corpus_label_column", upload.digest, label_options[0],
                                                            options=label_options))
        collection = collection_from_table(table, text_column=text_column,
                                                  label_column=None if label_column == "(none)" else label_column)
        for warning in collection.warnings:
            st.caption(warning)
st.caption(f"{len(collection.texts):,} notes" + (f", labels: {', '.join(collection.label_names)}"
                                                  if collection.labels is not None else ""))

st.subheader("Notes in the model's space")
columns = st.columns(3)
pooling = columns[0].selectbox("Note vector", ["mean", "cls"], key="corpus_pooling", persist_state="session",
                               format_func={"mean": "mean of word pieces", "cls": "[CLS] position"}.__getitem__)
state.defaults(corpus_layer=info.num_layers, corpus_search_layer=min(info.num_layers, 4), corpus_k=10)
layer = columns[1].slider("Layer (0 = embeddings)", 0, info.num_layers, key="corpus_layer", persist_state="session")
method = columns[2].selectbox("Projection", ["pca", "umap"], key="corpus_method", format_func=str.upper,
                              persist_state="session")
with user_errors():
    plans = get_collection_plans(loaded, collection.texts, settings.options)
passes = planned_passes(plans)  # every window of every note, once; the search index below runs the same passes


def cost(what: str) -> str:
    """What a run costs, before the click (the collection runs in float32 whatever the sidebar's precision)."""
    return f"{what} runs {passes.rows:,} note windows through the model: {estimate(loaded, 'fp32', passes)}."


embedded = is_computed(note_embeddings, loaded, plans, pooling=pooling)
if not embedded:
    st.caption(cost("Embedding the collection"))
if ask_once("Embed the collection", key="go_corpus_embed", ready=embedded, primary=True):
    with user_errors():
        vectors = computed(note_embeddings, loaded, plans, pooling=pooling,
                           label=f"Embedding {len(collection.texts):,} notes", passes=passes)
        projected = computed(project_notes, vectors, layer, method=method, label="Projecting")
    groups = ([str(label) for label in collection.labels] if collection.labels is not None
              else ["note"] * len(collection.texts))
    hover = [f"{escape(str(note_id))}: {escape(text[:160])}…" for note_id, text in zip(collection.ids,
                                                                                       collection.texts)]
    event = st.plotly_chart(projection_scatter(projected.coords, groups, hover,
                                               f"{method.upper()} of note vectors after {layer_name(layer)}"),
                            on_select="rerun", selection_mode="points", key="scatter_corpus", width="stretch")
    points = event.selection.points if event and event.selection else []
    if points:
        picked = points[0]
        group = groups[0] if len(set(groups)) == 1 else list(dict.fromkeys(groups))[picked["curve_number"]]
        members = [i for i, g in enumerate(groups) if g == group]
        note_index = members[int(picked["point_index"])]
        st.markdown(f"**Picked:** {escape(collection.texts[note_index][:300])}")
        if st.button("Open this note in the explorer", key="go_open_note"):
            open_note(collection.texts[note_index])

st.subheader("Token search across the collection")
st.caption("Pick a word piece of the current note: the collection's word pieces whose vectors (at the chosen "
           "layer) are closest to it by cosine similarity, shown in their sentences. Found through a faiss index.")
result = now.trace
content = [int(p) for p in np.flatnonzero(~result.special)]
labels = position_labels(result.tokens, range(result.num_positions))
columns = st.columns([3, 2, 1])
default = next((p for p in content if result.tokens[p].lower() in {"denies", "pneumonia", "copd"}), content[0])
position = columns[0].selectbox("Word piece of the current note", content, format_func=labels.__getitem__,
                                key=note_choice("q_corpus", result.key, default, options=content),
                                persist_state="session")
search_layer = columns[1].slider("Layer", 1, info.num_layers, key="corpus_search_layer", persist_state="session")
top_k = columns[2].number_input("Matches", 1, 50, key="corpus_k", persist_state="session")
indexed = is_computed(build_token_index, loaded, plans, layer=search_layer, note_ids=collection.ids)
if not indexed:
    st.caption(cost("Building the index"))
if ask_once("Build the search index", key="go_corpus_index", ready=indexed):
    with user_errors():
        index = computed(build_token_index, loaded, plans, layer=search_layer, note_ids=collection.ids,
                         label="Indexing every word piece of the collection", passes=passes)
        matches = search_trace_token(index, result, position, k=int(top_k))
    rows = []
    for match in matches:
        start = match.char_start - match.context_start
        end = match.char_end - match.context_start
        context = match.context
        rows.append({"score": round(match.score, 3), "note": str(match.note_id), "token": match.token,
                     "in context": f"{context[:start]}«{context[start:end]}»{context[end:]}"})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption(f"Index: {index.size:,} word pieces at layer {search_layer}, {index.nbytes / 2**20:.1f} MB.")
