"""Evaluate: a model on a labelled collection: metrics, calibration, slices, errors, behaviour tests, exports."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from cbert_core.corpus.collection import candidate_label_columns, candidate_text_columns
from cbert_core.errors import CbertError
from cbert_core.evaluation import behaviour
from cbert_core.evaluation.calibration import calibrate
from cbert_core.evaluation.clinical_features import TEXT_FEATURES, text_features
from cbert_core.evaluation.dataset import (
    LEAVE_OUT,
    MAX_EVALUATION_ROWS,
    example_set,
    guess_mapping,
    labelled_from_table,
    read_evaluation_table,
    unknown_labels,
)
from cbert_core.evaluation.metrics import metrics
from cbert_core.evaluation.outcomes import label_names, outcomes
from cbert_core.evaluation.predictions import HEAD_KINDS, planned_passes, predict_collection
from cbert_core.evaluation.slices import METRICS, in_slice, slice_options, slice_table
from cbert_core.evaluation.tables import (
    behaviour_examples,
    behaviour_summary,
    confusion_table,
    errors_table,
    features_table,
    per_class_table,
    reliability_table,
    split_table,
    units_table,
)
from cbert_core.views.evaluation_figures import behaviour_figure, confusion_heatmap, reliability_figure, slice_figure
from cbert_core.views.export import table_to_csv_bytes, table_to_parquet_bytes
from cbert_core.views.labels import escape
from ui import state
from ui.caches import computed, estimate, is_computed
from ui.context import page
from ui.widgets import download, kept_upload, note_choice, user_errors

EXAMPLE, UPLOAD = "Example set", "Upload CSV or JSONL"
HEAD, ZERO_SHOT = "head", "zero-shot"
VIEWS = ("Metrics", "Calibration", "Slices", "Errors", "Behaviour tests", "Exports")
ALL_ROWS = "(all rows)"
# Zero-shot descriptions offered for the example set's labels; any other label starts as its own name.
DESCRIPTION_DEFAULTS = {"negated": "the finding is absent", "affirmed": "the finding is present"}
MAX_ZERO_SHOT_CLASSES = 12
NUMBER = st.column_config.NumberColumn(format="%.3f")

st.title("Evaluate")
st.caption("The model on a labelled collection: where it fails, on which kind of note, how sure it is, and "
           "whether it holds up when a note is reworded. Every row runs through the model once; switching "
           "views, slices or filters afterwards never runs it again.")
now = page()
loaded, info, settings = now.loaded, now.info, now.settings

# ---------------------------------------------------------------- the collection
source = st.radio("Collection", [EXAMPLE, UPLOAD], horizontal=True, key="eval_source", persist_state="session",
                  format_func={EXAMPLE: f"Example set ({len(example_set())} labelled sentences)",
                               UPLOAD: UPLOAD}.__getitem__)
with user_errors():
    if source == EXAMPLE:
        labelled = computed(example_set, label="Reading the example set", progress=False)
    else:
        upload = kept_upload(f"Labelled notes (CSV with a header row, or JSONL); more than {MAX_EVALUATION_ROWS:,} "
                             "rows are sampled", types=["csv", "tsv", "txt", "jsonl", "json"], key="eval_upload")
        if upload is None:
            st.stop()
        table = computed(read_evaluation_table, upload.data, name=upload.name, label="Reading the file",
                         progress=False)
        text_columns = candidate_text_columns(table)
        if not text_columns:
            raise CbertError(f"{upload.name} has no column that holds text. The columns are: "
                             f"{', '.join(map(str, table.columns))}.")
        columns = st.columns(2)
        text_column = columns[0].selectbox("Note column", text_columns, persist_state="session", key=note_choice(
            "eval_text_column", upload.digest, text_columns[0], options=text_columns))
        likely = computed(candidate_label_columns, table, label="Looking for label columns", progress=False)
        label_options = [c for c in likely if c != text_column] + \
            [c for c in table.columns if c != text_column and c not in likely]
        if not label_options:
            raise CbertError(f"{upload.name} has only one column: add a column with each note's correct label.")
        label_column = columns[1].selectbox(
            "Label column", label_options, persist_state="session",
            help="Each note's correct label. For a token classifier: one tag per word (separated by spaces), "
                 "such as 'O O B-PROBLEM I-PROBLEM'.",
            key=note_choice("eval_label_column", (upload.digest, text_column), label_options[0],
                            options=label_options))
        labelled = computed(labelled_from_table, table, text_column=text_column, label_column=label_column,
                            name=upload.name, label="Reading the labelled notes", progress=False)
    for warning in labelled.warnings:
        st.warning(warning, icon=":material/warning:")
texts, ids = labelled.texts, labelled.ids

# ---------------------------------------------------------------- predictions: the head or zero-shot
has_head = info.head_kind in HEAD_KINDS
modes = ([HEAD] if has_head else []) + [ZERO_SHOT]
mode_names = {HEAD: f"the model's {info.head_kind} head ({', '.join(info.labels[:6])})",
              ZERO_SHOT: "zero-shot similarity to a description of each label"}
mode = st.radio("Predictions from", modes, format_func=mode_names.__getitem__, horizontal=True,
                key=note_choice("eval_mode", info.key, modes[0], options=modes), persist_state="session",
                help="A bare encoder (or a masked-language model) has no classification head: it is evaluated by "
                     "ranking a description of each label by embedding similarity, as on the Predictions page.")
classes: tuple[str, ...] = ()
descriptions: tuple[str, ...] = ()
mapping: dict[str, str] = {}
if mode == ZERO_SHOT:
    classes = labelled.label_names
    if len(classes) > MAX_ZERO_SHOT_CLASSES:
        st.error(f"The label column holds {len(classes)} different labels; zero-shot evaluation compares each note "
                 f"with one description per label, at most {MAX_ZERO_SHOT_CLASSES}. Choose another label column.",
                 icon=":material/warning:")
        st.stop()
    with st.expander("Label descriptions", expanded=True):
        st.caption("Each note is compared with these descriptions; the closest one is the prediction. Shares are "
                   "softmax(cosine / 0.05): a ranking aid, which the Calibration view measures.")
        columns = st.columns(min(len(classes), 3))
        written = []
        for index, name in enumerate(classes):
            written.append(columns[index % len(columns)].text_input(
                f"“{name}” means", persist_state="session",
                key=note_choice(f"eval_description_{index}", (info.key, classes),
                                DESCRIPTION_DEFAULTS.get(name.lower(), name))))
        descriptions = tuple(text.strip() for text in written)
else:
    unit = "word" if info.head_kind == "token-classification" else "note"
    unknown = unknown_labels(label_names(labelled.labels, unit), info.labels)
    if unknown:
        guessed = guess_mapping(unknown, info.labels)
        st.warning(f"{len(unknown)} label(s) of the collection are not the model's ({', '.join(map(escape, info.labels))}):"
                   f" {', '.join(escape(name) for name in unknown[:10])}. Say below which class each one means; "
                   f"labels left out are not evaluated.", icon=":material/rule:")
        with st.expander("Label mapping", expanded=True):
            choices = [*info.labels, LEAVE_OUT]
            columns = st.columns(min(len(unknown), 3))
            for index, name in enumerate(unknown[:60]):
                mapping[name] = columns[index % len(columns)].selectbox(
                    f"“{name}” is", choices, persist_state="session",
                    key=note_choice(f"eval_map_{index}", (info.key, unknown), guessed[name], options=choices))
            for name in unknown[60:]:
                mapping[name] = LEAVE_OUT
counts = pd.Series(labelled.labels).value_counts()
st.caption(f"{len(texts):,} labelled notes from {escape(labelled.source)}"
           + (f": {', '.join(f'{escape(str(k))} {v:,}' for k, v in counts.head(8).items())}" if len(counts) <= 8
              else f", {len(counts):,} different labels"))

# ---------------------------------------------------------------- the run (cached, cancellable)
with st.expander("Run settings", expanded=False):
    engine = st.radio("Engine", ["local", "ray"], horizontal=True, key="eval_engine", persist_state="session",
                      help="local: this server's process runs the model it already holds. ray: Ray Data workers "
                           "(each loads the model) as the batch command line's --engine ray; for collections "
                           "that outgrow one process. Both give the same numbers.")
arguments = dict(model_spec=settings.model_spec, mode=mode, classes=classes, descriptions=descriptions,
                 lowercase=now.plan.lowercase, engine=engine)
request = (info.key, len(texts), hash(texts), tuple(sorted(arguments.items())))
ready = is_computed(predict_collection, loaded, texts, **arguments)
with user_errors():
    passes = computed(planned_passes, loaded, texts, lowercase=now.plan.lowercase, label="Estimating the work",
                      progress=False)
    waiting = st.empty()  # the estimate and Cancel while the run goes on; cleared once it is done
    if not ready:
        with waiting.container():
            st.caption(f"Runs {len(texts):,} notes ({passes.rows:,} windows) through the model once: "
                       f"{estimate(loaded, 'fp32', passes)}.")
            if st.session_state.get(state.EVAL_RUN) != request:
                if st.button("Evaluate", type="primary", key="go_evaluate"):
                    st.session_state[state.EVAL_RUN] = request
                    st.rerun()
                st.stop()
            st.button("Cancel", key="eval_cancel", icon=":material/cancel:",
                      on_click=lambda: st.session_state.pop(state.EVAL_RUN, None),
                      help="Stops the run at the next batch of notes; nothing half-done is kept.")
    predictions = computed(predict_collection, loaded, texts, **arguments,
                           label=f"Evaluating {len(texts):,} notes", passes=passes)
    waiting.empty()
    found = computed(outcomes, predictions, labelled.labels, mapping=tuple(sorted(mapping.items())),
                     label="Matching labels", progress=False)
    clinical = computed(text_features, texts, label="Reading clinical features (negation, uncertainty, sections)")
    features = computed(features_table, labelled, clinical, predictions, label="Slices", progress=False)
st.session_state.pop(state.EVAL_RUN, None)
# Tables a click selects in are keyed by the evaluation, so a selection never carries over to another one.
TAG = f"{abs(hash((request, tuple(sorted(mapping.items()))))) % 10**10:010d}"
for warning in found.warnings:
    st.warning(warning, icon=":material/warning:")

# ---------------------------------------------------------------- opening a row in the explorer
names_for_attribution = descriptions if mode == ZERO_SHOT else found.classes


def open_unit(unit: int, table_name: str, filter_name: str, edit: behaviour.Edit | None = None,
              place: int | None = None) -> None:
    """Make the unit's note the current note and open Attribution on the predicted class, with ``edit`` (or the
    note's negation flip) as the counterfactual; remember the place in the table (``place``: the table's own
    row number, the unit by default) for the way back."""
    row = int(found.rows[unit])
    flip = edit if edit is not None else behaviour.negation_flip(texts[row])
    counterfactual = flip.one_word(texts[row]) if flip is not None else None
    if mode == ZERO_SHOT:
        st.session_state[state.DESCRIPTIONS] = "\n".join(descriptions)
    st.session_state[state.ATTR_PENDING] = {
        "class": names_for_attribution[int(found.predicted[unit])], "zero_shot": mode == ZERO_SHOT,
        "word": int(found.spans[unit][0]) if found.unit == "word" else None, "cf": counterfactual}
    st.session_state[state.EVAL_OPENED] = {"table": table_name, "filter": filter_name,
                                           "unit": unit if place is None else place}
    st.session_state[state.EVAL_RETURN] = True
    st.session_state[state.PENDING_NOTE] = texts[row]
    st.switch_page("pages/attribution.py")


def clickable_units(table: pd.DataFrame, table_name: str, filter_name: str, key: str) -> None:
    """``table`` (a "unit" column first) with single-row selection: a click opens that unit in Attribution.

    The row opened last is selected again when the user comes back, and opens nothing by itself."""
    opened = st.session_state.get(state.EVAL_OPENED) or {}
    same_place = opened.get("table") == table_name and opened.get("filter") == filter_name
    position = [int(i) for i in np.flatnonzero(table["unit"].to_numpy() == opened.get("unit"))] if same_place else []
    if position:
        st.caption(f"Opened last: {escape(str(table.iloc[position[0]]['id']))}, row {position[0] + 1:,} of "
                   f"{len(table):,} here (selected below).")
    event = st.dataframe(table, key=key, on_select="rerun", selection_mode="single-row", hide_index=True,
                         selection_default={"selection": {"rows": position[:1]}} if position else None,
                         width="stretch", column_config={"confidence": NUMBER, "unit": None})
    chosen = event.selection.rows if event and event.selection else []
    if chosen:
        unit = int(table.iloc[chosen[0]]["unit"])
        if not (same_place and opened.get("unit") == unit):
            open_unit(unit, table_name, filter_name)


options = computed(slice_options, features, label="Slices", progress=False)
FILTERS = (ALL_ROWS, *(f"{column} = {value}" for column, value in options))


def slice_filter(label: str, key: str) -> tuple[str, np.ndarray | None]:
    """A choice of slice (kept across page switches): its name and its units (None: every unit)."""
    chosen = st.selectbox(label, FILTERS, persist_state="session",
                          key=note_choice(key, (request, FILTERS), ALL_ROWS, options=FILTERS))
    if chosen == ALL_ROWS:
        return chosen, None
    column, value = options[FILTERS.index(chosen) - 1]
    return chosen, in_slice(found, features, column, value)


if "eval_pending_view" in st.session_state:  # a slice clicked on the Slices view: show its errors
    st.session_state["eval_view"] = st.session_state.pop("eval_pending_view")
view = st.radio("Show", VIEWS, horizontal=True, key="eval_view", persist_state="session",
                label_visibility="collapsed")
measured = computed(metrics, found, label="Metrics", progress=False)

# ---------------------------------------------------------------- metrics
if view == "Metrics":
    columns = st.columns(4)
    columns[0].metric("Accuracy", f"{measured.accuracy:.1%}")
    columns[1].metric("Macro-F1", f"{measured.macro_f1:.3f}")
    columns[2].metric(f"{found.unit.capitalize()}s evaluated", f"{measured.count:,}")
    columns[3].metric("Majority baseline", f"{measured.support.max() / max(measured.count, 1):.1%}",
                      help="The accuracy of always predicting the most frequent gold class.")
    st.dataframe(per_class_table(measured), hide_index=True, width="stretch",
                 column_config={"precision": NUMBER, "recall": NUMBER, "F1": NUMBER})
    event = st.plotly_chart(confusion_heatmap(measured.confusion, measured.classes), on_select="rerun",
                            selection_mode="points", key="eval_confusion", width="stretch")
    st.caption("Click a cell to list its rows.")
    points = event.selection.points if event and event.selection else []
    if points:
        gold, predicted = int(points[0]["y"]), int(points[0]["x"])
        cell = (found.gold == gold) & (found.predicted == predicted)
        st.markdown(f"**Gold {escape(found.classes[gold])}, predicted {escape(found.classes[predicted])}**: "
                    f"{int(cell.sum()):,} {found.unit}(s). Click one to open it in Attribution.")
        table = units_table(found, ids, texts, features)[cell].sort_values("confidence", ascending=False)
        clickable_units(table, f"confusion {TAG}", f"{gold},{predicted}", key=f"eval_cell_{TAG}_{gold}_{predicted}")

# ---------------------------------------------------------------- calibration
elif view == "Calibration":
    st.caption("Is a confidence of 80% right 80% of the time? The rows are split in two (stratified by label): "
               "the temperature is fitted on the *fit* part and both versions are checked on the *check* part.")
    columns = st.columns(2)
    state.defaults(eval_fit_share=0.5, eval_seed=0)
    share = columns[0].slider("Share of rows to fit the temperature on", 0.2, 0.8, step=0.1, key="eval_fit_share",
                              persist_state="session")
    seed = columns[1].number_input("Split seed", 0, 10_000, key="eval_seed", persist_state="session")
    try:
        calibrated = computed(calibrate, found, fit_share=float(share), seed=int(seed), label="Calibrating",
                              progress=False)
    except ValueError:
        st.info("Calibration needs at least two evaluated rows.", icon=":material/info:")
        st.stop()
    columns = st.columns(4)
    columns[0].metric("Temperature", f"{calibrated.temperature:.2f}",
                      help="Above 1: the model was over-confident; below 1: under-confident.")
    columns[1].metric("ECE before", f"{calibrated.before.ece:.3f}")
    columns[2].metric("ECE after", f"{calibrated.after.ece:.3f}",
                      delta=f"{calibrated.after.ece - calibrated.before.ece:+.3f}", delta_color="inverse")
    columns[3].metric("Log-loss before → after", f"{calibrated.nll_before:.3f} → {calibrated.nll_after:.3f}")
    st.plotly_chart(reliability_figure(
        calibrated.before.edges, (calibrated.before.counts, calibrated.before.confidence, calibrated.before.accuracy,
                                  calibrated.before.ece),
        (calibrated.after.counts, calibrated.after.confidence, calibrated.after.accuracy, calibrated.after.ece),
        temperature=calibrated.temperature), key="eval_reliability", width="stretch")
    if mode == ZERO_SHOT:
        st.caption("Zero-shot shares are a softmax of cosines, not probabilities: the temperature found here says "
                   "how far they are from being read as such.")
    with st.expander(f"The split: {len(calibrated.fit_rows):,} fit rows, {len(calibrated.check_rows):,} check rows"):
        st.dataframe(split_table(calibrated, ids), hide_index=True, width="stretch")

# ---------------------------------------------------------------- slices
elif view == "Slices":
    st.caption("Each metadata column of the file and each clinical feature of the text ("
               + ", ".join(TEXT_FEATURES) + ", word pieces, windows) splits the collection; slices are sorted "
               "by their gap to the whole collection, worst first, with 95% bootstrap intervals. Click a slice to "
               "see its errors.")
    metric = st.radio("Metric", METRICS, horizontal=True, key="eval_slice_metric", persist_state="session")
    with user_errors():
        sliced = computed(slice_table, found, features, metric=metric, label="Bootstrap intervals of every slice")
    st.plotly_chart(slice_figure(sliced.table, sliced.overall, metric), key="eval_slice_figure", width="stretch")
    event = st.dataframe(sliced.table, key="eval_slices", on_select="rerun", selection_mode="single-row",
                         hide_index=True, width="stretch",
                         column_config={"metric": NUMBER, "low": NUMBER, "high": NUMBER,
                                        "gap": st.column_config.NumberColumn(format="%+.3f")})
    if sliced.skipped:
        st.caption(f"Not sliced (too many different values): {', '.join(map(escape, sliced.skipped))}.")
    chosen = event.selection.rows if event and event.selection else []
    if chosen:
        picked = sliced.table.iloc[chosen[0]]
        name = f"{picked['slice by']} = {picked['value']}"
        if name in FILTERS:
            st.session_state[note_choice("eval_error_filter", (request, FILTERS), ALL_ROWS, options=FILTERS)] = name
            st.session_state["eval_pending_view"] = "Errors"
            st.rerun()

# ---------------------------------------------------------------- errors
elif view == "Errors":
    chosen_filter, keep = slice_filter("Slice", "eval_error_filter")
    table = errors_table(found, ids, texts, features, keep)
    total = len(found) if keep is None else int(keep.sum())
    st.caption(f"{len(table):,} misclassified of {total:,} {found.unit}s here, the most confident mistakes first. "
               "Click a row: its note becomes the current note and Attribution opens on the predicted class, with "
               "the note's negation flipped as the counterfactual edit; its Back link returns here.")
    clickable_units(table, f"errors {TAG}", chosen_filter,
                    key=f"eval_errors_{TAG}_{FILTERS.index(chosen_filter)}")

# ---------------------------------------------------------------- behaviour tests
elif view == "Behaviour tests":
    if found.unit == "word":
        st.info("Behaviour tests compare note-level predictions; a token classifier's edited notes change their "
                "words, so its tags cannot be compared one to one.", icon=":material/info:")
        st.stop()
    st.caption("Each test edits the notes it applies to and runs them through the model: the share of "
               "predictions that changed, and the failures (changed where they should not, or the reverse). "
               "Say for your task whether each edit should change the prediction.")
    chosen_filter, keep = slice_filter("Run on", "eval_behaviour_scope")
    state.defaults(eval_tests=list(behaviour.TESTS), eval_limit=1000)
    names = st.multiselect("Tests", list(behaviour.TESTS), key="eval_tests", persist_state="session")
    expectations = {}
    columns = st.columns(3)
    for index, name in enumerate(names):
        test = behaviour.TESTS[name]
        state.defaults(**{f"eval_expect_{index}": test.expectation})
        expectations[name] = columns[index % 3].selectbox(
            f"{name}: expect", ["change", "same"], key=f"eval_expect_{index}", persist_state="session",
            format_func={"change": "a change", "same": "no change"}.__getitem__, help=test.description)
    limit = st.number_input("Notes per test, at most", 10, MAX_EVALUATION_ROWS, step=100, key="eval_limit",
                            persist_state="session")
    rows = tuple(int(row) for row in np.unique(found.rows if keep is None else found.rows[keep]))
    planned = computed(behaviour.plan_edits, tuple(names), texts, rows=rows, limit=int(limit),
                       label="Editing the notes", progress=False)
    edited = behaviour.edited_texts(planned, texts)
    if not edited:
        st.info("None of these tests applies to the notes here.", icon=":material/info:")
        st.stop()
    with user_errors():
        edit_passes = computed(planned_passes, loaded, edited, lowercase=now.plan.lowercase, label="Estimating",
                               progress=False)
    ready = is_computed(predict_collection, loaded, edited, **arguments)
    if not ready:
        st.caption(f"{len(edited):,} edited notes to run through the model: {estimate(loaded, 'fp32', edit_passes)}.")
        if not st.button("Run the behaviour tests", key="go_behaviour", type="primary"):
            st.stop()
    with user_errors():
        after = computed(predict_collection, loaded, edited, **arguments, label="Predicting the edited notes",
                         passes=edit_passes)
    results = behaviour.score_all(planned, expectations, predictions.probs, after.probs, tested=len(rows))
    summary = behaviour_summary(results)
    st.plotly_chart(behaviour_figure(summary["test"], summary["changed"].fillna(0), summary["failed"].fillna(0),
                                     [result.expectation for result in results]), key="eval_behaviour_figure",
                    width="stretch")
    st.dataframe(summary, hide_index=True, width="stretch",
                 column_config={"changed": st.column_config.NumberColumn(format="percent"),
                                "failed": st.column_config.NumberColumn(format="percent")})
    shown = st.selectbox("Examples of", [result.name for result in results if len(result.rows)],
                         key="eval_behaviour_examples", persist_state="session")
    result = next(result for result in results if result.name == shown)
    examples = behaviour_examples(result, found.classes, ids, texts)
    st.caption("Failures first. Click an example to open its original note in Attribution, with this edit as the "
               "counterfactual.")
    opened = st.session_state.get(state.EVAL_OPENED) or {}
    table_name = f"behaviour {TAG} {shown} {abs(hash((tuple(names), int(limit)))) % 10**10}"
    same_place = opened.get("table") == table_name and opened.get("filter") == chosen_filter
    position = [int(i) for i in np.flatnonzero(examples["example"].to_numpy() == opened.get("unit"))] \
        if same_place else []
    event = st.dataframe(examples, key=f"eval_examples_{table_name}_{FILTERS.index(chosen_filter)}", on_select="rerun",
                         selection_mode="single-row", hide_index=True, width="stretch",
                         selection_default={"selection": {"rows": position[:1]}} if position else None,
                         column_config={"example": None, "p(before class) before": NUMBER,
                                        "p(before class) after": NUMBER})
    chosen = event.selection.rows if event and event.selection else []
    if chosen:
        example = int(examples.iloc[chosen[0]]["example"])
        if not (same_place and opened.get("unit") == example):
            unit = int(np.flatnonzero(found.rows == result.rows[example])[0])
            open_unit(unit, table_name, chosen_filter, edit=result.edits[example], place=example)

# ---------------------------------------------------------------- exports
else:
    st.caption("Each file is made when you click and goes straight to your browser; nothing is stored on the server.")
    tables = {
        "predictions": lambda: units_table(found, ids, texts, features, with_probabilities=True),
        "errors": lambda: errors_table(found, ids, texts, features),
        "per_class_metrics": lambda: per_class_table(measured),
        "confusion_matrix": lambda: confusion_table(measured),
        "slices_accuracy": lambda: computed(slice_table, found, features, metric="accuracy",
                                           label="Slices", progress=False).table,
        "reliability_bins": lambda: reliability_table(computed(calibrate, found, label="Calibrating", progress=False,
                                                                fit_share=0.5, seed=0)),
    }
    for name, make in tables.items():
        columns = st.columns([3, 1, 1], vertical_alignment="center")
        columns[0].markdown(f"**{name.replace('_', ' ')}**")
        with columns[1]:
            download("CSV", lambda make=make: table_to_csv_bytes(make()), f"evaluation_{name}.csv", "text/csv",
                     key=f"eval_csv_{name}")
        with columns[2]:
            download("Parquet", lambda make=make: table_to_parquet_bytes(make()), f"evaluation_{name}.parquet",
                     "application/vnd.apache.parquet", key=f"eval_parquet_{name}")
    st.caption("The Calibration view exports its split (fit and check rows) with the table under *The split*; the "
               "behaviour tests' tables download from their own table's toolbar (CSV).")
