"""Tiny seeded checkpoints written to disk, so tests load them the way users load theirs.

The vocabulary is small but cased (it holds "Patient" and "patient", "CO" and
"cop"), like Bio_ClinicalBERT's, so casing behaviour can be tested.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    BertTokenizer,
    DistilBertConfig,
    DistilBertForMaskedLM,
    ElectraConfig,
    ElectraForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    RobertaConfig,
    RobertaForMaskedLM,
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = """patient Patient denies chest pain no No fever the The history of present illness HISTORY PLAN plan
assessment Assessment cop CO exacerbation ex and with for in on is was mg daily aspirin metoprolol
pneumonia evidence shortness breath cough heart lung normal left right reports alert script img src
onerror""".split()
PIECES = ["##d", "##PD", "##ace", "##rb", "##ation", "##s", "##ed", "##ing", "##ly", "##er"]


def tiny_vocab() -> list[str]:
    chars = list(string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation)
    continuation = [f"##{c}" for c in string.ascii_lowercase + string.ascii_uppercase + string.digits]
    vocab: list[str] = []
    for token in SPECIALS + WORDS + PIECES + chars + continuation:
        if token not in vocab:
            vocab.append(token)
    return vocab


def write_tokenizer(folder: Path, lowercase: bool = True) -> None:
    (folder / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    BertTokenizer(vocab=str(folder / "vocab.txt"), do_lower_case=lowercase).save_pretrained(folder)


def bert_config(**overrides: object) -> BertConfig:
    fields = dict(vocab_size=len(tiny_vocab()), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=64, type_vocab_size=2)
    fields.update(overrides)
    return BertConfig(**fields)


def write_bert(folder: Path, head: str = "masked-lm", seed: int = 0, labels: tuple[str, ...] = ("NEG", "POS"),
               max_positions: int = 64, layout: str = "modern") -> Path:
    """A tiny BERT with the given head; ``layout="hub"`` mimics the published repository."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = bert_config(max_position_embeddings=max_positions)
    if head in {"token-classification", "sequence-classification"}:
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: index for index, label in enumerate(labels)}
    model_class = {"masked-lm": BertForMaskedLM, "token-classification": BertForTokenClassification,
                   "sequence-classification": BertForSequenceClassification, "encoder": BertModel}[head]
    model = model_class(config).eval()
    if layout == "hub":
        (folder / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
        bare = {key: value for key, value in config.to_dict().items()
                if key in {"attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size",
                           "initializer_range", "intermediate_size", "max_position_embeddings",
                           "num_attention_heads", "num_hidden_layers", "type_vocab_size", "vocab_size"}}
        (folder / "config.json").write_text(json.dumps(bare, indent=2))
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        return folder
    model.save_pretrained(folder, safe_serialization=True)
    write_tokenizer(folder)
    return folder


def write_family(folder: Path, family: str, seed: int = 0) -> Path:
    """A tiny masked-LM of another supported family (RoBERTa, DistilBERT, ELECTRA), or GPT-2."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    vocab_size = len(tiny_vocab())
    if family == "roberta":
        model = RobertaForMaskedLM(RobertaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=4, intermediate_size=64,
                                                 max_position_embeddings=66, pad_token_id=1))
    elif family == "distilbert":
        model = DistilBertForMaskedLM(DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=4,
                                                       hidden_dim=64, max_position_embeddings=64))
    elif family == "electra":
        model = ElectraForMaskedLM(ElectraConfig(vocab_size=vocab_size, embedding_size=16, hidden_size=32,
                                                 num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                                 max_position_embeddings=64))
    elif family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=64))
    else:
        raise ValueError(family)
    model.eval().save_pretrained(folder, safe_serialization=True)
    write_tokenizer(folder)
    return folder
