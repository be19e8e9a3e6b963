"""Talking to the Hugging Face hub without ever hanging on it.

transformers retries an unreachable hub for about 48 s before it gives up; a
hospital network that drops packets would make the app look dead. Everything
here is bounded by a timeout measured in seconds, and does nothing at all when
``HF_HUB_OFFLINE`` is set.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from huggingface_hub import HfApi, snapshot_download, try_to_load_from_cache

DEFAULT_HUB_TIMEOUT_S = 2.0
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "vocab.json", "merges.txt", "added_tokens.json")


def hub_offline(env: Mapping[str, str] | None = None) -> bool:
    """Whether the user asked for no hub access (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    env = os.environ if env is None else env
    return any(str(env.get(name, "")).strip().lower() in {"1", "true", "yes", "on"}
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_endpoint(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return str(env.get("HF_ENDPOINT", "https://huggingface.co")).rstrip("/")


def hub_answers(repo_id: str, timeout_s: float = DEFAULT_HUB_TIMEOUT_S,
                env: Mapping[str, str] | None = None) -> bool:
    """True when the hub answers for ``repo_id`` within ``timeout_s`` seconds (DNS included).

    The request runs in a daemon thread joined with the timeout, so a resolver
    that blocks cannot hold the caller past the bound.
    """
    if hub_offline(env):
        return False
    url = f"{hub_endpoint(env)}/api/models/{repo_id}"
    answer: list[bool] = []

    def ask() -> None:
        try:
            request = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - fixed https host
                answer.append(200 <= response.status < 400)
        except (urllib.error.URLError, OSError, ValueError):
            answer.append(False)

    worker = threading.Thread(target=ask, name="cbert-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout_s)
    return bool(answer and answer[0])


def cached_snapshot(repo_id: str) -> Path | None:
    """The local cache folder of ``repo_id`` if its config and weights are cached, else None.

    Reads only the local Hugging Face cache; no network.
    """
    config = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(config, str):
        return None
    folder = Path(config).parent
    if any((folder / name).exists() for name in WEIGHT_FILES):
        return folder
    return None


def download_snapshot(repo_id: str, timeout_s: float = 30.0) -> Path:
    """Download what loading needs of ``repo_id`` (safetensors when the repo has them).

    Call only after :func:`hub_answers` said yes.
    """
    files = {sibling.rfilename for sibling in HfApi().model_info(repo_id, timeout=timeout_s).siblings or ()}
    weights = [name for name in WEIGHT_FILES if name in files]
    safetensors = [name for name in weights if "safetensors" in name]
    chosen = safetensors or weights
    patterns = ["config.json", *TOKENIZER_FILES, *chosen]
    if any(name.endswith(".index.json") for name in chosen):
        stem = "model" if safetensors else "pytorch_model"
        patterns.append(f"{stem}-*")
    return Path(snapshot_download(repo_id, allow_patterns=patterns, etag_timeout=timeout_s))
