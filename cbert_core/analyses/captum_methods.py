"""captum's attribution methods on the explained score, run through captum itself (not rewritten).

Gradient methods explain one window's word vectors with the other windows as the model read
them (:meth:`cbert_core.analyses.note_score.NoteScorer.with_window`); each returns a
:class:`~cbert_core.analyses.note_score.WindowRun`:

* ``captum-integrated-gradients``: ``IntegratedGradients`` (Gauss-Legendre, as ours; the reference
  our faster Integrated Gradients is checked against);
* ``deeplift``, ``deeplift-shap``: ``DeepLift`` / ``DeepLiftShap``. captum applies its rescale rule
  only at the activation modules it knows (ReLU, Tanh, Sigmoid, Softmax...). A BERT layer's GELU,
  LayerNorm and attention softmax are not among them, and the model is shared between sessions, so
  captum is given a wrapper that exposes none of the model's modules (its hooks would otherwise fire
  in every session's forward passes): on these models DeepLift is gradient x (input - baseline);
* ``gradient-shap``: ``GradientShap`` (random points between baselines and the input, with noise);
* ``smoothgrad``, ``smoothgrad-x-input``, ``smoothgrad-ig``: ``NoiseTunnel`` (SmoothGrad) around
  ``Saliency``, ``InputXGradient`` and ``IntegratedGradients``.

The baselines of the Shap methods are the available "no information" pieces ([PAD], [MASK],
[UNK]) in place of every word piece, [CLS], [SEP] and the target's [MASK] kept as in ours.
Noise has a standard deviation of ``noise`` times the window's word vectors' standard deviation.

Perturbation methods remove whole groups (words, sentences, sections: a feature mask) from the
covered pieces, replacing them by the baseline piece, and score the copies with
:meth:`~cbert_core.analyses.note_score.NoteScorer.scores_for_content` (only changed windows run):
``occlusion`` (``FeatureAblation``, one group at a time), ``shapley-sampling``
(``ShapleyValueSampling``), ``kernel-shap`` (``KernelShap``) and ``lime`` (``Lime`` with an
ordinary least-squares surrogate, like KernelShap's: captum's default Lasso sets every group to 0
at the size of a clinical note's effects). Each returns a value per covered piece, equal within a group.

Sampling methods run with a fixed seed (a forked RNG), so a result is the same every time it is computed.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import torch
from captum._utils.models.linear_model import SkLearnLinearRegression
from captum.attr import (
    DeepLift,
    DeepLiftShap,
    FeatureAblation,
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    Lime,
    NoiseTunnel,
    Saliency,
    ShapleyValueSampling,
)
from torch import nn

from cbert_core.analyses.note_score import MethodSettings, NoteScorer, WindowRun
from cbert_core.errors import TargetError
from cbert_core.progress import Progress, report
from cbert_core.run.forward import check_memory, fit_batch, word_vectors

GradientRunner = Callable[[NoteScorer, int, MethodSettings, Progress | None], WindowRun]
# (scorer, feature mask int64 [m] over the covered pieces, settings, progress) -> (float64 [m], evaluations)
GroupRunner = Callable[[NoteScorer, torch.Tensor, MethodSettings, Progress | None], tuple[np.ndarray, int]]
PERTURBATIONS_PER_CALL = 16  # perturbed copies handed to the scorer at once (it batches windows itself)
SEED = 0


class _WindowScore(nn.Module):
    """The explained score as a function of one window's word vectors [b, t, e] -> [b].

    Holds no module of the model (the scorer is a plain attribute), so captum's DeepLift hooks nothing
    that other sessions run through. Counts the rows it runs, for progress.
    """

    def __init__(self, scorer: NoteScorer, index: int, progress: Progress | None, expected: int, message: str):
        super().__init__()
        self.scorer, self.index, self.progress, self.expected, self.message = scorer, index, progress, expected, message
        self.rows = 0

    def forward(self, words: torch.Tensor) -> torch.Tensor:
        values = self.scorer.with_window(self.index, words)
        self.rows += words.shape[0]
        report(self.progress, self.rows / max(self.expected, 1), f"{self.message}: {self.rows} rows")
        return values


@contextlib.contextmanager
def seeded(device: torch.device | None = None) -> Iterator[None]:
    """A fixed seed for captum's sampling, without changing the RNG state other code sees afterwards.

    On a GPU, noise drawn there comes from the GPU's generator, which is forked and seeded too.
    """
    with torch.random.fork_rng(devices=[device] if device is not None and device.type == "cuda" else []):
        torch.manual_seed(SEED)
        yield


def _gradient_rows(scorer: NoteScorer, index: int, settings: MethodSettings, wanted: int, what: str) -> int:
    return fit_batch(scorer.loaded, scorer.inputs[index].shape[0], max(1, wanted), settings.memory_limit,
                     backward=True, what=what)


def baseline_distribution(scorer: NoteScorer, index: int) -> torch.Tensor:
    """[k, t, e]: the window with every piece replaced by each available "no information" piece.

    Raises:
        TargetError: fewer than two such pieces ([PAD], [MASK], [UNK]) in this model's vocabulary.
    """
    plan, resolved = scorer.plan, scorer.resolved[index]
    unk = scorer.loaded.tokenizer(plan.lowercase).unk_token_id
    pieces = list(dict.fromkeys(p for p in (plan.pad_id, plan.mask_id, unk) if p is not None))
    if len(pieces) < 2:
        raise TargetError("This method averages over several baselines, but the model's tokenizer has fewer than "
                          "two of [PAD], [MASK] and [UNK]. Choose another method.")
    ids = np.stack([np.where(resolved.fixed, resolved.ids, piece) for piece in pieces]).astype(np.int64)
    with torch.no_grad():
        return word_vectors(scorer.loaded, torch.from_numpy(ids).to(scorer.loaded.device))


def _noise(scorer: NoteScorer, index: int, settings: MethodSettings) -> float:
    return float(settings.noise * scorer.inputs[index].std())


def _summed(attributions: torch.Tensor) -> np.ndarray:
    """float64 [t] from captum's [1, t, e] attributions: summed over the embedding."""
    return attributions.detach().sum(-1)[0].double().cpu().numpy()


