"""Where things live inside a supported encoder: the map hooks are placed by.

BERT, RoBERTa and ELECTRA share one layout (``layer.attention.self.query`` ...);
DistilBERT has its own (``layer.attention.q_lin`` ...). Everything that places a
hook asks this module for the module object instead of spelling paths itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from cbert_core.errors import SUPPORTED_FAMILIES_TEXT, UnsupportedModelError

BERT_LAYOUT_FAMILIES = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra"})
DISTILBERT_FAMILIES = frozenset({"distilbert"})
SUPPORTED_FAMILIES = BERT_LAYOUT_FAMILIES | DISTILBERT_FAMILIES
# RoBERTa-style position ids start after the padding index, so two positions are unusable.
OFFSET_POSITION_FAMILIES = frozenset({"roberta", "xlm-roberta", "camembert"})


@dataclass(frozen=True, kw_only=True)
class LayerAnatomy:
    """The modules of one encoder layer that hooks attach to."""

    layer: nn.Module  # input: hidden [b, t, d]; output: hidden [b, t, d]
    self_attention: nn.Module  # output: (context-or-projected [b, t, d], weights [b, h, t, t])
    query: nn.Linear  # output [b, t, h * dh]
    key: nn.Linear  # output [b, t, h * dh]
    value: nn.Linear  # output [b, t, h * dh]
    attention_out_proj: nn.Linear  # input: concatenated head contexts [b, t, h * dh]
    attention_norm: nn.LayerNorm  # output: attention block result after residual + norm
    ffn_in: nn.Linear  # output: pre-activation [b, t, d_ff]
    ffn_out: nn.Linear  # input: activation [b, t, d_ff]; output: FFN update [b, t, d]
    output_norm: nn.LayerNorm  # output: the layer's result


@dataclass(frozen=True, kw_only=True)
class EmbeddingAnatomy:
    """The embedding layer's parts."""

    module: nn.Module
    word: nn.Embedding
    position: nn.Embedding | None  # None where positions are not learned embeddings
    token_type: nn.Embedding | None  # DistilBERT has no segment embeddings
    norm: nn.LayerNorm  # input: the sum of the parts [b, t, d_emb]
    projection: nn.Module | None = None  # ELECTRA's embeddings_project (d_emb -> d); None elsewhere

    @property
    def output(self) -> nn.Module:
        """The module whose output is the first layer's input [b, t, d] (the projection, else the norm)."""
        return self.projection if self.projection is not None else self.norm


@dataclass(frozen=True, kw_only=True)
class Anatomy:
    """An encoder's layout: family, embedding parts and one entry per layer."""

    family: str
    embeddings: EmbeddingAnatomy
    layers: tuple[LayerAnatomy, ...]
    num_heads: int
    head_dim: int


def model_family(model: nn.Module) -> str:
    """The ``model_type`` of a loaded transformers model, lower-case."""
    config = getattr(model, "config", None)
    return str(getattr(config, "model_type", "") or "").lower()


def check_supported(family: str) -> None:
    """Raise :class:`UnsupportedModelError` unless ``family`` can be traced."""
    if family not in SUPPORTED_FAMILIES:
        shown = family or "an unknown architecture"
        raise UnsupportedModelError(
            f"This checkpoint is {shown}, which the explorer cannot trace. "
            f"Supported: {SUPPORTED_FAMILIES_TEXT} (for example emilyalsentzer/Bio_ClinicalBERT)."
        )


def anatomy_of(model: nn.Module) -> Anatomy:
    """Locate the embedding and per-layer modules of ``model`` (with or without a head).

    Raises:
        UnsupportedModelError: the family is not supported or its layout is unexpected.
    """
    family = model_family(model)
    check_supported(family)
    base = getattr(model, "base_model", model)
    config = model.config
    try:
        if family in DISTILBERT_FAMILIES:
            return _distilbert_anatomy(base, config, family)
        return _bert_anatomy(base, config, family)
    except AttributeError as missing:
        raise UnsupportedModelError(
            f"The {family} checkpoint does not have the expected layer layout ({missing}). "
            f"Supported: {SUPPORTED_FAMILIES_TEXT}."
        ) from missing


def _bert_anatomy(base: nn.Module, config: object, family: str) -> Anatomy:
    emb = base.embeddings
    embeddings = EmbeddingAnatomy(
        module=emb,
        word=emb.word_embeddings,
        position=getattr(emb, "position_embeddings", None),
        token_type=getattr(emb, "token_type_embeddings", None),
        norm=emb.LayerNorm,
        projection=getattr(base, "embeddings_project", None),
    )
    layers = tuple(
        LayerAnatomy(
            layer=layer,
            self_attention=layer.attention.self,
            query=layer.attention.self.query,
            key=layer.attention.self.key,
            value=layer.attention.self.value,
            attention_out_proj=layer.attention.output.dense,
            attention_norm=layer.attention.output.LayerNorm,
            ffn_in=layer.intermediate.dense,
            ffn_out=layer.output.dense,
            output_norm=layer.output.LayerNorm,
        )
        for layer in base.encoder.layer
    )
    heads = int(config.num_attention_heads)
    return Anatomy(family=family, embeddings=embeddings, layers=layers, num_heads=heads,
                   head_dim=int(config.hidden_size) // heads)


def _distilbert_anatomy(base: nn.Module, config: object, family: str) -> Anatomy:
    emb = base.embeddings
    embeddings = EmbeddingAnatomy(
        module=emb,
        word=emb.word_embeddings,
        position=emb.position_embeddings,
        token_type=None,
        norm=emb.LayerNorm,
    )
    layers = tuple(
        LayerAnatomy(
            layer=layer,
            self_attention=layer.attention,
            query=layer.attention.q_lin,
            key=layer.attention.k_lin,
            value=layer.attention.v_lin,
            attention_out_proj=layer.attention.out_lin,
            attention_norm=layer.sa_layer_norm,
            ffn_in=layer.ffn.lin1,
            ffn_out=layer.ffn.lin2,
            output_norm=layer.output_layer_norm,
        )
        for layer in base.transformer.layer
    )
    heads = int(config.n_heads)
    return Anatomy(family=family, embeddings=embeddings, layers=layers, num_heads=heads,
                   head_dim=int(config.dim) // heads)


def usable_positions(config: object) -> int:
    """How many tokens (specials included) one forward pass can take.

    Uses ``config.max_position_embeddings``, never ``tokenizer.model_max_length``
    (a sentinel in many checkpoints). RoBERTa-style models lose two positions to
    their padding offset.
    """
    positions = int(getattr(config, "max_position_embeddings", 512))
    family = str(getattr(config, "model_type", "")).lower()
    if family in OFFSET_POSITION_FAMILIES:
        positions -= int(getattr(config, "pad_token_id", 1) or 1) + 1
    return positions
