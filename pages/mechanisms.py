"""Mechanisms: where the model reads a difference such as negation. Activation patching between a minimal pair,
layer-wise probes, and the heads that carry it, checked by knocking them out."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from cbert_core.analyses import patching, probes
from cbert_core.analyses.counterfactual import apply_edit
from cbert_core.analyses.minimal_pair import edited_copy, negation_flip
from cbert_core.analyses.patching import first_changed_position, pair_effect, patch_pair, top_heads
from cbert_core.analyses.targets import Target, class_target, masked_token_target, similarity_target, token_class_target
from cbert_core.corpus.collection import (
    candidate_label_columns,
    candidate_text_columns,
    collection_from_table,
    collection_from_texts,
    column_values,
    read_table,
)
from cbert_core.errors import CbertError
from cbert_core.run.forward import DEFAULT_INFERENCE_MEMORY
from cbert_core.text.examples import EXAMPLE_COLLECTION, EXAMPLE_COLLECTION_FINDINGS
from cbert_core.views.labels import escape, head_name, layer_name, position_labels
from cbert_core.views.mechanism_figures import head_patch_figure, position_patch_figure, probe_figure
from ui import state
from ui.caches import computed, estimate, get_collection_plans, is_computed
from ui.context import page
from ui.target_choice import masked_word_choice
from ui.widgets import ask_once, kept_upload, knockout_picker, note_choice, user_errors

SCAN_NAMES = {"residual": "Residual stream (each layer's input)", "attention": "Attention block output",
              "ffn": "Feed-forward output", "heads": "Each head's output (all positions)",
              "heads_at": "Each head's output at one position"}
DIRECTIONS = {"denoising": "Denoising: clean activations into the edited run",
              "noising": "Noising: edited activations into the clean run"}
POOLING_NAMES = {"cls": "[CLS] position", "mean": "mean of the note's pieces", "phrase": "target phrase's pieces"}
CLICKS = "mech_click_round"  # bumped after a heatmap click opens another page: the charts come back unselected

st.title("Mechanisms")
st.caption("Attention maps and attributions show correlations. Here the model is intervened on: activations from the "
           "note are patched into a run of an edited copy (or the reverse) to find which layers, positions and heads "
           "carry the difference, linear probes ask at which layer a label can be read, and knocking out the heads "
           "that carry it checks the claim.")
now = page()
loaded, info, settings, result = now.loaded, now.info, now.settings, now.trace
knocked = knockout_picker(info)
precision = settings.options.precision
note = settings.note

# ---------------------------------------------------------------- the pair
st.header("1 · A minimal pair")
st.caption("The note as it is (\"clean\") and a copy with one change (\"edited\"). The default flips the first "
           "negation cue: 'denies' becomes 'reports', 'no' is removed.")
mode = st.radio("Make the edited copy by", ["replacing a word", "typing it"], horizontal=True, key="mech_mode",
                persist_state="session")
flip = negation_flip(note)
spans = result.word_spans
words = [note[a:b] for a, b in spans.tolist()]
with user_errors():
    if mode == "replacing a word":
        word_names = tuple(f"{word} (word {i + 1})" for i, word in enumerate(words))
        first = next((i for i, (a, b) in enumerate(spans.tolist()) if flip is not None and a <= flip.start < b), 0)
        columns = st.columns(2)
        chosen = columns[0].selectbox("Word to replace", range(len(words)), format_func=word_names.__getitem__,
                                      key=note_choice("q_mech_word", result.key, first, options=range(len(words))),
                                      persist_state="session")
        start, end = (int(v) for v in spans[chosen])
        suggested = flip.replacement if flip is not None and start <= flip.start < end else ""
        replacement = columns[1].text_input("Replace with (empty: remove it)", persist_state="session",
                                            key=note_choice("q_mech_with", (result.key, chosen), suggested))
        corrupted = apply_edit(note, start, end, replacement)
    else:
        typed_default = edited_copy(note, flip) if flip is not None else note
        corrupted = st.text_area("Edited copy", height=140, persist_state="session",
                                 key=note_choice("q_mech_typed", result.key, typed_default))


def masked_word_target() -> Target:
    mask_index, word = masked_word_choice(
        now, result.mask_positions, result.key, mask_key="q_mech_mask", word_key="q_mech_target",
        word_label="Target: the log-probability of",
        needs_mask="Patching a masked-word prediction needs a [MASK] in the note: type [MASK] where a word should "
                   "go (for example 'Acute [MASK] exacerbation').")
    return masked_token_target(loaded, word, mask_index=mask_index, lowercase=now.plan.lowercase)


def word_label_target() -> Target:
    columns = st.columns(2)
    word_names = tuple(f"{word} (word {i + 1})" for i, word in enumerate(words))
    word_index = columns[0].selectbox("Word whose label is the target", range(len(words)),
                                      format_func=word_names.__getitem__, persist_state="session",
                                      key=note_choice("q_mech_tokword", result.key, 0, options=range(len(words))))
    label = columns[1].selectbox("Label", list(info.labels), key="mech_token_label", persist_state="session")
    return token_class_target(loaded, int(spans[word_index][0]), label)


def class_choice() -> Target:
    return class_target(loaded, st.selectbox("Target: the log-probability of the class", list(info.labels),
                                             key="mech_class", persist_state="session"))


def description_choice() -> Target:
    descriptions = [line.strip() for line in st.session_state.get(
        state.DESCRIPTIONS, state.DEFAULT_DESCRIPTIONS).splitlines() if line.strip()]
    description = st.selectbox("Target: the embedding similarity to", descriptions, key="mech_description",
                               persist_state="session", help="Edit the descriptions on the Predictions page.")
    return similarity_target(loaded, description, lowercase=now.plan.lowercase)


TARGET_CHOICES = {"masked-lm": masked_word_target, "token-classification": word_label_target,
                  "sequence-classification": class_choice, "encoder": description_choice}
with user_errors():
    target = TARGET_CHOICES[info.head_kind]()
    effect = computed(pair_effect, loaded, now.plan, corrupted, target, label="Running both versions",
                      progress=False)
pair = effect.pair
columns = st.columns(3)
columns[0].metric(f"Clean: {target.score_name}", f"{effect.clean_score:.4f}")
columns[1].metric(f"Edited: {target.score_name}", f"{effect.corrupted_score:.4f}")
columns[2].metric("Difference (clean - edited)", f"{effect.difference:+.4f}")
labels = position_labels(pair.clean_tokens, range(pair.positions))
if pair.window_count > 1:
    st.info(f"The note is longer than the {info.max_tokens} positions the model reads at once: patching runs in "
            f"window {pair.window.index + 1} of {pair.window_count} (pieces {pair.window.start + 1:,}–"
            f"{pair.window.stop:,}), the one that holds the edit, exactly as the other pages read it.",
            icon=":material/info:")
if not pair.one_to_one:
    lonely = ", ".join(f"'{escape(pair.clean_tokens[p])}'" for p in pair.unpartnered) or "none"
    extra = ", ".join(f"'{escape(pair.corrupted_tokens[p])}'" for p in pair.corrupted_only) or "none"
    st.caption(f"The versions differ in length. Aligned by word; without a partner, and so never patched (grey "
               f"below): in the note {lonely}; only in the edited copy {extra}.")

# ---------------------------------------------------------------- patching
st.header("2 · Activation patching")
with st.expander("What the scans measure", expanded=False):
    st.markdown("Each scan reruns one version with one site taken from the other version and records the target. "
                "The colour is the **share of the difference** the patch moves: 0 = nothing, 1 = all of it "
                "(patching a layer's whole residual stream always gives 1). *Denoising* asks which sites suffice "
                "to bring the clean reading back; *noising* which sites the reading needs. Hover a cell for the raw "
                "target value.")
state.defaults(mech_scans=["residual", "attention", "ffn", "heads"], mech_memory=1.0, mech_top_k=3)
columns = st.columns([2, 3])
direction = columns[0].radio("Direction", list(DIRECTIONS), format_func=DIRECTIONS.__getitem__, key="mech_direction",
                             persist_state="session")
scans = columns[1].multiselect("Scans", list(SCAN_NAMES), format_func=SCAN_NAMES.__getitem__, key="mech_scans",
                               persist_state="session")
position = None
if "heads_at" in scans:
    partnered = [p for p in range(pair.positions) if pair.partner[p] >= 0]
    position = st.selectbox("Position for the per-head scan", partnered, format_func=labels.__getitem__,
                            persist_state="session",
                            key=note_choice("q_mech_position", (result.key, pair.corrupted_text),
                                            first_changed_position(pair), options=partnered))
memory = st.number_input("Memory bound (GB)", 0.05, 8.0, step=0.25, key="mech_memory", persist_state="session",
                         help="The patched runs go through the model in batches sized to stay under this bound.")
arguments = dict(direction=direction, scans=tuple(scans), position=position,
                 memory_limit=int(float(memory) * 2**30) if memory else DEFAULT_INFERENCE_MEMORY)
work = patching.planned_passes(info.num_layers, info.num_heads, pair.positions, scans)
ready = is_computed(patch_pair, loaded, now.plan, corrupted, target, **arguments)
patched = None
if scans and ask_once("Run the scans", key="go_patch", ready=ready, primary=True,
                      help=f"{work.rows:,} full passes' worth of {pair.positions} positions: "
                           f"{estimate(loaded, precision, work)}."):
    with user_errors():
        patched = computed(patch_pair, loaded, now.plan, corrupted, target, label="Patching", passes=work,
                           **arguments)
elif not scans:
    st.info("Choose at least one scan.", icon=":material/info:")


def open_from(event: object, opener: dict[int, tuple[str, object]]) -> None:
    """A click on a cell: open that layer or head on its page (the charts come back unselected afterwards)."""
    points = event.selection.points if event and event.selection else []
    if not points or int(points[0].get("curve_number", 0)) != 0:
        return
    where, value = opener[int(points[0]["point_index"])]
    st.session_state[CLICKS] = st.session_state.get(CLICKS, 0) + 1
    if where == "head":
        st.session_state[state.OPEN_HEAD] = value
        st.switch_page("pages/attention.py")
    st.session_state[state.OPEN_INSIDE_LAYER] = value
    st.switch_page("pages/inside.py")


carriers: list[tuple[int, int, float]] = []
if patched is not None:
    round_ = st.session_state.get(CLICKS, 0)
    what = "restored" if direction == "denoising" else "carried over"
    st.caption(f"{patched.patched_runs:,} patched runs in {patched.seconds:.1f} s (batches of up to "
               f"{patched.batch_rows}). Base: {patched.base_score:.4f}, source: {patched.source_score:.4f}. "
               "Click a cell to open that layer on *Inside the model*, or that head on *Attention*.")
    carriers = top_heads(patched, int(st.session_state["mech_top_k"])) if patched.scan("heads") else []
    for scan in patched.scans:
        title = f"{SCAN_NAMES[scan.name]}: share of the difference {what}"
        key = f"mech_chart_{scan.name}_{round_}"
        if scan.name in patching.HEAD_SCANS:
            if scan.name == "heads_at":
                title += f" at {labels[patched.position]}"
            marked = [(a, b) for a, b, _share in carriers] if scan.name == "heads" else []
            figure = head_patch_figure(scan.share, scan.scores, escape(title), marked)
            opener = {layer * info.num_heads + head: ("head", (layer + 1, head + 1))
                      for layer in range(info.num_layers) for head in range(info.num_heads)}
        else:
            rows = ([f"before layer {layer + 1}" for layer in range(info.num_layers)] if scan.name == "residual"
                    else [layer_name(layer + 1) for layer in range(info.num_layers)])
            figure = position_patch_figure(scan.share, scan.scores, labels, rows, escape(title))
            opener = {layer * pair.positions + p: ("layer", layer + 1)
                      for layer in range(info.num_layers) for p in range(pair.positions)}
        event = st.plotly_chart(figure, on_select="rerun", selection_mode="points", key=key, width="stretch")
        open_from(event, opener)

# ---------------------------------------------------------------- heads that carry it
st.header("3 · Heads that carry it")
if not carriers:
    st.caption("Run the scan of each head's output (all positions) above: the heads whose patch moves the most of "
               "the difference are listed here, and knocking them out checks the claim.")
else:
    st.slider("How many heads", 1, min(12, info.num_layers * info.num_heads), key="mech_top_k",
              persist_state="session")
    names = [head_name(a, b) for a, b, _share in carriers]
    st.dataframe(pd.DataFrame({"head": names, "share of the difference": [share for _a, _b, share in carriers]}),
                 hide_index=True)

    def knock_out_carriers(chosen: list[str]) -> None:
        st.session_state[state.KO_HEADS] = sorted(set(st.session_state.get(state.KO_HEADS, [])) | set(chosen))

    st.button(f"Knock out {', '.join(names)}", on_click=knock_out_carriers, args=(names,), key="mech_knock",
              icon=":material/block:", help="Adds them to the head knockout at the top of the page (shared with "
                                            "Predictions and Attribution); the pair is then run again without them.")
if knocked:
    with user_errors():
        without = computed(pair_effect, loaded, now.with_heads_out(knocked), corrupted, target,
                           label="Running the pair without the knocked-out heads", progress=False)
    out_names = ", ".join(head_name(a, b) for a, b in sorted(knocked))
    drop = 1 - without.difference / effect.difference if effect.difference else 0.0
    st.markdown(f"**Without {out_names}**")
    columns = st.columns(3)
    columns[0].metric(f"Clean: {target.score_name}", f"{without.clean_score:.4f}",
                      f"{without.clean_score - effect.clean_score:+.4f}")
    columns[1].metric(f"Edited: {target.score_name}", f"{without.corrupted_score:.4f}",
                      f"{without.corrupted_score - effect.corrupted_score:+.4f}")
    columns[2].metric("Difference (clean - edited)", f"{without.difference:+.4f}", f"{-drop:+.0%} of it",
                      delta_color="off")
    st.caption(f"With these heads switched off, the difference the edit makes is {1 - drop:.0%} of what it was: "
               + ("they carry much of it." if drop >= 0.5 else "most of it travels by other routes.")
               + " The probe below can be run again without them too.")

# ---------------------------------------------------------------- probes
st.header("4 · Probes: at which layer can the label be read?")
st.caption("A logistic regression per layer reads the label from the model's vectors (cross-validated). The control "
           "task gives each target phrase a random label (or shuffles the labels without phrases): a probe that "
           "only memorises words scores as well there. Selectivity = probe - control.")
source = st.radio("Labelled sentences", ["Example set (30 negated or affirmed sentences)", "Upload CSV or JSONL"],
                  horizontal=True, key="mech_probe_source", persist_state="session")
with user_errors():
    if source.startswith("Example"):
        texts, probe_labels = zip(*EXAMPLE_COLLECTION)
        collection = collection_from_texts(list(texts), labels=list(probe_labels))
        phrases: tuple[str, ...] | None = EXAMPLE_COLLECTION_FINDINGS
    else:
        upload = kept_upload("Labelled notes (a text column, a label column and optionally a target phrase column, "
                             "as NegEx's Condition)", types=["csv", "tsv", "txt", "jsonl", "json"], key="mech_upload")
        if upload is None:
            st.stop()
        table = read_table(upload.data, name=upload.name)
        text_columns = candidate_text_columns(table)
        label_options = candidate_label_columns(table)
        if not text_columns or not label_options:
            raise CbertError(f"{upload.name} needs a column of text and a column of labels; its columns are: "
                             f"{', '.join(map(str, table.frame.columns))}.")
        columns = st.columns(3)
        text_column = columns[0].selectbox("Text column", text_columns, persist_state="session", key=note_choice(
            "mech_text_column", upload.digest, text_columns[0], options=text_columns))
        label_column = columns[1].selectbox("Label column", label_options, persist_state="session", key=note_choice(
            "mech_label_column", upload.digest, label_options[0], options=label_options))
        phrase_options = ["(none)", *table.columns]
        phrase_column = columns[2].selectbox("Target phrase column (optional)", phrase_options,
                                             persist_state="session",
                                             key=note_choice("mech_phrase_column", upload.digest, "(none)",
                                                             options=phrase_options))
        collection = collection_from_table(table, text_column=text_column, label_column=label_column)
        phrases = None if phrase_column == "(none)" else column_values(table, collection, phrase_column)
        for warning in collection.warnings:
            st.caption(warning)
poolings = list(POOLING_NAMES) if phrases is not None else ["cls", "mean"]
columns = st.columns([2, 1, 2])
pooling = columns[0].radio("Read the vector at", poolings, format_func=POOLING_NAMES.__getitem__, horizontal=True,
                           key="mech_pooling", persist_state="session")
state.defaults(mech_folds=5)
folds = columns[1].number_input("Folds", 2, 10, key="mech_folds", persist_state="session")
also_knocked = columns[2].toggle("Also without the knocked-out heads", key="mech_probe_knocked", disabled=not knocked,
                                 persist_state="session", help="Probe a second time with the heads of the knockout at "
                                                               "the top of the page switched off.")
with user_errors():
    plans = get_collection_plans(loaded, collection.texts, settings.options)
probe_arguments = dict(labels=collection.labels, pooling=pooling, phrases=phrases, folds=int(folds))
probe_work = probes.planned_passes(plans, pooling)
versions = [("intact", plans)]
if knocked and also_knocked:
    versions.append((f"without {len(knocked)} heads", tuple(plan.with_options(knocked_out=knocked) for plan in plans)))
probe_ready = all(is_computed(probes.run_probes, loaded, chosen, **probe_arguments) for _name, chosen in versions)
st.caption(f"{len(collection):,} notes, labels: {', '.join(collection.label_names)}.")
if ask_once("Run the probes", key="go_probe", ready=probe_ready,
            help=f"One pass per note for all layers: {estimate(loaded, precision, probe_work)}, then "
                 f"{info.num_layers + 1} x {int(folds)} x 2 logistic regressions."):
    found = {}
    with user_errors():
        for name, chosen in versions:
            found[name] = computed(probes.run_probes, loaded, chosen, label=f"Probing ({name})", passes=probe_work,
                                   **probe_arguments)
    probed = found["intact"]
    if probed.dropped:
        st.warning(f"{probed.dropped:,} notes do not contain their target phrase and were left out.",
                   icon=":material/warning:")
    layer_labels = [layer_name(layer) for layer in range(info.num_layers + 1)]
    other = next(((name, value) for name, value in found.items() if name != "intact"), None)
    st.plotly_chart(probe_figure(probed.accuracy, probed.control, layer_labels,
                                 f"{escape(' vs '.join(probed.label_names))} read at the "
                                 f"{POOLING_NAMES[probed.pooling]}", majority=probed.majority,
                                 compare=None if other is None else (other[1].accuracy, other[1].control),
                                 compare_name="" if other is None else other[0]),
                    key="mech_probe_chart", width="stretch")
    best = probed.best_layer
    st.markdown(f"Most selective at **{layer_labels[best]}**: accuracy {probed.accuracy[best].mean():.0%} "
                f"± {probed.accuracy[best].std():.0%} over {probed.accuracy.shape[1]} folds, control "
                f"{probed.control[best].mean():.0%}, selectivity {probed.selectivity[best]:+.0%} "
                f"({probed.examples:,} notes; always the commonest label: {probed.majority:.0%}).")
    if probed.selectivity[best] <= 0.05:
        st.caption("No layer reads the label clearly better than the control task: at these vectors the label is "
                   "not linearly readable beyond what the words themselves give away (or the set is too small).")
    if other is not None:
        drop = probed.selectivity[best] - other[1].selectivity[best]
        st.caption(f"Without the knocked-out heads, selectivity at {layer_labels[best]} is "
                   f"{other[1].selectivity[best]:+.0%} ({-drop:+.0%}).")
