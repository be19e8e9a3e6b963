"""Whether a vocabulary is cased and whether a tokenizer lower-cases.

Bio_ClinicalBERT's vocabulary is cased (Google's cased BERT vocabulary: ``The``
and ``the`` are both entries) but its published repository ships no tokenizer
settings, so ``AutoTokenizer`` lower-cases: "COPD" becomes ``cop ##d`` instead
of ``CO ##PD``. The explorer shows which casing is in force and lets the user
switch it; this module holds the two facts that decision needs.
"""

from __future__ import annotations

import re

from transformers import PreTrainedTokenizerBase

_SPECIAL = re.compile(r"^\[.*\]$|^<.*>$")
CASED_SHARE = 0.05  # Google's cased vocab has ~30% entries with capitals; uncased has none


def vocabulary_is_cased(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when a meaningful share of the ordinary entries hold upper-case letters."""
    entries = [token for token in tokenizer.get_vocab() if not _SPECIAL.match(token)]
    if not entries:
        return False
    upper = sum(1 for token in entries if any(ch.isupper() for ch in token))
    return upper / len(entries) >= CASED_SHARE


def tokenizer_lowercases(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when the tokenizer maps "ABC" and "abc" to the same pieces."""
    probe = "COPD Patient"
    return tokenizer.tokenize(probe) == tokenizer.tokenize(probe.lower())
