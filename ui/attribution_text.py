"""What the Attribution page says in words: method and grouping names, completeness and the verdict.

Strings only, made from result records; no Streamlit here.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from cbert_core.analyses.agreement import Verdict
from cbert_core.analyses.whole_note import NoteAttribution

METHOD_NAMES = {
    "integrated-gradients": "Integrated Gradients",
    "gradient-x-input": "Gradient × Input",
    "saliency": "Saliency (gradient norm)",
    "occlusion": "Leave one {group} out",
    "captum-integrated-gradients": "Integrated Gradients (captum, reference)",
    "deeplift": "DeepLift (captum)",
    "deeplift-shap": "DeepLiftShap (captum)",
    "gradient-shap": "GradientShap (captum)",
    "smoothgrad": "SmoothGrad: NoiseTunnel × Saliency (captum)",
    "smoothgrad-x-input": "NoiseTunnel × Input × Gradient (captum)",
    "smoothgrad-ig": "NoiseTunnel × Integrated Gradients (captum)",
    "shapley-sampling": "Shapley value sampling (captum)",
    "kernel-shap": "KernelSHAP (captum)",
    "lime": "LIME (captum)",
}
# The method picker's names do not change with the grouping: a multiselect keeps its choices by their shown name.
METHOD_CHOICES = {**METHOD_NAMES, "occlusion": "Leave one out (occlusion)"}
METHOD_HELP = (
    "Ours: Integrated Gradients (the default: the same numbers as captum's, about 2-3x faster), Gradient × Input "
    "and Saliency. Leave one out, Shapley, KernelSHAP and LIME remove whole groups (the 'Score by' choice): one "
    "section is one model run. captum's Integrated Gradients is the reference ours is checked against. DeepLift: "
    "captum's rescale rule applies only to ReLU-type modules, which a BERT layer has none of, so here it is "
    "gradient × (input − baseline). NoiseTunnel averages a gradient method over noisy copies of the note."
)
GROUP_NOUNS = {"piece": "word piece", "word": "word", "sentence": "sentence", "section": "section"}
GROUP_PLURALS = {"piece": "word pieces", "word": "words", "sentence": "sentences", "section": "sections"}


def method_name(method: str, grouping: str) -> str:
    """The method's name on the page ("Leave one section out" names the group it removes)."""
    return METHOD_NAMES[method].format(group=GROUP_NOUNS[grouping])


def completeness_text(found: NoteAttribution) -> str:
    """Whether the scores add up to the change in the prediction, per window and in total; "" when the
    method makes no such promise."""
    timing = f"{found.steps:,} {'steps' if found.completeness == 'window' else 'model runs'}, {found.seconds:.1f} s " \
             f"in {found.precision}."
    if found.completeness == "window" and len(found.windows) == 1:
        return (f"Convergence delta {found.delta:+.4f} ({found.relative_delta:.1%} of the score difference "
                f"{found.gap:+.3f}); {timing} A small delta means the scores add up to the prediction.")
    if found.completeness == "window":
        worst = int(np.nanargmax(np.abs(found.window_deltas) / np.maximum(np.abs(found.window_gaps), 1e-12)))
        return (f"Convergence delta over the {len(found.windows)} windows {found.delta:+.4f} "
                f"({found.relative_delta:.1%} of the total score difference {found.gap:+.3f}): each window's "
                f"scores are checked against the change in the whole note's score when that window alone becomes "
                f"baseline pieces (window {worst + 1} is the furthest off: {found.window_deltas[worst]:+.4f} of "
                f"{found.window_gaps[worst]:+.4f}). Pieces read by two windows are shown from the window where "
                f"they are most central, so the scores shown add up to {found.total:+.4f}. {timing}")
    if found.completeness == "note":
        return (f"Convergence delta {found.delta:+.4f}: the scores add up to {found.total:+.4f}, the score moves "
                f"{found.gap:+.3f} when every {GROUP_NOUNS[found.grouping]} is removed at once. {timing}")
    return ""


def scope_text(found: NoteAttribution, max_tokens: int) -> str:
    """What part of the note was explained."""
    if found.whole_note:
        return (f"The whole note: all {len(found.windows)} windows of at most {max_tokens} positions, each "
                f"explained with the other windows as the model read them. The score explained is the whole note's "
                f"{'mean probability over the windows' if found.target.kind == 'class' else 'similarity'}, "
                f"as the Predictions page shows it.")
    window = found.windows[0]
    return f"Window {window.index + 1} (pieces {window.start + 1:,}–{window.stop:,}): the part the model read."


def verdict_text(verdict: Verdict, names: Mapping[str, str], grouping: str, correlation: Mapping[str, float]) -> str:
    """One sentence on which explanation holds up on this note.

    Args:
        names: method -> name on the page; correlation: method -> its rank correlation with the best.
    """
    groups = GROUP_PLURALS[grouping]
    best = names[verdict.best]
    if not verdict.faithful:
        return (f"No explanation holds up on this note: removing the top {groups} of even the best one "
                f"({best}) lowers the prediction no more than keeping only them does. Read every picture here "
                f"with caution.")
    text = (f"On this note **{best}** holds up best: removing its top {groups} lowers the prediction by "
            f"{verdict.comprehensiveness:.3f} on average, keeping only them changes it by {verdict.sufficiency:.3f}.")
    if verdict.agreeing:
        text += " " + ", ".join(f"{names[m]} (ρ = {correlation[m]:.2f})" for m in verdict.agreeing) + \
            f" rank{'s' if len(verdict.agreeing) == 1 else ''} the {groups} like it."
    if verdict.disagreeing:
        text += " " + ", ".join(names[m] for m in verdict.disagreeing) + \
            f" rank{'s' if len(verdict.disagreeing) == 1 else ''} them differently: do not read " + \
            ("its" if len(verdict.disagreeing) == 1 else "their") + " picture as the reason for the prediction."
    return text
