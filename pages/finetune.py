"""Fine-tune: the training stages of a clinical BERT, live: classify notes, continue pretraining, tag words."""

from __future__ import annotations

import streamlit as st

from ui.context import page
from ui.train_classify import classify_stage
from ui.train_pretrain import pretrain_stage
from ui.train_tagger import tagger_stage

STAGES = {"Classify notes": classify_stage, "Continue pretraining": pretrain_stage, "Tag words": tagger_stage}

st.title("Fine-tune")
st.caption("The stages that make a clinical model: continued masked-LM pretraining on notes (domain adaptation), "
           "then a task head, for a note (a class) or for every word (a tagger). The model shared with other users "
           "is never changed: training works on a copy, saved as a new checkpoint folder only when you say so.")
now = page()
stage = st.radio("Stage", list(STAGES), horizontal=True, key="ft_stage", persist_state="session",
                 help="Classify notes: a label per note. Continue pretraining: the masked-LM objective on your notes. "
                      "Tag words: a label per word from span annotations.")
STAGES[stage](now)
