"""Training a model on labelled notes: fine-tuning a classification head (``finetune``) and training
only the top layers without re-running the frozen bottom (``frozen_trunk``).

May import: ``cbert_core.model``, ``cbert_core.text``, ``cbert_core.run``, ``cbert_core.analyses``
(its statistics), ``cbert_core.corpus.collection`` (the labelled data), ``cbert_core.serving.speed``
and the base modules. Not views.
"""
