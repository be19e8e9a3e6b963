"""The session-state keys shared between the sidebar, the pages and the widgets, in one place.

A page's own widget keys (``att_layer``, ``attr_methods``, ...) live in that page; the keys here
are the ones several modules read or write. Widgets that keep their value across page switches
are drawn with ``persist_state="session"`` (Streamlit keeps the value while the page is not shown);
their first value comes from :func:`defaults`.

Light on purpose: the entry script imports it before torch (a fast first paint).
"""

from __future__ import annotations

from typing import Any

import streamlit as st

# The note and where it came from.
NOTE_TEXT = "note_text"
EXAMPLE_CHOICE = "example_choice"
NOTE_UPLOAD = "note_upload"
UPLOAD_ERROR = "upload_error"
PENDING_NOTE = "pending_note"  # a note opened from another page (Corpus), put in the box on the next run

# The model and the run options.
MODEL_CHOICE = "model_choice"
MODEL_CUSTOM = "model_custom"
PENDING_MODEL = "pending_model"  # a model chosen on another page (Fine-tune), put in the sidebar on the next run
KEEP_CASE = "keep_case"
OVERLAP = "overlap"
PRECISION = "precision"
MAX_CHARS = "max_chars"

# Heads knocked out (Predictions and Attribution share them).
KO_HEADS = "ko_heads"
KO_LAYERS = "ko_layers"
KO_PENDING = "ko_pending"  # a head clicked in the importance scan, added on the next run
KO_RELEASE = "ko_release"  # a crossed-out head clicked in the scan, removed on the next run

# Zero-shot label descriptions (written on Predictions, read by Attribution).
DESCRIPTIONS = "pred_descriptions"
DEFAULT_DESCRIPTIONS = "pneumonia present\nno evidence of pneumonia"

# Per-note choices (a word, a token, a part of the note): {widget key: scope it belongs to}.
NOTE_CHOICE_SCOPES = "note_choice_scopes"

# Evaluate: the evaluation asked for (Cancel forgets it), the row last opened from its errors or behaviour
# tables (to find the same place on return), and what the Attribution page opens with.
EVAL_RUN = "eval_run"
EVAL_OPENED = "eval_opened"  # {"table": ..., "filter": ..., "unit": ...} of the row opened last
EVAL_RETURN = "eval_return"  # Attribution was opened from Evaluate: it shows a way back
ATTR_PENDING = "attr_pending"  # {"class": label or description, "word": char, "cf": (start, end, replacement)}
ATTR_TARGET_KIND = "attr_target_kind"  # a masked-LM explains a masked word or a similarity to a description

# Opened from another page (the Attention grid, a Mechanisms heatmap), shown on that page's next run.
OPEN_HEAD = "pending_head"  # (layer, head), 1-based: the head the Attention page shows
OPEN_INSIDE_LAYER = "pending_inside_layer"  # 1-based: the layer "Inside the model" shows

# Fine-tuning: this session's own trained copy and where it was saved.
FT_MODEL = "ft_model"
FT_SAVED_FOLDER = "ft_saved_folder"
# The other training stages (continued pretraining, word tagger): the same, one pair each.
PT_MODEL = "pt_model"
PT_SAVED_FOLDER = "pt_saved_folder"
TG_MODEL = "tg_model"
TG_SAVED_FOLDER = "tg_saved_folder"


def defaults(**values: Any) -> None:
    """First values of widgets drawn without ``value=`` (their value then comes from session state only;
    passing a default as well makes Streamlit warn on every run)."""
    for key, value in values.items():
        st.session_state.setdefault(key, value)
