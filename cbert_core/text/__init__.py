"""Clinical text: segmentation, word pieces with offsets, and windows for long notes."""

from .segment import Section, Segmentation, Sentence, segment
from .tokens import DEFAULT_MAX_CHARS, NoteTokens, check_note, sentence_start_tokens, tokenize_note
from .windows import DEFAULT_OVERLAP, Window, owner_windows, plan_windows

__all__ = [
    "DEFAULT_MAX_CHARS", "DEFAULT_OVERLAP", "NoteTokens", "Section", "Segmentation", "Sentence", "Window",
    "check_note", "owner_windows", "plan_windows", "segment", "sentence_start_tokens", "tokenize_note",
]
