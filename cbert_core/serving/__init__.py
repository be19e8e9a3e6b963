"""Sharing one server: the bounded caches (``cache``), measured speed and time estimates (``speed``),
and the status line (``status``).

May import: ``cbert_core.model`` (to count hooks left on a model) and the base modules.
"""
