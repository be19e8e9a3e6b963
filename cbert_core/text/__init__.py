"""Clinical text: sections and sentences, words, word pieces with offsets, windows for long notes.

Modules: ``segment`` (sections and sentences), ``words`` (words as a reader counts them), ``tokens``
(word pieces with character offsets), ``windows`` (overlapping windows and their owners),
``tokenization`` (how a tokenizer splits a note: fertility, comparisons), ``examples`` (example
notes and a labelled example collection written for the project).

May import: ``cbert_core.errors``, ``cbert_core.progress``, ``cbert_core.records`` (and a tokenizer
given to it). Not the model, not running.
"""
