"""Attention: every head, layer by layer; statistics, bertviz views, rollout and the neuron view."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
import streamlit.components.v1 as components

from cbert_core.analyses.attention import (
    focus_position,
    head_statistics,
    hide_specials,
    rollout,
    statistics_table,
    to_words,
    window_groups,
)
from cbert_core.run.head_stats import HeadStatistics
from cbert_core.run.note_parts import FOCUS_RADIUS, rows_around
from cbert_core.views import export
from cbert_core.views.attention_figures import attention_heatmap, head_grid, neuron_view, rollout_figure, word_list
from cbert_core.views.bertviz_offline import MAX_HEAD_VIEW_TOKENS, MAX_MODEL_VIEW_TOKENS, bertviz_html, frame_size
from cbert_core.views.labels import head_name, position_labels
from ui import state
from ui.caches import computed
from ui.context import page
from ui.widgets import download, note_choice

VIEWS = ["Heads", "bertviz head view", "bertviz model view", "Rollout", "Neuron view"]
SHOWN_METRICS = ("structure", *HeadStatistics.METRICS)
METRIC_NAMES = {metric: metric.replace("_", " ") for metric in SHOWN_METRICS}
WORD_LEVEL_FROM = 2 * FOCUS_RADIUS + 1  # windows longer than this open at word level, focused on one word

st.title("Attention")
st.caption("Each head decides, for every token, how much to look at every other token. Rows of a head's "
           "matrix sum to 1. Pick a layer and a head, or click one in the grid.")
now = page()
result, info = now.trace, now.info
layers, heads = result.num_layers, result.num_heads

controls = st.columns([1, 1, 1, 2])
window = 0
if len(result.windows) > 1:
    window_names = tuple(f"window {w + 1} (pieces {span.start + 1}–{span.stop})"
                         for w, span in enumerate(result.windows))
    window = controls[3].selectbox("Window", range(len(result.windows)), format_func=window_names.__getitem__,
                                   key=note_choice("att_window", now.trace.key, 0, options=range(len(result.windows))),
                                   persist_state="session")
stats = computed(head_statistics, result, window=window, label="Summarizing every attention head", progress=False)
best_layer, best_head = stats.most_structured()
st.session_state.setdefault("att_layer", best_layer + 1)  # first visit: a head whose map shows a pattern
st.session_state.setdefault("att_head", best_head + 1)
if state.OPEN_HEAD in st.session_state:  # a click in the grid on the previous run, or on another page
    st.session_state["att_layer"], st.session_state["att_head"] = st.session_state.pop(state.OPEN_HEAD)
layer = controls[0].number_input("Layer", 1, layers, key="att_layer", persist_state="session") - 1
head = controls[1].number_input("Head", 1, heads, key="att_head", persist_state="session") - 1
view = controls[2].selectbox("View", VIEWS, key="att_view", persist_state="session")

positions = result.window_positions(window)
tokens = [result.tokens[p] for p in positions]
labels = position_labels(tokens, positions)
weights = result.attentions[window]  # [layer, head, q, k] float16
long_window = len(positions) > WORD_LEVEL_FROM
focused = False  # True: the views draw the neighbourhood of focus_row
focus_row = 0
if long_window and view not in {"bertviz head view", "bertviz model view"}:
    focus_columns = st.columns([3, 1], vertical_alignment="bottom")
    whole = focus_columns[1].toggle("Whole window", key="att_whole", persist_state="session",
                                    help=f"Draw all {len(positions)} positions (labels thin out; zoom in to read them).")
    if not whole:
        focus_row = focus_columns[0].selectbox(
            "Focus on", range(len(positions)), format_func=labels.__getitem__, persist_state="session",
            key=note_choice("att_focus", (now.trace.key, window), focus_position(result, window, layer, head),
                            options=range(len(positions))),
            help=f"This window has {len(positions)} positions; the views show {FOCUS_RADIUS} either side of this "
                 "piece (type to search). The default is the [MASK], or the piece this head attends to most.")
        focused = True
    st.caption(("Showing the neighbourhood of the piece in focus. " if focused else "")
               + "Drag across a chart to zoom in, double-click to zoom out; hover a cell for its tokens and weight.")

if view == "Heads":
    grid_column, map_column = st.columns([2, 3])
    with grid_column:
        metric = st.selectbox("Statistic", SHOWN_METRICS, key="att_metric", format_func=METRIC_NAMES.__getitem__,
                              persist_state="session")
        event = st.plotly_chart(head_grid(stats.metric(metric), metric, (layer, head)), on_select="rerun",
                                selection_mode="points", key="grid_heads", width="stretch")
        points = event.selection.points if event and event.selection else []
        if points:
            index = int(points[0]["point_index"])
            clicked = (index // heads + 1, index % heads + 1)
            if clicked != (layer + 1, head + 1):
                st.session_state[state.OPEN_HEAD] = clicked
                st.rerun()
        st.caption(f"{head_name(layer, head)}: entropy {stats.entropy[layer, head]:.2f}, mean distance "
                   f"{stats.mean_distance[layer, head]:.1f} tokens, on [CLS] {stats.cls_share[layer, head]:.0%}, "
                   f"on [SEP] {stats.sep_share[layer, head]:.0%}, on punctuation "
                   f"{stats.punctuation_share[layer, head]:.0%}. The most structured head here is "
                   f"{head_name(best_layer, best_head)}.")
    with map_column:
        options = st.columns(2)
        words = options[0].toggle("Word level", help="Sum over a word's pieces as keys, average over them as queries.",
                                  key=note_choice("att_words", (now.trace.key, window), long_window),
                                  persist_state="session")
        hide = options[1].toggle("Hide [CLS]/[SEP]", key="att_hide", persist_state="session",
                                 help="Drop the special tokens and renormalize each row to sum to 1.")
        matrix = weights[layer, head].astype(np.float32)
        row_labels = labels
        keep = ~result.special[positions]
        centre = focus_row
        if words:
            groups, word_labels, firsts = window_groups(result, window)
            matrix = to_words(matrix, groups)
            row_labels = word_list(list(word_labels))
            keep = ~result.special[positions[firsts]]
            centre = int(groups[focus_row])
        if hide:
            matrix = hide_specials(matrix, keep)
            row_labels = [label for label, kept in zip(row_labels, keep) if kept]
            centre = max(0, int(keep[:centre].sum()) - (0 if keep[centre] else 1))
        shown = rows_around(len(row_labels), centre) if focused else np.arange(len(row_labels))
        figure = attention_heatmap(matrix[np.ix_(shown, shown)], [row_labels[i] for i in shown],
                                   [row_labels[i] for i in shown],
                                   f"{head_name(layer, head)}{' · words' if words else ''}")
        st.plotly_chart(figure, key="att_heatmap", width="stretch")
        if shown.size < len(row_labels):
            st.caption(f"{shown.size} of {len(row_labels)} {'words' if words else 'pieces'} shown, around the focus; "
                       "weights to the others are not drawn, so rows here may add up to less than 1.")
        downloads = st.columns(2)
        with downloads[0]:
            download("This heatmap (HTML)", lambda: export.figure_to_html_bytes(figure),
                        f"attention_{head_name(layer, head).replace(' ', '_')}.html", "text/html", "dl_att_html")
        with downloads[1]:
            download("Head statistics (CSV)", lambda: export.table_to_csv_bytes(pd.DataFrame(statistics_table(stats))),
                     "head_statistics.csv", "text/csv", "dl_att_stats")
        st.caption("PNG: use the camera icon in the chart's toolbar (drawn in your browser).")

elif view in {"bertviz head view", "bertviz model view"}:
    limit = MAX_HEAD_VIEW_TOKENS if view == "bertviz head view" else MAX_MODEL_VIEW_TOKENS
    last = len(positions) - 2  # content positions are 1..last
    start = st.slider("First word piece shown", 1, max(last, 1), 1, key=f"bv_start_{view}") if last > limit - 2 else 1
    stop = min(last, start + limit - 3)
    shown = np.unique(np.concatenate([[0], np.arange(start, stop + 1), [len(positions) - 1]]))
    st.caption(f"Showing [CLS], pieces {start}–{stop} and [SEP] ({len(shown)} of {len(positions)} positions): "
               f"bertviz sends every value to the browser, so long notes are shown a span at a time.")
    span = weights[:, :, shown][:, :, :, shown].astype(np.float32)
    span_tokens = [tokens[i] for i in shown]
    kind = "head" if view == "bertviz head view" else "model"
    # The frame is as tall as the drawing (plus room for a sideways scroll bar on narrow screens).
    frame_height = frame_size(kind, span.shape[0], span.shape[1], len(shown), scroll_bar=True)[1]
    if kind == "head":
        page = bertviz_html("head", span, span_tokens, layer=layer, heads=[head])
        st.caption(f"Layer {layer + 1}, showing head {head + 1} (the Head picker). Hover a token to see where it "
                   f"looks. Click a numbered square to add or remove a head; double-click one to see it alone, "
                   f"double-click it again to see every head.")
    else:
        page = bertviz_html("model", span, span_tokens)
        st.caption("Every layer (rows) and head (columns), numbered from 1; click a thumbnail to enlarge it.")
    components.html(page, height=frame_height, scrolling=True)

elif view == "Rollout":
    flows = computed(rollout, result, window=window, label="Rolling attention out", progress=False)  # [layer, q, k]
    masks = np.flatnonzero(np.isin(positions, result.mask_positions))
    query = st.selectbox("Whose information flow", range(len(positions)), format_func=labels.__getitem__,
                         key=note_choice("q_rollout", (now.trace.key, window), int(masks[0]) if masks.size else 0,
                                         options=range(len(positions))), persist_state="session")
    st.caption("Attention rollout multiplies the head-averaged attention (with the residual connection mixed in) "
               "through the layers: an estimate of how much each input token reaches the chosen token by then. "
               "The colour scale leaves out the token itself and [CLS]/[SEP], which would outshine the rest.")
    shown = rows_around(len(positions), focus_row) if focused else np.arange(len(positions))
    others = np.setdiff1d(shown, [query, 0, len(positions) - 1])
    top = float(flows[:, query, others].max()) if others.size else None
    st.plotly_chart(rollout_figure(flows[:, query, shown], [labels[i] for i in shown], layers,
                                   f"Rollout to {labels[query]}", zmax=top), key="att_rollout", width="stretch")

else:  # Neuron view
    with_qk = now.traced_with_queries()
    query = st.selectbox("Query token", range(len(positions)), format_func=labels.__getitem__,
                         key=note_choice("q_neuron", (now.trace.key, window), focus_row or min(1, len(positions) - 1),
                                         options=range(len(positions))), persist_state="session")
    shown = rows_around(len(positions), query) if focused else np.arange(len(positions))
    q = with_qk.queries[window][layer, head, query]  # [head_dim]
    k = with_qk.keys[window][layer, head]  # [n, head_dim]
    st.caption("The query vector of the chosen token meets every key vector: their elementwise product, the "
               "scaled dot product q·k/√d and the softmax over keys, which is the attention row the model used."
               + (f" Keys shown: {shown.size} of {len(positions)} around the query; the softmax runs over all of "
                  "them." if shown.size < len(positions) else ""))
    st.plotly_chart(neuron_view(q, k, labels, labels[query], 1.0 / np.sqrt(info.head_dim),
                                with_qk.attentions[window][layer, head, query].astype(np.float32), shown=shown),
                    key="att_neuron", width="stretch")
