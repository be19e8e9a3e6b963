"""Note: the note's sections, sentences, size in tokens and, for long notes, its windows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from cbert_core.text.words import count_words
from cbert_core.views import export
from cbert_core.views.text_html import segments_html
from ui.context import page
from ui.widgets import download

st.title("Note")
st.caption("How the note is split into sections and sentences, and how much of it the model reads at once.")
now = page()
result, info = now.trace, now.info
segmentation = result.segmentation
content = len(result.tokens) - 2
unknown = sum(1 for token in result.tokens if token == info.unk_token)
words = count_words(result.text)

columns = st.columns(6)
columns[0].metric("Characters", f"{len(result.text):,}")
columns[1].metric("Word pieces", f"{content:,}")
columns[2].metric("Words", f"{words:,}")
columns[3].metric("Sentences", f"{len(segmentation.sentences):,}")
columns[4].metric("Sections", f"{sum(1 for s in segmentation.sections if s.title):,}")
columns[5].metric("Windows", f"{len(result.windows)}")
per_word = f" ({content / words:.1f} per word)" if words else ""
st.caption(f"{content:,} word pieces for {words:,} words{per_word}. Word pieces are the units the model reads: "
           f"whole words or parts of words marked ##; punctuation is its own piece.")

if len(result.windows) > 1:
    st.info(f"This note has {content:,} word pieces; {info.name} reads at most {info.max_tokens} positions "
            f"({info.max_tokens - 2} word pieces plus [CLS] and [SEP]) at once. It is read in "
            f"{len(result.windows)} overlapping windows, cut at sentence boundaries where possible; each word "
            f"piece's values come from the window where it has the most context on both sides.", icon=":material/view_week:")
else:
    st.caption(f"The whole note fits in one pass ({content + 2} of {info.max_tokens} positions).")
if content + 2 > 128 and info.name.endswith("Bio_ClinicalBERT"):
    st.caption("Bio_ClinicalBERT was pretrained on sequences of 128 tokens: positions past 128 saw little "
               "clinical training.")

offsets = result.offsets[1:-1]
window_chars = [(int(offsets[w.start, 0]), int(offsets[w.stop - 1, 1])) for w in result.windows]
sections = [(s.title, s.start, s.body_start) for s in segmentation.sections if s.title]
sentences = [(s.start, s.end) for s in segmentation.sentences]
st.subheader("Sections and sentences")
st.caption("Section headers in bold; sentences shaded and numbered; de-identification placeholders "
           "such as [** ... **] are kept whole.")
st.html(segments_html(result.text, sections, sentences, window_chars))

left, right = st.columns(2)
with left:
    st.subheader("Sections")
    rows = []
    for index, section in enumerate(segmentation.sections):
        in_section = result.section_ids == index
        rows.append({"section": section.title or "(before the first header)",
                     "sentences": sum(1 for s in segmentation.sentences if s.section == index),
                     "word pieces": int(in_section.sum()),
                     "characters": section.end - section.start})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
with right:
    st.subheader("Windows")
    st.dataframe(pd.DataFrame([{
        "window": w.index + 1, "first piece": w.start + 1, "last piece": w.stop,
        "pieces": w.size, "characters": f"{window_chars[w.index][0]}–{window_chars[w.index][1]}",
        "owns pieces": int(np.sum(result.owner[1:-1] == w.index)),
    } for w in result.windows]), hide_index=True, width="stretch")
    if unknown:
        st.warning(f"{unknown} piece(s) are unknown to the vocabulary ([UNK]); see the Tokenization page.")

st.subheader("Export")
st.caption("Downloads go straight to your browser; nothing is saved on the server.")
columns = st.columns(3)
with columns[0]:
    download("Trace without attention (JSON)",
             lambda: export.to_json_bytes(result, exclude=("attentions", "queries", "keys")),
             "trace.json", "application/json", "dl_trace_json")
with columns[1]:
    download("Full trace (NPZ)", lambda: export.to_npz_bytes(result), "trace.npz", "application/octet-stream",
                "dl_trace_npz")
with columns[2]:
    download("Sentences (CSV)", lambda: export.table_to_csv_bytes(pd.DataFrame(
        [{"sentence": i + 1, "section": segmentation.sections[s.section].title, "start": s.start, "end": s.end,
          "text": result.text[s.start:s.end]} for i, s in enumerate(segmentation.sentences)])),
        "sentences.csv", "text/csv", "dl_sentences")
