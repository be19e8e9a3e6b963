"""Clinical text: sections and sentences, words, word pieces with offsets, windows for long notes.

Modules: ``segment`` (sections and sentences), ``words`` (words as a reader counts them), ``tokens``
(word pieces with character offsets), ``windows`` (overlapping windows and their owners),
``tokenization`` (how a tokenizer splits a note: fertility, comparisons), ``spans`` (labelled character
spans, checked and aligned to word pieces as BIO tags), ``examples`` (example notes, a labelled example
collection and example spans written for the project).

May import: ``cbert_core.errors``, ``cbert_core.progress``, ``cbert_core.records`` (and a tokenizer
given to it). Not the model, not running.
"""
