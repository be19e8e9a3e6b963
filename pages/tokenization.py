"""Tokenization: word-piece boundaries on the text, the piece table, fertility, casing, a second tokenizer."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cbert_core.errors import CbertError
from cbert_core.model.loading import BIO_CLINICALBERT
from cbert_core.text.tokenization import compare, fertility
from cbert_core.views.text_html import pieces_html
from ui.caches import get_tokenizer
from ui.context import page
from ui.state import defaults

MAX_TABLE_ROWS = 5000

st.title("Tokenization")
st.caption("How the model cuts the note into word pieces. Pieces of one word share a colour; a blue bar marks "
           "where a word was cut. Red pieces are unknown to the vocabulary ([UNK]).")
now = page()
result, loaded, info = now.trace, now.loaded, now.info
text = result.text
content = slice(1, -1)
tokens = result.tokens[content]
offsets = result.offsets[content]
word_ids = result.word_ids[content]
pieces = now.plan.tokens
stats = fertility(text, pieces, info.unk_token)

columns = st.columns(4)
columns[0].metric("Word pieces", f"{stats.piece_count:,}")
columns[1].metric("Words", f"{len(stats.words):,}")
columns[2].metric("Pieces per word", f"{stats.mean_pieces:.2f}")
columns[3].metric("Unknown pieces [UNK]", f"{stats.unknown_count}")
casing = "lower-cased" if result.lowercase else "case kept"
st.caption(f"Casing in force: **{casing}** (tokenizer default: "
           f"{'lower-case' if info.tokenizer_lowercases else 'keep case'}; vocabulary "
           f"{'cased' if info.vocab_cased else 'uncased'}).")

titles = [f"#{i + 1} {token} (id {int(result.input_ids[i + 1])})" for i, token in enumerate(tokens)]
st.html(pieces_html(text, offsets, word_ids, unknown=[t == info.unk_token for t in tokens], title=titles))

st.subheader("Word pieces")
piece_numbers = pieces.piece_numbers
rows = [{"position": i + 1, "token": token, "id": int(result.input_ids[i + 1]),
         "characters": text[int(a):int(b)], "start": int(a), "end": int(b),
         "word": stats.words[int(w)].word, "piece in word": int(piece_numbers[i]) + 1}
        for i, (token, (a, b), w) in enumerate(zip(tokens, offsets.tolist(), word_ids.tolist()))]
if len(rows) > MAX_TABLE_ROWS:
    st.caption(f"Showing the first {MAX_TABLE_ROWS:,} of {len(rows):,} pieces.")
st.dataframe(pd.DataFrame(rows[:MAX_TABLE_ROWS]), hide_index=True, width="stretch", height=320,
             key="piece_table")

left, right = st.columns(2)
with left:
    st.subheader("Words split most")
    split = stats.most_split(15)
    if split:
        st.dataframe(pd.DataFrame([{"word": w.word, "pieces": len(w.pieces), "split": " ".join(w.pieces)}
                                   for w in split]), hide_index=True, width="stretch")
    else:
        st.caption("Every word is a single piece.")
with right:
    st.subheader("Unknown pieces")
    unknown_rows = [{"characters": text[int(a):int(b)], "position": i + 1}
                    for i, (token, (a, b)) in enumerate(zip(tokens, offsets.tolist())) if token == info.unk_token]
    if unknown_rows:
        st.dataframe(pd.DataFrame(unknown_rows), hide_index=True, width="stretch")
    else:
        st.caption("None: the vocabulary covers every character of this note.")

st.subheader("The other casing")
if info.casing_switchable and info.vocab_cased:
    other = compare(text, loaded.tokenizer(result.lowercase), loaded.tokenizer(not result.lowercase))
    other_name = "keeping case" if result.lowercase else "lower-casing"
    st.caption(f"In force: {stats.piece_count} pieces; {other_name}: {other.b_piece_count} pieces. "
               f"{len(other.differing)} of {other.word_count} words are split differently.")
    if other.differing:
        st.dataframe(pd.DataFrame([{"word": word, f"in force ({casing})": " ".join(a), other_name: " ".join(b)}
                                   for word, a, b in other.differing[:300]]), hide_index=True, width="stretch")
elif not info.vocab_cased:
    st.caption("This vocabulary is uncased (no capital letters), so the text is always lower-cased.")
else:
    st.caption("This tokenizer has a single casing.")

st.subheader("Through a second model's tokenizer")
suggestion = "bundled" if info.spec.kind != "bundled" else ""
defaults(tok_second=suggestion)
second = st.text_input("Second model: 'bundled', a local folder or a hub id (a hub id needs the network "
                       "unless it is cached)", key="tok_second", persist_state="session",
                       placeholder=f"e.g. {BIO_CLINICALBERT} or /path/to/model").strip()
if not second:
    st.caption("Name a second model to compare how it splits this note.")
else:
    try:
        other_tokenizer = get_tokenizer(second)
    except CbertError as problem:
        st.warning(str(problem), icon=":material/warning:")
    else:
        versus = compare(text, loaded.tokenizer(result.lowercase), other_tokenizer)
        st.caption(f"{info.name}: {versus.a_piece_count} pieces; {second}: {versus.b_piece_count} pieces; "
                   f"{len(versus.differing)} words split differently.")
        if versus.differing:
            st.dataframe(pd.DataFrame([{"word": word, info.name: " ".join(a), second: " ".join(b)}
                                       for word, a, b in versus.differing[:300]]), hide_index=True,
                         width="stretch")