def captum_integrated_gradients(scorer: NoteScorer, index: int, settings: MethodSettings,
                                progress: Progress | None) -> WindowRun:
    rows = _gradient_rows(scorer, index, settings, settings.steps, "Integrated Gradients (captum)")
    forward = _WindowScore(scorer, index, progress, settings.steps, "Integrated Gradients (captum)")
    found = IntegratedGradients(forward).attribute(
        scorer.inputs[index][None].clone(), baselines=scorer.references[index][None].clone(), n_steps=settings.steps,
        method="gausslegendre", internal_batch_size=rows)
    return WindowRun(scores=_summed(found), evaluations=forward.rows, batch_size=rows)


def deeplift(scorer: NoteScorer, index: int, settings: MethodSettings, progress: Progress | None) -> WindowRun:
    check_memory(scorer.loaded, scorer.inputs[index].shape[0], 2, settings.memory_limit, backward=True,
                 what="DeepLift")
    forward = _WindowScore(scorer, index, progress, 2, "DeepLift")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum warns that it sets hooks (on nothing of the model, see above)
        found = DeepLift(forward).attribute(scorer.inputs[index][None].clone(),
                                            baselines=scorer.references[index][None].clone())
    return WindowRun(scores=_summed(found), evaluations=forward.rows, batch_size=2)


def deeplift_shap(scorer: NoteScorer, index: int, settings: MethodSettings, progress: Progress | None) -> WindowRun:
    baselines = baseline_distribution(scorer, index)
    rows = 2 * baselines.shape[0]
    check_memory(scorer.loaded, scorer.inputs[index].shape[0], rows, settings.memory_limit, backward=True,
                 what="DeepLiftShap")
    forward = _WindowScore(scorer, index, progress, rows, "DeepLiftShap")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = DeepLiftShap(forward).attribute(scorer.inputs[index][None].clone(), baselines=baselines)
    return WindowRun(scores=_summed(found), evaluations=forward.rows, batch_size=rows)


