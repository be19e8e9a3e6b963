"""Sharing one server: the bounded caches (``cache``), measured speed and time estimates (``speed``),
the status line (``status``), fair turns on the model (``scheduler``), and model worker processes
(``worker_pool`` in the server, ``model_worker`` in each worker, ``shared_results`` between them).

May import: ``cbert_core.model`` (to count hooks left on a model) and the base modules.
"""
