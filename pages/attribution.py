"""Attribution: why the model predicts what it does, over the whole note and by word, sentence or section;
which explanation to trust (faithfulness, agreement), layer conductance, head importance, counterfactual edits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from cbert_core.analyses import faithfulness as faith
from cbert_core.analyses import knockout_scan
from cbert_core.analyses import layer_conductance as conductance
from cbert_core.analyses.agreement import holds_up, method_agreement
from cbert_core.analyses.attribution import METHODS as WINDOW_METHODS
from cbert_core.analyses.attribution import planned_passes as window_passes
from cbert_core.analyses.attribution_groups import GROUPINGS, group_scores, note_groups, shares
from cbert_core.analyses.counterfactual import counterfactual
from cbert_core.analyses.targets import Target, class_target, masked_token_target, similarity_target, token_class_target
from cbert_core.analyses.whole_note import METHOD_SPECS, NoteAttribution, explain
from cbert_core.analyses.whole_note import planned_passes as note_passes
from cbert_core.model.precision import bf16_is_fast
from cbert_core.run.plan import NotePlan
from cbert_core.serving.speed import Passes
from cbert_core.views.attribution_figures import (
    agreement_figure,
    group_bar_figure,
    head_scan_figure,
    layer_group_figure,
)
from cbert_core.views.labels import escape, head_name
from cbert_core.views.text_html import scores_html
from ui import state
from ui.attribution_text import (
    GROUP_NOUNS,
    GROUP_PLURALS,
    METHOD_CHOICES,
    METHOD_HELP,
    completeness_text,
    method_name,
    scope_text,
    verdict_text,
)
from ui.caches import computed, estimate, is_computed
from ui.context import page
from ui.target_choice import masked_word_choice
from ui.widgets import ask_once, knockout_picker, note_choice, note_part_picker, user_errors

BASELINE_NAMES = {"pad": "[PAD] (keeps [CLS]/[SEP])", "mask": "[MASK]"}
OUR_METHODS = ["integrated-gradients", "gradient-x-input", "saliency", "occlusion"]
SCOPES = {"note": "The whole note (every window)", "part": "One part of the note"}
EXPLAINED = "attr_explained_request"  # the explanation the user asked for; knockout changes recompute it
BAR_GROUPS = 40  # the section bar is drawn for at most this many groups

st.title("Attribution")
st.caption("Which words, sentences or sections pushed the prediction up (red) or down (blue)? Several methods "
           "answer differently; the faithfulness and agreement below say which explanation holds up on this note.")
now = page()
loaded, info, settings, result = now.loaded, now.info, now.settings, now.trace
if st.session_state.get(state.EVAL_RETURN):
    st.page_link("pages/evaluate.py", label="Back to the Evaluate page, where this note was opened",
                 icon=":material/arrow_back:")
knocked = knockout_picker(info)
precision = settings.options.precision


def word_at(char: int) -> int:
    """The word of the note that holds character ``char`` (or the last one before it)."""
    return max(0, int(np.searchsorted(result.word_spans[:, 0], char, side="right")) - 1)


# A row opened from the Evaluate page: explain its predicted class, with its edit as the counterfactual.
pending = st.session_state.pop(state.ATTR_PENDING, None)
if pending is not None:
    if pending.get("zero_shot"):
        st.session_state["attr_description"] = pending["class"]
        st.session_state[state.ATTR_TARGET_KIND] = "similarity"
    elif info.head_kind == "token-classification":
        st.session_state["attr_token_label"] = pending["class"]
        if pending.get("word") is not None:
            spans = result.word_spans
            st.session_state[note_choice("q_tokword", result.key, 0, options=range(len(spans)))] = \
                word_at(pending["word"])
    else:
        st.session_state["attr_class"] = pending["class"]
    if pending.get("cf") is not None:  # the edit, when it replaces one of the words this page offers
        start, end, replacement = pending["cf"]
        word = word_at(start)
        if tuple(int(v) for v in result.word_spans[word]) == (start, end):
            st.session_state[note_choice("q_cf", result.key, 0, options=range(len(result.word_spans)))] = word
            st.session_state["attr_cf_with"] = replacement

# ---------------------------------------------------------------- the target


def masked_word_target() -> tuple[Target, int | None, int | None]:
    """A masked-LM explains the probability of a word at one of the note's [MASK]s, in that mask's window."""
    masks = result.mask_positions
    mask_index, word = masked_word_choice(
        now, masks, result.key, mask_key="q_mask", word_key="q_target", word_label="Explain the probability of",
        needs_mask="Explaining a masked-word prediction needs a [MASK] in the note. Type [MASK] where a word "
                   "should go (see the Predictions page).")
    target = masked_token_target(loaded, word, mask_index=mask_index, lowercase=now.plan.lowercase)
    owner = int(result.owner[int(masks[mask_index])])
    return target, owner, owner


def word_label_target() -> tuple[Target, int | None, int | None]:
    """A token classifier explains one label at one word, in the window that owns the word."""
    spans = result.word_spans
    columns = st.columns(2)
    span_words = tuple(settings.note[a:b] for a, b in spans.tolist())
    word_index = columns[0].selectbox("Word", range(len(spans)), format_func=span_words.__getitem__,
                                      key=note_choice("q_tokword", result.key, 0, options=range(len(spans))),
                                      persist_state="session")
    label = columns[1].selectbox("Label", list(info.labels), key="attr_token_label", persist_state="session")
    first_piece = int(np.flatnonzero(result.word_ids == word_index)[0])
    owner = int(result.owner[first_piece])
    return token_class_target(loaded, int(spans[word_index][0]), label), owner, owner


def note_level_target(target: Target) -> tuple[Target, int | None, int | None]:
    """A class or a similarity depends on all the model reads: a long note is explained over every window, or
    one part of it. Returns the target, the window explained (None: every window) and the window the head scan
    and the counterfactual edit run on."""
    if len(result.windows) == 1:
        return target, None, None
    scope = st.radio("Explain", list(SCOPES), format_func=SCOPES.__getitem__, key="attr_scope", horizontal=True,
                     persist_state="session",
                     help="The whole note: every window is explained with the others as the model read them, and "
                          "the score explained is the whole note's. One part: one window's own prediction.")
    part = note_part_picker(result, info, "q_attr_part",
                            "Part of the note to explain" if scope == "part" else
                            "Part of the note for the head scan and the edit below")
    what = "prediction" if target.kind == "class" else "similarity"
    if scope == "part":
        st.caption(f"This note is longer than the {info.max_tokens} positions the model reads at once, and a "
                   f"{'class' if target.kind == 'class' else 'similarity'} depends on everything the model reads: "
                   f"the explanation is of window {part.window + 1}'s own {what}, as the model computes it from "
                   "that window.")
        return target, part.window, part.window
    return target, None, part.window


def class_choice() -> tuple[Target, int | None, int | None]:
    label = st.selectbox("Explain the class", list(info.labels), key="attr_class", persist_state="session")
    return note_level_target(class_target(loaded, label))


def description_choice() -> tuple[Target, int | None, int | None]:
    descriptions = [line.strip() for line in st.session_state.get(
        state.DESCRIPTIONS, state.DEFAULT_DESCRIPTIONS).splitlines() if line.strip()]
    description = st.selectbox("Explain the embedding similarity to", descriptions, key="attr_description",
                               help="Edit the descriptions on the Predictions page.", persist_state="session")
    return note_level_target(similarity_target(loaded, description, lowercase=now.plan.lowercase))


def masked_lm_choice() -> tuple[Target, int | None]:
    """A masked-LM explains a masked word, or (as the Evaluate page's zero-shot predictions) a similarity."""
    kinds = {"masked word": "a masked word's probability", "similarity": "similarity to a label description"}
    kind = st.radio("Explain", list(kinds), format_func=kinds.__getitem__, horizontal=True,
                    key=state.ATTR_TARGET_KIND, persist_state="session")
    return masked_word_target() if kind == "masked word" else description_choice()


TARGET_CHOICES = {"masked-lm": masked_lm_choice, "token-classification": word_label_target,
                  "sequence-classification": class_choice, "encoder": description_choice}
with user_errors():
    target, window, one_window = TARGET_CHOICES[info.head_kind]()
whole_note = window is None and len(result.windows) > 1 and not target.positional
explained_windows = result.windows if whole_note else (result.windows[window if window is not None else 0],)
# The head scan and the counterfactual edit run on one window: the explained one, or the part picked for them.
explained_span = result.windows[one_window if one_window is not None else 0]
positions = explained_span.size + 2
window_words = len(np.unique(result.word_ids[explained_span.start + 1:explained_span.stop + 1]))

with st.expander("Methods and settings", expanded=False):
    state.defaults(attr_methods=list(OUR_METHODS), attr_steps=50, attr_memory=1.5, attr_grouping="word",
                   attr_samples=16, attr_noise=0.1)
    grouping = st.selectbox("Score by", GROUPINGS, key="attr_grouping", persist_state="session",
                            format_func=GROUP_PLURALS.__getitem__,
                            help="Scores are summed over each group. The leave-one-out, Shapley, KernelSHAP and LIME "
                                 "methods remove whole groups: one section is one run of the model.")
    groups = computed(note_groups, now.plan, grouping, label="Grouping the note", progress=False)
    names = {method: method_name(method, groups.grouping) for method in METHOD_SPECS}
    methods = st.multiselect("Methods", list(METHOD_SPECS), key="attr_methods", persist_state="session",
                             format_func=METHOD_CHOICES.__getitem__, help=METHOD_HELP)
    columns = st.columns(3)
    baseline = columns[0].radio("Baseline (\"no information\")", ["pad", "mask"], key="attr_baseline",
                                format_func=BASELINE_NAMES.__getitem__, persist_state="session")
    steps = columns[1].number_input("Integrated Gradients steps", 10, 300, step=10, key="attr_steps",
                                    persist_state="session")
    memory = columns[2].number_input("Memory bound (GB)", 0.05, 8.0, step=0.25, key="attr_memory",
                                     persist_state="session",
                                     help="A method that would need more refuses with a message instead of "
                                          "exhausting the server's memory. Batches are sized to fit it.")
    columns = st.columns(2)
    samples = columns[0].number_input("Samples (NoiseTunnel, GradientShap, Shapley, KernelSHAP, LIME)", 2, 200,
                                      step=2, key="attr_samples", persist_state="session")
    noise = columns[1].number_input("Noise (share of the word vectors' spread)", 0.01, 1.0, step=0.05,
                                    key="attr_noise", persist_state="session")
    early = st.toggle("Stop Integrated Gradients early when it has converged", key="attr_early",
                      persist_state="session",
                      help="Integrates with 16 Gauss-Legendre points first and keeps that result when its "
                           "convergence delta is under 1 % of the score difference (often about 3x faster); "
                           "otherwise runs the full number of steps.")
tolerance = 0.01 if early else None
memory_bytes = int(float(memory) * 2**30)
versions = [("intact model", now.plan)] + ([("heads knocked out", now.with_heads_out(knocked))] if knocked else [])
if groups.fell_back:
    st.info("This note has no section headers (a title followed by a colon, such as “ASSESSMENT:”), so it is "
            "scored by sentence instead.", icon=":material/info:")
noun, plural = GROUP_NOUNS[groups.grouping], GROUP_PLURALS[groups.grouping]
SETTINGS = {"steps": int(steps), "tolerance": tolerance, "samples": int(samples), "noise": float(noise),
            "grouping": grouping}


def method_arguments(method: str) -> dict:
    """The arguments of one method's explanation: the shared ones, and those the method uses (its cache key
    then changes only with what changes its result)."""
    arguments = dict(method=method, baseline=baseline, memory_limit=memory_bytes, window=window)
    arguments.update({name: value for name, value in SETTINGS.items() if name in METHOD_SPECS[method].uses})
    return arguments


def method_passes(method: str) -> Passes:
    return note_passes(method, tuple(w.size + 2 for w in explained_windows), len(groups), steps=int(steps),
                       tolerance=tolerance, samples=int(samples))


def run_method(method: str, plan: NotePlan) -> NoteAttribution:
    return computed(explain, loaded, plan, target, label=names[method], passes=method_passes(method),
                    **method_arguments(method))


# ---------------------------------------------------------------- attributions
st.subheader("Explanations")
request = (result.key, target, window)
missing = [(m, label, plan) for m in methods for label, plan in versions
           if not is_computed(explain, loaded, plan, target, **method_arguments(m))]
if methods and not missing:  # shown at once (computed earlier on this server): the user sees them as asked for
    st.session_state[EXPLAINED] = request
explained = st.session_state.get(EXPLAINED) == request
if not methods:
    st.info("Choose at least one method under Methods and settings.", icon=":material/info:")
elif missing and not explained:
    work = sum((method_passes(m) for m, _label, _plan in missing), Passes())
    asking = st.container()
    span = f"all {len(explained_windows)} windows" if whole_note else f"{positions:,} positions"
    asking.caption(f"Runs {len(missing)} explanation(s) over {span}: {estimate(loaded, precision, work)}."
                   + (" This server's CPU has native bf16: the Precision switch under Advanced in the sidebar "
                      "makes it about twice as fast." if precision == "fp32" and bf16_is_fast() else ""))
    if asking.button("Explain", type="primary", key="go_explain"):
        st.session_state[EXPLAINED] = request
        st.rerun()
results: dict[tuple[str, str], NoteAttribution] = {}
if methods and (explained or not missing):
    with user_errors():
        for method in methods:
            for label, plan in versions:
                results[(method, label)] = run_method(method, plan)

if results:
    first = next(iter(results.values()))
    st.caption(scope_text(first, info.max_tokens) + f" Scored by {noun}; hover a {noun} for its score and share.")
    if len(groups) <= BAR_GROUPS and groups.grouping in {"section", "sentence"}:
        bars = {}
        for method in methods:
            found = results[(method, versions[0][0])]
            outside = np.bincount(groups.members, weights=~found.covered, minlength=len(groups)) > 0
            bars[names[method]] = np.where(outside, np.nan, shares(group_scores(found.piece_scores, groups)))
        title = f"Each {noun}'s share of the explanation of {target.score_name} of '{escape(target.label)}'"
        st.plotly_chart(group_bar_figure(groups.labels, bars, title), key="attr_group_bar", width="stretch")
for method in methods if results else ():
    st.markdown(f"#### {names[method]}")
    columns = st.columns(len(versions))
    for column, (label, plan) in zip(columns, versions):
        found = results[(method, label)]
        heads = plan.options.knocked_out
        scores = group_scores(found.piece_scores, groups)
        share = shares(scores)
        only_fixed = np.bincount(groups.members, weights=~found.fixed, minlength=len(groups)) == 0
        with column:
            if len(versions) > 1:
                out_names = ", ".join(head_name(a, b) for a, b in sorted(heads)) if heads else ""
                st.markdown(f"**{label}**{f' ({out_names})' if out_names else ''}: {target.score_name} "
                            f"{found.score:.3f}")
            st.html(scores_html(settings.note, groups.spans, scores, excluded=only_fixed,
                                title=[f"{score:+.4f} ({part:+.0%})" for score, part in zip(scores, share)]))
            said = completeness_text(found)
            if said:
                st.caption(said)
            elif only_fixed.any():
                st.caption("The [MASK] being explained (dashed outline) is the question, not evidence: it is left "
                           "out of the colour scale.")
            if not found.signed:
                st.caption("Magnitudes only: this method does not say whether a part pushed the prediction up or "
                           "down.")
            table = pd.DataFrame({noun: list(groups.labels), "score": scores, "share": share})
            st.download_button(f"Scores by {noun} (CSV)", table.to_csv(index=False).encode("utf-8"),
                               file_name=f"attribution_{method}_{groups.grouping}_{label.replace(' ', '_')}.csv",
                               mime="text/csv", key=f"dl_{method}_{label}")

# ---------------------------------------------------------------- faithfulness and agreement
if results:
    st.subheader("Which explanation to trust here")
    st.caption(f"Comprehensiveness: how much the prediction drops when the top-scored {plural} are removed (higher "
               f"is better). Sufficiency: how much it drops when only those {plural} are kept (lower is better). "
               f"Averaged over removing 10 %, 20 %, ... 100 % of the {plural} (AOPC, as the ferret library defines "
               "them). Agreement: the rank correlation of the methods' scores, " + noun + " by " + noun + ".")
    rows, scored = [], {}
    fits = tuple(w.size + 2 for w in explained_windows)
    with user_errors():
        for method in methods:
            for label, _plan in versions:
                found = results[(method, label)]
                scored[(method, label)] = computed(
                    faith.group_faithfulness, loaded, _plan, found, groups, label=f"Faithfulness of {names[method]}",
                    passes=faith.planned_group_passes(fits))
                rows.append({"method": names[method], "model": label,
                             "comprehensiveness ↑": scored[(method, label)].comprehensiveness,
                             "sufficiency ↓": scored[(method, label)].sufficiency})
    intact = versions[0][0]
    columns = st.columns([3, 2]) if len(methods) > 1 else [st.container()]
    columns[0].dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    if len(methods) > 1:
        agreement = method_agreement([results[(m, intact)] for m in methods], groups)
        verdict = holds_up([scored[(m, intact)] for m in methods], agreement)
        best = list(methods).index(verdict.best)
        rho = {m: float(agreement.correlation[best, i]) for i, m in enumerate(methods)}
        st.markdown(verdict_text(verdict, names, groups.grouping, rho))
        columns[1].plotly_chart(agreement_figure([names[m] for m in methods], agreement.correlation,
                                                 f"Rank correlation of {noun} scores ({agreement.compared} {plural})"),
                                key="attr_agreement", width="stretch")

# ---------------------------------------------------------------- layer conductance
st.subheader("Layer conductance")
st.caption(f"How much of the change in the prediction flows through each layer, and through which {plural} "
           "(captum's LayerConductance). Each layer carries all of it; the rows show where: spread over the "
           "note early, gathered where the prediction is read late.")
state.defaults(attr_cond_steps=conductance.DEFAULT_CONDUCTANCE_STEPS)
cond_steps = st.number_input("Steps per layer", 4, 100, step=4, key="attr_cond_steps", persist_state="session")
cond_arguments = dict(window=window, baseline=baseline, steps=int(cond_steps), memory_limit=memory_bytes)
cond_passes = conductance.planned_passes(info.num_layers, tuple(w.size + 2 for w in explained_windows), int(cond_steps))
cond_ready = is_computed(conductance.layer_conductance, loaded, now.plan, target, **cond_arguments)
if ask_once("Conductance of every layer", key="go_conductance", ready=cond_ready,
            help=f"One integrated-gradients pass per layer: {estimate(loaded, precision, cond_passes)}."):
    with user_errors():
        conducted = computed(conductance.layer_conductance, loaded, now.plan, target, **cond_arguments,
                             label="Layer conductance", passes=cond_passes)
    by_group = np.stack([group_scores(row, groups) for row in conducted.piece_scores])  # [L, g]
    specials = conducted.special_scores.sum(-1).sum(-1)[:, None]  # [L, 1]
    table = np.concatenate([by_group, specials], axis=1)
    layer_shares = np.stack([shares(row) for row in table])
    st.plotly_chart(layer_group_figure([*groups.labels, "[CLS]/[SEP]"], layer_shares,
                                       f"Share of each layer's conductance by {noun}"), key="attr_conductance",
                    width="stretch")
    worst = float(np.max(np.abs(conducted.layer_deltas)))
    st.caption(f"Every layer's conductance adds up to the score change {conducted.gap:+.4f} within {worst:.4f} "
               f"({conducted.steps} steps per layer, {conducted.seconds:.1f} s).")

# ---------------------------------------------------------------- head importance
st.subheader("Head importance scan")
st.caption("Each head is knocked out in turn and the change in the prediction recorded. Red: the prediction "
           "drops without the head (it supports the prediction); blue: it rises. Click a head to knock it out in "
           "the explanations above (click a crossed-out head to bring it back)."
           + (f" On window {explained_span.index + 1}, the part chosen above." if whole_note else ""))
scan_passes = knockout_scan.planned_passes(info.num_layers, info.num_heads, positions)
scanned = is_computed(knockout_scan.head_importance, loaded, now.plan, target, window=one_window)
if ask_once("Scan every head", key="go_scan", ready=scanned,
            help=f"Runs the model once per head: {estimate(loaded, precision, scan_passes)}."):
    with user_errors():
        scan = computed(knockout_scan.head_importance, loaded, now.plan, target, window=one_window,
                        label="Knocking out each head", passes=scan_passes)
    title = f"Change in {target.score_name} of '{escape(target.label)}' without each head"
    event = st.plotly_chart(head_scan_figure(scan.scores, title, knocked), on_select="rerun",
                            selection_mode="points", key="scan_heads", width="stretch")
    if knocked:
        st.markdown("**Knocked out in the explanations above:** "
                    + ", ".join(head_name(a, b) for a, b in sorted(knocked)))
    points = event.selection.points if event and event.selection else []
    if points:
        point = points[0]
        index = int(point["point_index"])
        if int(point.get("curve_number", 0)) == 0:
            clicked = head_name(index // info.num_heads, index % info.num_heads)
            if clicked not in st.session_state.get(state.KO_HEADS, []):
                st.session_state[state.KO_PENDING] = clicked
                st.rerun()
        else:  # the cross over a knocked-out head: bring it back
            layer, head = sorted(knocked)[index]
            st.session_state[state.KO_RELEASE] = head_name(layer, head)
            st.rerun()

# ---------------------------------------------------------------- counterfactual
st.subheader("Counterfactual edit")
st.caption("Replace a word in place (for example 'denies' with 'reports') and compare both versions"
           + (f", in window {explained_span.index + 1} (the part chosen above)." if whole_note else "."))
columns = st.columns(3)
spans = result.word_spans
words = [settings.note[a:b] for a, b in spans.tolist()]
word_names = tuple(f"{word} (word {i + 1})" for i, word in enumerate(words))
first_word = next((i for i, w in enumerate(words) if w.lower() == "denies"), 0)
chosen = columns[0].selectbox("Word to replace", range(len(words)), format_func=word_names.__getitem__,
                              key=note_choice("q_cf", result.key, first_word, options=range(len(words))),
                              persist_state="session")
state.defaults(attr_cf_with="reports")
replacement = columns[1].text_input("Replace with", key="attr_cf_with", persist_state="session")
cf_names = {"predictions only": "predictions only", **{m: method_name(m, "word") for m in WINDOW_METHODS}}
cf_choice = columns[2].selectbox("Also explain with", ["predictions only", *[m for m in methods if m in cf_names]],
                                 key="attr_cf_method", persist_state="session", format_func=cf_names.__getitem__)
cf_method = None if cf_choice == "predictions only" else cf_choice
start, end = (int(v) for v in spans[chosen])
cf_arguments = dict(method=cf_method, window=one_window)
cf_explained = window_passes(cf_method, positions, window_words, steps=int(steps)) if cf_method else Passes()
cf_passes = Passes(forward=((positions, 2),)) + cf_explained + cf_explained
cf_ready = is_computed(counterfactual, loaded, now.plan, start, end, replacement, target, **cf_arguments)
if replacement.strip() and ask_once("Compare", key="go_cf", ready=cf_ready,
                                    help=f"Runs both versions: {estimate(loaded, precision, cf_passes)}."):
    with user_errors():
        edit = computed(counterfactual, loaded, now.plan, start, end, replacement, target, **cf_arguments,
                        label="Comparing both versions", passes=cf_passes)
    st.markdown(f"Edit: **{escape(settings.note[start:end])}** → **{escape(replacement)}** "
                f"(word {chosen + 1}).")
    left, right = st.columns(2)
    order = np.argsort(-np.abs(edit.prob_change))[:12]
    with left:
        st.markdown(f"**{target.score_name}**: {edit.original.score:.3f} → {edit.edited.score:.3f} "
                    f"({edit.score_change:+.3f})")
        st.dataframe(pd.DataFrame({"candidate": [edit.names[i] for i in order],
                                   "original": edit.original_probs[order], "edited": edit.edited_probs[order],
                                   "change": edit.prob_change[order]}), hide_index=True, width="stretch")
    with right:
        if edit.original.attribution is not None and edit.edited.attribution is not None:
            st.markdown("**Original**")
            st.html(scores_html(edit.original.text, edit.original.attribution.word_spans,
                                edit.original.attribution.word_scores, excluded=edit.original.attribution.word_fixed))
            st.markdown("**Edited**")
            st.html(scores_html(edit.edited.text, edit.edited.attribution.word_spans,
                                edit.edited.attribution.word_scores, excluded=edit.edited.attribution.word_fixed))
