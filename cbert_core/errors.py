"""Typed errors a user can cause, each with a message a clinician can act on.

Pages catch :class:`CbertError` and show ``str(error)``; nothing below it should
ever reach a user as a traceback.
"""

from __future__ import annotations


class CbertError(Exception):
    """Base class: a problem with the user's input or choice, not a bug."""


class EmptyNoteError(CbertError):
    """The note is empty or only whitespace."""


class NoteTooLongError(CbertError):
    """The note is over the configured character limit."""


class ModelNotFoundError(CbertError):
    """A model folder or hub id that does not exist (or cannot be reached)."""


class UnsupportedModelError(CbertError):
    """An architecture the tracer does not support (e.g. GPT-2)."""


class ModelLoadError(CbertError):
    """The checkpoint exists but cannot be read (truncated or corrupted weights)."""


class HubUnreachableError(ModelNotFoundError):
    """A hub id was asked for, the hub did not answer and there is no local copy."""


class TargetError(CbertError):
    """A prediction or attribution target that does not fit the note or the model."""


class WrongHeadError(TargetError):
    """A method that does not fit the checkpoint's head (e.g. fill-mask on a bare encoder)."""


class ResourceLimitError(CbertError):
    """A request that would exceed a configured memory or size bound."""


class DataFileError(CbertError):
    """An uploaded collection (CSV/JSONL) that cannot be used."""


class LabelMismatchError(DataFileError):
    """A collection's labels that do not match the model's (unknown names, none left, a mapping needed)."""


class ExportError(CbertError):
    """An export that could not be written."""


SUPPORTED_FAMILIES_TEXT = "BERT, RoBERTa, DistilBERT and ELECTRA encoders"


class DeviceError(CbertError):
    """``CBERT_DEVICE`` asks for a device this machine does not have (or is not a known device)."""
