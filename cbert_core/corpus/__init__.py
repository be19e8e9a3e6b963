"""Many notes at once: collections read from CSV/JSONL (``collection``), labelled spans read from CSV/JSONL
or CoNLL files (``span_files``), note embeddings and their
projections (``embeddings``), contextual token search (``token_search``), and the batch command line
(``cli``, ``batch``, ``batch_columns``).

May import: ``cbert_core.model``, ``cbert_core.text``, ``cbert_core.run``, ``cbert_core.analyses``,
``cbert_core.views.export`` (writing results), ``cbert_core.serving.speed`` and the base modules.
"""
