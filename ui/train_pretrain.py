"""The Fine-tune page's pretraining stage: continue masked-LM pretraining on notes, watch the held-out
pseudo-perplexity and the note's fill-mask change, save the adapted model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from cbert_core.corpus.collection import collection_from_table
from cbert_core.errors import CbertError
from cbert_core.text.examples import EXAMPLE_COLLECTION, EXAMPLE_NOTES
from cbert_core.text.tokens import mask_positions
from cbert_core.training.loop import random_split
from cbert_core.training.pretrain import PretrainConfig, planned_passes, pretrain
from cbert_core.views.labels import escape
from cbert_core.views.prediction_figures import format_probability, probability_bars
from cbert_core.views.training_figures import loss_figure, perplexity_figure
from ui import state
from ui.caches import computed, estimate_text, speed_book
from ui.context import PageContext
from ui.training_run import (
    KEEP,
    KeptRun,
    LiveLoss,
    common_settings,
    result_header,
    run_stage,
    save_section,
    uploaded_notes,
)
from ui.widgets import note_choice, user_errors

EXAMPLE_TEXTS = tuple(EXAMPLE_NOTES.values()) + tuple(text for text, _label in EXAMPLE_COLLECTION)


def fill_column(filled: object, title: str, key: str) -> None:
    """One side of the before/after comparison: the first masked piece's candidates."""
    if filled is None:
        st.caption(f"{title}: not computed.")
        return
    original = filled.original_probs[0]
    said = f" (the original '{escape(filled.original_tokens[0])}': {format_probability(original)})" if np.isfinite(
        original) else ""
    st.plotly_chart(probability_bars(list(filled.top_tokens[0]), filled.top_probs[0], f"{title}{said}"),
                    key=key, width="stretch")


