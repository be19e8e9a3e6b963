"""Choosing what an explanation or a patching scan reads, where two pages ask the same question."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import streamlit as st

from cbert_core.analyses.predict import fill_mask
from ui.caches import computed
from ui.context import PageContext
from ui.widgets import note_choice


def masked_word_choice(now: PageContext, mask_positions: Sequence[int], scope: Hashable, *, mask_key: str,
                       word_key: str, word_label: str, needs_mask: str) -> tuple[int, str]:
    """(which [MASK], which word): one of the note's [MASK]s and one of the model's top words there.

    The choices belong to the note (``scope``): kept while it stays, reset for another note. Without a
    [MASK] the page says ``needs_mask`` and stops.
    """
    if len(mask_positions) == 0:
        st.info(needs_mask, icon=":material/info:")
        st.stop()
    columns = st.columns(2)
    mask_names = tuple(f"[MASK] {i + 1}" for i in range(len(mask_positions)))
    mask_index = columns[0].selectbox("Which [MASK]", range(len(mask_names)), format_func=mask_names.__getitem__,
                                      key=note_choice(mask_key, scope, 0, options=range(len(mask_names))),
                                      persist_state="session")
    filled = computed(fill_mask, now.loaded, now.plan, label="Filling in", progress=False)
    candidates = list(filled.top_tokens[mask_index])
    word = columns[1].selectbox(word_label, candidates, persist_state="session",
                                key=note_choice(word_key, (scope, mask_index), candidates[0], options=candidates))
    return mask_index, word
