"""What a run means: attention statistics, projections, the inside walk's panels, predictions,
attribution (one window, or the whole note by word, sentence or section, with captum's methods and
their agreement), faithfulness, layer conductance, head importance, counterfactual edits, model comparison.

Each analysis takes a run plan or a Trace (never a raw note it prepares itself) and returns a
frozen result record of numpy arrays.

May import: ``cbert_core.run``, ``cbert_core.model``, ``cbert_core.text``, ``cbert_core.serving.speed``
and the base modules; one analysis may use another's result (attribution's targets). Not training,
corpus or views.
"""