def pretrain_stage(now: PageContext) -> None:
    """Notes -> continued masked-LM training, live, with a visible held-out split; the checkpoint."""
    loaded, info = now.loaded, now.info
    st.caption("Continue the model's masked-language-model training on your notes (domain adaptation: this is how "
               "Bio_ClinicalBERT was made from BioBERT). Each batch hides new pieces: 15% of them, of which 80% "
               "become [MASK], 10% a random piece and 10% stay as they are; the model learns to restore them.")
    if info.head_kind == "masked-lm":
        st.caption(f"{escape(info.name)} has a masked-LM head: it keeps training its own head.")
    else:
        st.info(f"**{escape(info.name)} has no masked-LM head**, so training adds a new one. Its output layer is "
                "tied to the word embeddings (a piece is scored by how well the predicted vector matches that "
                "piece's own input vector), but the layer before it and the bias start **untrained**: before "
                "training its guesses are noise and its loss starts near ln(vocabulary size). A short run mostly "
                "teaches that new head to read what the encoder already knows; compare the held-out score and "
                "the guesses before and after.", icon=":material/info:")
    source = st.radio("Notes to train on", [f"Example notes ({len(EXAMPLE_TEXTS)} example notes and sentences)",
                                            "Upload a CSV or JSONL of notes"], horizontal=True, key="pt_source", **KEEP)
    with user_errors():
        if source.startswith("Example"):
            texts = EXAMPLE_TEXTS
        else:
            upload, table, text_columns = uploaded_notes("Notes", "pt_upload")
            text_column = st.selectbox("Text column", text_columns, **KEEP, key=note_choice(
                "pt_text_column", upload.digest, text_columns[0], options=text_columns))
            texts = collection_from_table(table, text_column=text_column).texts

    with st.expander("Training settings", expanded=False):
        chosen = common_settings("pt", info, epochs=5, unfreeze=min(2, info.num_layers), batch=16, validation=0.15,
                                 lr_head=5e-4, lr_enc=5e-5, max_length=min(128, info.max_tokens - 2))
        columns = st.columns(3)
        state.defaults(pt_whole_word=False, pt_checks=3, pt_held_pieces=2000)
        whole_word = columns[0].toggle("Whole-word masking", key="pt_whole_word", **KEEP,
                                       help="Hide every piece of a chosen word together (always as [MASK], as "
                                            "transformers does it), so a word cannot be guessed from its own "
                                            "other pieces.")
        checks = columns[1].number_input("Held-out scores during the run", 1, 20, key="pt_checks", **KEEP)
        held_pieces = columns[2].number_input("Held-out pieces scored (0: all)", 0, 1_000_000, step=500,
                                              key="pt_held_pieces", **KEEP,
                                              help="Scoring costs 8 masked copies per window of held-out text; "
                                                   "a cap keeps each score quick.")
    config = PretrainConfig(**chosen, whole_word_mask=bool(whole_word), checks=int(checks),
                            held_out_pieces=int(held_pieces) or None, lowercase=now.plan.lowercase)

    with user_errors():
        train_rows, held_rows = random_split(len(texts), config.validation_fraction, config.seed, "notes")
    with st.expander(f"Held-out notes: {len(held_rows)} of {len(texts)} (scored, never trained on)"):
        st.dataframe(pd.DataFrame({"note": held_rows + 1, "text": [texts[row][:160] for row in held_rows]}),
                     hide_index=True, width="stretch")
    st.caption("Held-out pseudo-perplexity: each held-out piece is hidden (every 8th piece together) and scored in "
               "windows of the training length; exp of minus the mean log-probability. Lower is better; a model "
               "that guessed uniformly over its vocabulary would score its vocabulary size.")

    probe = now.plan
    span = None
    if mask_positions(probe.tokens.ids, probe.mask_id).size == 0:
        words = [probe.text[a:b] for a, b in probe.tokens.word_spans.tolist()]
        names = tuple(f"{word}  (word {i + 1})" for i, word in enumerate(words))
        first = next((i for i, word in enumerate(words) if len(word) > 3), 0)
        choice = st.selectbox("The note has no [MASK]: word to hide for the before/after comparison",
                              range(len(words)), format_func=names.__getitem__, **KEEP,
                              key=note_choice("pt_word", probe.key, first, options=range(len(words))))
        span = tuple(int(v) for v in probe.tokens.word_spans[choice])

    try:
        work = computed(planned_passes, loaded, tuple(texts), config, label="Counting the notes' word pieces",
                        progress=False)
    except CbertError:
        work = None
    if work is not None:
        found = speed_book().estimate_training(info.key, info.hidden_size, work)
        st.caption(f"Trains on {sum(n for _t, n in work.examples):,} examples of up to {config.max_length} pieces "
                   f"({len(train_rows)} notes), scoring the held-out notes {config.checks + 1} times: "
                   f"{estimate_text(found)}.")
    if st.button("Continue pretraining", type="primary", key="go_pretrain"):
        st.caption("Press Stop (top right) or change any input to stop: the model as trained so far is kept.")
        live, run = LiveLoss.drawn(), KeptRun()
        scores_box, fills = st.empty(), st.columns(2)
        before_box, now_box = fills[0].empty(), fills[1].empty()
        scores: list[tuple[int, float]] = []

        def on_check(check: object) -> None:
            scores.append((check.step, check.pseudo_perplexity))
            scores_box.caption("Held-out pseudo-perplexity: " + " → ".join(f"{value:,.1f} (step {step})"
                                                                            for step, value in scores))
            if check.fill is not None:
                with (before_box if check.step == 0 else now_box).container():
                    fill_column(check.fill, "before training" if check.step == 0 else f"after step {check.step}",
                                key=f"pt_live_fill_{check.step}")

        trained = run_stage("pretrain", info, work, live, run, lambda progress: pretrain(
            loaded, texts, config=config, probe=probe, probe_span=span, on_step=run.calls(live.step),
            progress=progress, on_check=run.calls(on_check), cancel=run))
        if not run():
            scores_box.empty()
            before_box.empty()
            now_box.empty()
        st.session_state[state.PT_MODEL] = trained  # this session's own copy; never shared
        run.finish()

    trained = st.session_state.get(state.PT_MODEL)
    if trained is None:
        st.stop()
    outcome = trained.result
    result_header(outcome, kept="(the held-out scores measured until then)")
    first, last = (outcome.checks[0], outcome.checks[-1]) if outcome.checks else (None, None)
    columns = st.columns(4)
    columns[0].metric("Held-out pseudo-perplexity", f"{last.pseudo_perplexity:,.1f}" if last else "n/a",
                      delta=f"{last.pseudo_perplexity - first.pseudo_perplexity:,.1f} since step 0"
                      if last is not None and last is not first else None, delta_color="inverse")
    columns[1].metric("Steps", f"{outcome.steps_done} of {outcome.total_steps}")
    columns[2].metric("Pieces per second (training)", f"{outcome.tokens_per_second:,.0f}")
    columns[3].metric("Time", f"{outcome.seconds:.0f} s")
    if outcome.new_head:
        st.caption("The masked-LM head was new: its 'before' guesses are those of an untrained head.")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(loss_figure(outcome.losses), key="pt_loss", width="stretch")
    with right:
        if outcome.checks:
            st.plotly_chart(perplexity_figure([c.step for c in outcome.checks],
                                              [c.pseudo_perplexity for c in outcome.checks], outcome.checks[0].pieces),
                            key="pt_perplexity", width="stretch")
    st.markdown("**The note's fill-mask before and after**")
    left, right = st.columns(2)
    with left:
        fill_column(outcome.fill_before, "before training", key="pt_fill_before")
    with right:
        fill_column(outcome.fill_after, f"after {outcome.steps_done} steps", key="pt_fill_after")
    save_section(trained, prefix="pt", saved_key=state.PT_SAVED_FOLDER, folder_name="cbert-pretrained",
                 what="a masked-LM config with the decoder tied to the word embeddings")
