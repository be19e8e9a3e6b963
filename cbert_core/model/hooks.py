"""The only place that registers hooks on a model.

Hooks are global state on a module that every browser session shares, so:

* they are registered only inside context managers and removed in ``finally``,
  also when the forward pass raises;
* each hook acts only for the thread that registered it, so two sessions that
  run the same model at once never see (or knock out) each other's heads.

Four context managers: :func:`capture` records activations at named sites,
:func:`knockout` zeroes chosen attention heads, :func:`patch_activations` writes stored
activations into chosen batch rows, positions and heads (activation patching), and
:func:`observe_attention` hands the scores and weights the explorer's attention kernel computes
to a callback (for reductions such as per-head statistics, without copying the weights).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from cbert_core.model.architecture import Anatomy

# Sites that capture() understands. Per-layer sites hold one array per layer.
EMBEDDING_SITES = frozenset({"embeddings.word", "embeddings.position", "embeddings.token_type", "embeddings.sum"})
LAYER_SITES = frozenset({
    "hidden",  # layer inputs and the last output: [layer + 1] x [b, t, d]
    "attention",  # softmax weights [b, h, q, k] (float16)
    "query", "key", "value",  # projections [b, t, h * dh]
    "context",  # concatenated head outputs before the output projection [b, t, h * dh]
    "attention_update",  # output projection, before residual and norm [b, t, d]
    "attention_out",  # after residual and norm [b, t, d]
    "ffn_activation",  # [b, t, d_ff]
    "ffn_update",  # second FFN linear, before residual and norm [b, t, d]
})
ALL_SITES = EMBEDDING_SITES | LAYER_SITES


@dataclass
class Recording:
    """What one :func:`capture` block saw, per site, in call order.

    ``tensors[site]`` is a list with one detached copy per hook call: for
    per-layer sites that is one per layer per forward pass, in layer order.
    """

    tensors: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    # Optional preallocated outputs: hook call i writes buffers[site][i] directly,
    # converting dtype on the way, which saves a copy of every large array.
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    filled: dict[str, int] = field(default_factory=dict)
    split: dict[str, int] = field(default_factory=dict)  # site -> heads, for sites reserved split per head

    def reserve(self, site: str, shape: tuple[int, ...], dtype: torch.dtype,
                out: torch.Tensor | None = None, heads: int | None = None) -> None:
        """Preallocate ``site``'s output: ``shape[0]`` hook calls of ``shape[1:]`` each.

        ``out``: a caller's tensor of that shape and dtype to fill instead (reused scratch).
        ``heads``: store the site's [b, t, heads * head_dim] outputs split per head, as [b, heads, t, head_dim]
        (``shape[1:]`` in that layout); the transposing copy is the one the hook makes anyway.
        """
        if out is not None and (tuple(out.shape) != tuple(shape) or out.dtype != dtype):
            raise ValueError(f"reserve: out has shape {tuple(out.shape)} {out.dtype}, expected {shape} {dtype}")
        self.buffers[site] = torch.empty(shape, dtype=dtype) if out is None else out
        self.filled[site] = 0
        if heads is not None:
            self.split[site] = heads

    def store(self, site: str, tensor: torch.Tensor, dtype: torch.dtype) -> None:
        buffer = self.buffers.get(site)
        heads = self.split.get(site)
        if heads is not None:
            tensor = tensor.unflatten(-1, (heads, -1)).transpose(-3, -2)  # [b, t, h * d] -> [b, h, t, d]
        if buffer is not None and self.filled[site] < buffer.shape[0] and buffer.shape[1:] == tensor.shape:
            buffer[self.filled[site]].copy_(tensor.detach())
            self.filled[site] += 1
            return
        self.tensors.setdefault(site, []).append(_detached_copy(tensor, dtype))

    def take(self, site: str) -> list[torch.Tensor]:
        """Remove and return what was recorded at ``site`` (empty list if nothing)."""
        buffer = self.buffers.pop(site, None)
        if buffer is not None:
            return list(buffer[: self.filled.pop(site)])
        return self.tensors.pop(site, [])

    def take_stacked(self, site: str) -> np.ndarray:
        """Remove what was recorded at ``site``, stacked on a new first axis, as numpy."""
        buffer = self.buffers.pop(site, None)
        if buffer is not None:
            count = self.filled.pop(site)
            return buffer[:count].numpy()
        # torch.stack and torch's float16 conversion are several times faster than numpy's.
        return torch.stack(self.take(site)).numpy()

    def clear(self) -> None:
        self.tensors.clear()
        self.buffers.clear()
        self.filled.clear()
        self.split.clear()


def _detached_copy(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.detach().to(device="cpu", dtype=dtype, copy=True)


def _for_this_thread(owner: int, fn: Callable[..., object]) -> Callable[..., object]:
    """Wrap a hook so it does nothing when another thread runs the module."""

    def hook(*args: object) -> object:
        if threading.get_ident() != owner:
            return None
        return fn(*args)

    hook.cbert_hook = True  # type: ignore[attr-defined]  # lets hook_count tell ours from others
    return hook


AttentionObserver = Callable[[torch.Tensor, torch.Tensor], None]
_ATTENTION_OBSERVERS = threading.local()  # .observer: this thread's AttentionObserver, if any


@contextmanager
def observe_attention(observer: AttentionObserver) -> Iterator[None]:
    """Call ``observer(scores, weights)`` for each attention the explorer's kernel computes in this thread.

    ``scores`` are the scaled (and masked) q.k^T, ``weights`` their softmax, both [batch, head, q, k], in
    layer order within a forward pass (:func:`cbert_core.model.attention_kernel.explorer_attention`). The
    kernel needs the scores no more after the call, so the observer may overwrite them; never the weights.
    Other threads running the same model are not observed; the previous observer is restored on exit.
    """
    previous = getattr(_ATTENTION_OBSERVERS, "observer", None)
    _ATTENTION_OBSERVERS.observer = observer
    try:
        yield
    finally:
        _ATTENTION_OBSERVERS.observer = previous


def attention_observer() -> AttentionObserver | None:
    """The observer :func:`observe_attention` set for this thread, or None."""
    return getattr(_ATTENTION_OBSERVERS, "observer", None)


# torch hands out hook ids from an unlocked class counter; registering from two
# threads at once can issue one id twice. Our registrations and removals take turns.
_REGISTRY_LOCK = threading.RLock()


@contextmanager
def _registered(handles: list[torch.utils.hooks.RemovableHandle]) -> Iterator[None]:
    try:
        yield
    finally:
        with _REGISTRY_LOCK:
            for handle in handles:
                handle.remove()
            handles.clear()


@contextmanager
def capture(anatomy: Anatomy, sites: Iterable[str]) -> Iterator[Recording]:
    """Record activations at ``sites`` during forward passes run inside the block.

    Args:
        anatomy: where the modules are (from :func:`cbert_core.model.architecture.anatomy_of`).
        sites: names from :data:`ALL_SITES`.

    Yields:
        A :class:`Recording` that fills as forward passes run in this thread.
    """
    wanted = frozenset(sites)
    unknown = wanted - ALL_SITES
    if unknown:
        raise ValueError(f"unknown capture sites: {sorted(unknown)}")
    recording = Recording()
    owner = threading.get_ident()
    handles: list[torch.utils.hooks.RemovableHandle] = []

    def store(site: str, tensor: torch.Tensor, dtype: torch.dtype = torch.float32) -> None:
        recording.store(site, tensor, dtype)

    def on_output(module: nn.Module, site: str, pick: int | None = None,
                  dtype: torch.dtype = torch.float32) -> None:
        def hook(_mod: nn.Module, _args: tuple, output: object) -> None:
            store(site, output[pick] if pick is not None else output, dtype)  # type: ignore[index]
        with _REGISTRY_LOCK:
            handles.append(module.register_forward_hook(_for_this_thread(owner, hook)))

    def on_input(module: nn.Module, site: str) -> None:
        def hook(_mod: nn.Module, args: tuple) -> None:
            store(site, args[0])
        with _REGISTRY_LOCK:
            handles.append(module.register_forward_pre_hook(_for_this_thread(owner, hook)))

    with _registered(handles):
        emb = anatomy.embeddings
        if "embeddings.word" in wanted:
            on_output(emb.word, "embeddings.word")
        if "embeddings.position" in wanted and emb.position is not None:
            on_output(emb.position, "embeddings.position")
        if "embeddings.token_type" in wanted and emb.token_type is not None:
            on_output(emb.token_type, "embeddings.token_type")
        if "embeddings.sum" in wanted:
            on_input(emb.norm, "embeddings.sum")
        for index, layer in enumerate(anatomy.layers):
            if "hidden" in wanted:
                on_input(layer.layer, "hidden")
                if index == len(anatomy.layers) - 1:
                    on_output(layer.output_norm, "hidden")
            if "attention" in wanted:
                on_output(layer.self_attention, "attention", pick=1, dtype=torch.float16)
            for site, module in (("query", layer.query), ("key", layer.key), ("value", layer.value),
                                 ("attention_update", layer.attention_out_proj),
                                 ("attention_out", layer.attention_norm),
                                 ("ffn_update", layer.ffn_out)):
                if site in wanted:
                    on_output(module, site)
            if "context" in wanted:
                on_input(layer.attention_out_proj, "context")
            if "ffn_activation" in wanted:
                on_input(layer.ffn_out, "ffn_activation")
        yield recording


HeadSet = frozenset[tuple[int, int]]


def normalize_heads(heads: Iterable[tuple[int, int]], num_layers: int, num_heads: int) -> HeadSet:
    """Validate (layer, head) pairs and return them as a frozenset.

    Raises:
        ValueError: a layer or head index outside the model.
    """
    result = frozenset((int(layer), int(head)) for layer, head in heads)
    for layer, head in result:
        if not (0 <= layer < num_layers and 0 <= head < num_heads):
            raise ValueError(f"head ({layer}, {head}) is outside the model's {num_layers} x {num_heads} heads")
    return result


def whole_layers(layers: Iterable[int], num_heads: int) -> HeadSet:
    """Every head of the given layers, as (layer, head) pairs."""
    return frozenset((int(layer), head) for layer in layers for head in range(num_heads))


@contextmanager
def knockout(anatomy: Anatomy, heads: Iterable[tuple[int, int]]) -> Iterator[HeadSet]:
    """Zero the chosen heads' outputs for forward passes run in this thread.

    A head is knocked out by zeroing its slice of the concatenated context vector
    just before the attention output projection (``head_mask`` is ignored by
    transformers 5, so it is not used). Gradients flow through the masking.

    Args:
        anatomy: the model's layout.
        heads: (layer, head) pairs; an empty set changes nothing.

    Yields:
        The validated set of knocked-out heads.
    """
    chosen = normalize_heads(heads, len(anatomy.layers), anatomy.num_heads)
    owner = threading.get_ident()
    handles: list[torch.utils.hooks.RemovableHandle] = []
    by_layer: dict[int, list[int]] = {}
    for layer, head in chosen:
        by_layer.setdefault(layer, []).append(head)

    def make_hook(head_indices: list[int]) -> Callable[..., object]:
        def hook(_mod: nn.Module, args: tuple) -> tuple:
            context = args[0]  # [b, t, h * dh]
            keep = torch.ones(anatomy.num_heads, 1, dtype=context.dtype, device=context.device)
            keep[head_indices] = 0
            shaped = context.unflatten(-1, (anatomy.num_heads, anatomy.head_dim))  # [b, t, h, dh]
            return ((shaped * keep).flatten(-2), *args[1:])
        return hook

    with ExitStack() as stack:
        stack.enter_context(_registered(handles))
        for layer, head_indices in sorted(by_layer.items()):
            module = anatomy.layers[layer].attention_out_proj
            with _REGISTRY_LOCK:
                handles.append(module.register_forward_pre_hook(_for_this_thread(owner, make_hook(head_indices))))
        yield chosen


# Sites :func:`patch_activations` can write, per layer.
PATCH_SITES = frozenset({
    "hidden",  # the layer's input, the residual stream [b, t, d]
    "attention_update",  # the attention block's output projection, before residual and norm [b, t, d]
    "ffn_update",  # the feed-forward block's output, before residual and norm [b, t, d]
    "context",  # one head's output: its slice of the context before the output projection [b, t, dh]
})


@dataclass(frozen=True, kw_only=True)
class ActivationPatch:
    """Values to write at one site of one layer: ``values[i]`` goes to batch row ``rows[i]``, position
    ``positions[i]`` (and head ``heads[i]`` at the ``context`` site)."""

    site: str
    layer: int
    rows: torch.Tensor  # int64 [n]
    positions: torch.Tensor  # int64 [n]
    values: torch.Tensor  # [n, d], or [n, dh] at the context site
    heads: torch.Tensor | None = None  # int64 [n], the context site only

    def __post_init__(self) -> None:
        if self.site not in PATCH_SITES:
            raise ValueError(f"unknown patch site {self.site!r}; choose one of {sorted(PATCH_SITES)}")
        count = self.rows.shape[0]
        if self.positions.shape != (count,) or self.values.shape[0] != count or self.values.ndim != 2:
            raise ValueError("ActivationPatch needs rows [n], positions [n] and values [n, width]")
        if (self.site == "context") != (self.heads is not None and self.heads.shape == (count,)):
            raise ValueError("heads [n] are given exactly for the context site")


def write_patch(tensor: torch.Tensor, patch: ActivationPatch, num_heads: int) -> torch.Tensor:
    """A copy of ``tensor`` ([b, t, width]) with ``patch`` written in; the tensor itself is left alone.

    The one replacement rule: the patching hooks apply it, and a caller that starts a pass at a
    layer applies it to that layer's input (the residual stream) the same way.

    Raises:
        IndexError: a row or position outside ``tensor`` (the pass computed fewer positions).
    """
    patched = tensor.clone()
    values = patch.values.to(dtype=tensor.dtype)
    if patch.heads is None:
        patched[patch.rows, patch.positions] = values
        return patched
    shaped = patched.unflatten(-1, (num_heads, tensor.shape[-1] // num_heads))  # [b, t, h, dh] (a view)
    shaped[patch.rows, patch.positions, patch.heads] = values
    return patched


@contextmanager
def patch_activations(anatomy: Anatomy, patches: Iterable[ActivationPatch]) -> Iterator[tuple[ActivationPatch, ...]]:
    """Write stored activations into forward passes run in this thread (activation patching).

    Each patch replaces, in its batch rows, the activation at a site of one layer: the layer's
    input (``hidden``: a forward hook on the module whose output it is, the previous layer's last
    norm or the embeddings' output), the attention block's or the feed-forward block's update
    (forward hooks on their output projections) or one head's slice of the context (a forward
    pre-hook on the attention output projection, where :func:`knockout` acts too). The positions
    must be among those the hooked module computes: a pass that computes the last layer at a few
    rows only cannot be patched there at other positions.

    Args:
        anatomy: the model's layout.
        patches: what to write; several patches may share a site and layer (applied in order).

    Yields:
        The patches, as given.
    """
    chosen = tuple(patches)
    owner = threading.get_ident()
    handles: list[torch.utils.hooks.RemovableHandle] = []
    grouped: dict[tuple[str, int], list[ActivationPatch]] = {}
    for patch in chosen:
        if not 0 <= patch.layer < len(anatomy.layers):
            raise ValueError(f"layer {patch.layer} is outside the model's {len(anatomy.layers)} layers")
        grouped.setdefault((patch.site, patch.layer), []).append(patch)

    def apply(tensor: torch.Tensor, group: list[ActivationPatch]) -> torch.Tensor:
        for patch in group:
            tensor = write_patch(tensor, patch, anatomy.num_heads)
        return tensor

    def on_output(group: list[ActivationPatch]) -> Callable[..., object]:
        def hook(_mod: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
            return apply(output, group)
        return hook

    def on_input(group: list[ActivationPatch]) -> Callable[..., object]:
        def hook(_mod: nn.Module, args: tuple) -> tuple:
            return (apply(args[0], group), *args[1:])  # args[0]: context [b, t, h * dh]
        return hook

    with ExitStack() as stack:
        stack.enter_context(_registered(handles))
        for (site, layer), group in sorted(grouped.items(), key=lambda item: (item[0][1], item[0][0])):
            parts = anatomy.layers[layer]
            if site == "hidden":
                module = anatomy.embeddings.output if layer == 0 else anatomy.layers[layer - 1].output_norm
                register, hook = module.register_forward_hook, on_output(group)
            elif site == "context":
                register, hook = parts.attention_out_proj.register_forward_pre_hook, on_input(group)
            else:
                module = parts.attention_out_proj if site == "attention_update" else parts.ffn_out
                register, hook = module.register_forward_hook, on_output(group)
            with _REGISTRY_LOCK:
                handles.append(register(_for_this_thread(owner, hook)))
        yield chosen


def hook_count(model: nn.Module, ours_only: bool = True) -> int:
    """Number of hooks registered on ``model`` or its modules.

    Args:
        ours_only: count only hooks placed by this module (transformers installs
            permanent output-capturing hooks of its own the first time anyone asks
            it for ``output_attentions``).
    """
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    # Other sessions' threads register and remove hooks on the shared model while this counts (for the
    # status line), and not only under _REGISTRY_LOCK (captum and transformers place their own). So each
    # table is copied first: tuple() copies it in C without letting another thread in, where Python code
    # between two items of a live iteration let one in ("OrderedDict mutated during iteration").
    hooks = [hook for module in model.modules() for name in names
             for hook in tuple((getattr(module, name, None) or {}).values())]
    return sum(1 for hook in hooks if not ours_only or getattr(hook, "cbert_hook", False))
