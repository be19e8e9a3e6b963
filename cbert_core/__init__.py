"""cbert_core: load a clinical BERT checkpoint and look inside it, without any UI.

Data flows one way, and the packages are layered the same way (each package's docstring says what
it may import; ``tests/test_layering.py`` checks it):

    model  ->  text  ->  run  ->  analyses  ->  training / corpus  ->  evaluation
                                                                          views (numpy in, figure out)

- ``model``: find and load a checkpoint without hanging on the hub, casing, where the layers and
  heads are, the only hooks (capture, knockout), precision, one adapter per head kind.
- ``text``: sections and sentences, words, word pieces with offsets, windows for long notes.
- ``run``: the run plan (``run.plan.plan_note`` turns a model, a note and ``RunOptions`` into the
  tokenized, segmented, windowed note every analysis takes), the hooked pass into an immutable
  ``Trace``, the lean forward pass, the exact walk of one window, batched encoding.
- ``analyses``: what a run means (attention statistics, projections, predictions, attribution,
  faithfulness, head importance, counterfactuals, model comparison), as frozen records.
- ``training``, ``corpus``: fine-tuning; many notes at once and the batch command line.
- ``evaluation``: a labelled collection through the batch engine: metrics, calibration, slices by
  metadata and clinical features, errors and behaviour tests (the Evaluate page's core).
- ``serving``: bounded caches, measured speed and time estimates, the status line.
- ``views``: plotly figures, HTML and export bytes; no torch.
- Base modules any package may use: ``errors`` (what a user sees), ``progress`` (progress
  callbacks), ``records`` (frozen keyword-only records of numpy arrays).

Nothing in this package imports streamlit; the app's Streamlit side is ``ui/`` and ``pages/``.
"""
