"""Debugging a model on a labelled collection: predictions for the whole collection through the batch
engine, metrics, calibration, slices by metadata and by clinical features, the misclassified rows, and
behaviour tests (edits a clinical reader expects to change, or not change, a prediction).

Modules: ``dataset`` (a labelled collection: uploaded, sampled when too large, or the built-in example;
label names against the model's), ``predictions`` (every row through the model once, via the batch
engine of ``cbert_core.corpus.batch``), ``outcomes`` (gold against predicted, per note or per word),
``metrics``, ``calibration``, ``clinical_features`` (negation and uncertainty cues, sections, length,
placeholders, abbreviations, upper case), ``lexicon`` (clinical abbreviations and cue words),
``slices`` (metrics per slice with bootstrap intervals), ``behaviour`` (CheckList-style edits).

May import: ``cbert_core.model``, ``cbert_core.text``, ``cbert_core.run``, ``cbert_core.analyses``,
``cbert_core.corpus``, ``cbert_core.serving.speed`` (estimates) and the base modules. Not training or
views: figures of these results are built in ``cbert_core.views.evaluation_figures``.
"""