def gradient_shap(scorer: NoteScorer, index: int, settings: MethodSettings, progress: Progress | None) -> WindowRun:
    baselines = baseline_distribution(scorer, index)
    rows = _gradient_rows(scorer, index, settings, settings.samples, "GradientShap")
    forward = _WindowScore(scorer, index, progress, settings.samples, "GradientShap")
    explainer = GradientShap(forward)
    total = np.zeros(scorer.inputs[index].shape[0], np.float64)
    with seeded(scorer.loaded.device):
        for first in range(0, settings.samples, rows):  # GradientShap runs all its samples in one batch
            samples = min(rows, settings.samples - first)
            found = explainer.attribute(scorer.inputs[index][None].clone(), baselines=baselines, n_samples=samples,
                                        stdevs=_noise(scorer, index, settings))
            total += _summed(found) * samples
    return WindowRun(scores=total / settings.samples, evaluations=forward.rows, batch_size=rows)


def _smoothgrad(inner: Callable[[nn.Module], object], message: str, per_sample: Callable[[MethodSettings], int],
                **arguments: object) -> GradientRunner:
    """A NoiseTunnel (SmoothGrad) around ``inner``'s method."""

    def run(scorer: NoteScorer, index: int, settings: MethodSettings, progress: Progress | None) -> WindowRun:
        rows = _gradient_rows(scorer, index, settings, settings.samples * per_sample(settings), message)
        inner_rows = per_sample(settings)
        forward = _WindowScore(scorer, index, progress, settings.samples * inner_rows, message)
        extra = dict(arguments)
        if inner_rows > 1:  # Integrated Gradients inside: its steps are the batch, one noisy sample at a time
            extra.update(baselines=scorer.references[index][None].clone(), n_steps=settings.steps,
                         internal_batch_size=rows)
        with seeded(scorer.loaded.device):
            found = NoiseTunnel(inner(forward)).attribute(
                scorer.inputs[index][None].clone(), nt_type="smoothgrad", nt_samples=settings.samples,
                nt_samples_batch_size=max(1, rows // inner_rows), stdevs=_noise(scorer, index, settings), **extra)
        return WindowRun(scores=_summed(found), evaluations=forward.rows, batch_size=rows)

    return run


smoothgrad = _smoothgrad(Saliency, "SmoothGrad", lambda settings: 1, abs=True)
smoothgrad_x_input = _smoothgrad(InputXGradient, "SmoothGrad x Input", lambda settings: 1)
smoothgrad_integrated_gradients = _smoothgrad(IntegratedGradients, "SmoothGrad Integrated Gradients",
                                              lambda settings: settings.steps)


def _perturbation(make: Callable[[Callable[[torch.Tensor], torch.Tensor]], object], message: str,
                  expected: Callable[[int, MethodSettings], int], sampled: bool, **arguments: object) -> GroupRunner:
    """A captum perturbation method over the groups of ``mask``."""

    def run(scorer: NoteScorer, mask: torch.Tensor, settings: MethodSettings,
            progress: Progress | None) -> tuple[np.ndarray, int]:
        features = int(mask.max()) + 1 if mask.numel() else 0
        total = expected(features, settings)
        done = [0]

        def forward(contents: torch.Tensor) -> torch.Tensor:
            values = scorer.scores_for_content(contents)
            done[0] += contents.shape[0]
            report(progress, done[0] / max(total, 1), f"{message}: {done[0]:,} of about {total:,} copies")
            return values

        contents = torch.from_numpy(scorer.content_ids())[None].to(scorer.loaded.device)
        baseline = torch.from_numpy(scorer.content_baseline())[None].to(scorer.loaded.device)
        extra = {"n_samples": settings.samples} if sampled else {}
        with seeded(scorer.loaded.device):
            found = make(forward).attribute(contents, baselines=baseline, feature_mask=mask[None].to(scorer.loaded.device),
                                            perturbations_per_eval=PERTURBATIONS_PER_CALL, **extra, **arguments)
        return found.detach()[0].double().cpu().numpy(), done[0]

    return run


occlusion = _perturbation(FeatureAblation, "Leaving out each group", lambda g, s: g + 1, sampled=False)
shapley_sampling = _perturbation(ShapleyValueSampling, "Shapley value sampling",
                                 lambda g, s: s.samples * g + 1, sampled=True)
kernel_shap = _perturbation(KernelShap, "KernelSHAP", lambda g, s: s.samples + 1, sampled=True)
lime = _perturbation(lambda forward: Lime(forward, interpretable_model=SkLearnLinearRegression()), "LIME",
                     lambda g, s: s.samples + 1, sampled=True)
