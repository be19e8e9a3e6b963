"""Activation patching between minimal pairs: the hooks, the pair's alignment, the invariants of the scans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertForMaskedLM

from cbert_core.analyses.counterfactual import apply_edit
from cbert_core.analyses.minimal_pair import edited_copy, make_pair, negation_flip
from cbert_core.analyses.patching import (
    SCANS,
    PatchRun,
    first_changed_position,
    one_run_at_a_time,
    patch_pair,
    patched_scores,
    record_run,
    scan_runs,
    top_heads,
)
from cbert_core.analyses.targets import class_target, masked_token_target, similarity_target
from cbert_core.errors import CbertError, TargetError
from cbert_core.model.hooks import ActivationPatch, hook_count, patch_activations
from cbert_core.model.loading import LoadedModel, load_model
from cbert_core.run.forward import embed, run_encoder, word_vectors
from cbert_core.run.plan import RunOptions, plan_note
from notes import LONG_NOTE
from tiny_models import bert_config, write_family, write_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLEAN = "The patient denies chest pain and [MASK] fever."
EDITED = "The patient reports chest pain and [MASK] fever."


@pytest.fixture(scope="module")
def sharp(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A tiny 3-layer masked LM with large random weights, so that one edited word moves the target clearly."""
    folder = tmp_path_factory.mktemp("sharp") / "mlm"
    torch.manual_seed(0)
    BertForMaskedLM(bert_config(num_hidden_layers=3, initializer_range=0.3)).eval().save_pretrained(folder)
    write_tokenizer(folder)
    return load_model(str(folder))


def _runs(loaded: LoadedModel, text: str = CLEAN, edited: str = EDITED, word: str = "chest"):
    plan = plan_note(loaded, text, RunOptions())
    target = masked_token_target(loaded, word)
    pair = make_pair(loaded, plan, edited, target)
    clean = record_run(loaded, pair.clean_ids, target, pair.clean_row)
    corrupted = record_run(loaded, pair.corrupted_ids, pair.corrupted_target, pair.corrupted_row)
    return plan, target, pair, clean, corrupted


def _every_scan_run(loaded: LoadedModel, pair, direction: str) -> list[PatchRun]:
    layers, heads = len(loaded.anatomy.layers), loaded.anatomy.num_heads
    position = first_changed_position(pair)
    return [run for name in SCANS
            for run in scan_runs(name, pair, direction, layers, heads, frozenset(), position)[0]]


# ---------------------------------------------------------------- the hooks

def test_patch_hooks_write_the_stored_values_and_are_always_removed(tiny: LoadedModel) -> None:
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    with torch.inference_mode():
        plain = run_encoder(tiny, embed(tiny, word_vectors(tiny, ids)))
        inputs: list[torch.Tensor] = []
        run_encoder(tiny, embed(tiny, word_vectors(tiny, ids)), layer_inputs=inputs)
        values = torch.full((1, inputs[1].shape[-1]), 3.0)
        seen: list[torch.Tensor] = []
        patch = ActivationPatch(site="hidden", layer=1, rows=torch.tensor([0]), positions=torch.tensor([2]),
                                values=values)
        with patch_activations(tiny.anatomy, [patch]):
            assert hook_count(tiny.model) > 0
            patched = run_encoder(tiny, embed(tiny, word_vectors(tiny, ids)), layer_inputs=seen)
        assert torch.equal(seen[1][0, 2], values[0])  # layer 2's input at position 2 is the stored value
        assert torch.equal(seen[1][0, 1], inputs[1][0, 1])  # other positions untouched
        assert not torch.allclose(patched, plain)
        assert hook_count(tiny.model) == 0
        with pytest.raises(RuntimeError), patch_activations(tiny.anatomy, [patch]):
            raise RuntimeError("a failing run")
        assert hook_count(tiny.model) == 0
        assert torch.equal(run_encoder(tiny, embed(tiny, word_vectors(tiny, ids))), plain)


def test_a_head_patch_writes_only_that_head_slice(tiny: LoadedModel) -> None:
    ids = torch.tensor([[2, 5, 6, 7, 3]])
    head_dim = tiny.anatomy.head_dim
    seen: list[torch.Tensor] = []
    hook = tiny.anatomy.layers[0].attention_out_proj.register_forward_hook(  # sees the input after pre-hooks
        lambda _m, args, _out: seen.append(args[0].clone()))
    try:
        with torch.inference_mode():
            run_encoder(tiny, embed(tiny, word_vectors(tiny, ids)))
            patch = ActivationPatch(site="context", layer=0, rows=torch.tensor([0]), positions=torch.tensor([1]),
                                    values=torch.ones((1, head_dim)), heads=torch.tensor([2]))
            with patch_activations(tiny.anatomy, [patch]):
                run_encoder(tiny, embed(tiny, word_vectors(tiny, ids)))
    finally:
        hook.remove()
    before, after = seen[0][0], seen[-1][0]  # [t, h * dh]
    changed = (before != after).any(0)  # [h * dh]
    assert changed[2 * head_dim:3 * head_dim].all() and changed.sum() == head_dim
    assert (before[[0, 2, 3, 4]] == after[[0, 2, 3, 4]]).all()


def test_malformed_patches_are_refused(tiny: LoadedModel) -> None:
    with pytest.raises(ValueError):
        ActivationPatch(site="nowhere", layer=0, rows=torch.tensor([0]), positions=torch.tensor([0]),
                        values=torch.zeros((1, 32)))
    with pytest.raises(ValueError):  # a head patch needs its heads
        ActivationPatch(site="context", layer=0, rows=torch.tensor([0]), positions=torch.tensor([0]),
                        values=torch.zeros((1, 8)))
    with pytest.raises(ValueError), patch_activations(tiny.anatomy, [ActivationPatch(
            site="hidden", layer=9, rows=torch.tensor([0]), positions=torch.tensor([0]), values=torch.zeros((1, 32)))]):
        pass
    assert hook_count(tiny.model) == 0


# ---------------------------------------------------------------- the invariants

@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_patching_every_position_of_a_layer_restores_all_of_the_difference(sharp: LoadedModel, direction: str) -> None:
    _plan, target, pair, clean, corrupted = _runs(sharp)
    assert pair.one_to_one
    base, source = (corrupted, clean) if direction == "denoising" else (clean, corrupted)
    every = np.arange(pair.positions)
    layers = len(sharp.anatomy.layers)
    # "hidden" at layer L is the input of layer L, the output of the layer before (the embeddings for L = 0).
    runs = [PatchRun(site="hidden", layer=layer, base_positions=every, source_positions=every)
            for layer in range(layers)]
    base_target = pair.corrupted_target if direction == "denoising" else target
    scores = patched_scores(sharp, base, source, runs, base_target)
    share = (scores - base.score) / (source.score - base.score)
    assert abs(clean.score - corrupted.score) > 0.1
    np.testing.assert_allclose(share, 1.0, atol=1e-4)


def test_patching_nothing_moves_nothing(sharp: LoadedModel) -> None:
    _plan, _target, pair, clean, corrupted = _runs(sharp)
    nothing = np.zeros(0, np.int64)
    runs = [PatchRun(site=site, layer=layer, base_positions=nothing, source_positions=nothing,
                     head=0 if site == "context" else -1)
            for site in ("hidden", "attention_update", "ffn_update", "context") for layer in range(3)]
    scores = patched_scores(sharp, corrupted, clean, runs, pair.corrupted_target)
    np.testing.assert_allclose((scores - corrupted.score) / (clean.score - corrupted.score), 0.0, atol=1e-5)


def test_patching_the_corrupted_run_with_its_own_activations_changes_nothing(sharp: LoadedModel) -> None:
    _plan, _target, pair, clean, corrupted = _runs(sharp)
    runs = _every_scan_run(sharp, pair, "denoising")
    assert len(runs) > 50
    scores = patched_scores(sharp, corrupted, corrupted, runs, pair.corrupted_target)
    np.testing.assert_allclose(scores, corrupted.score, atol=1e-5)
    moved = patched_scores(sharp, corrupted, clean, runs, pair.corrupted_target)
    assert np.nanmax(np.abs(moved - corrupted.score)) > 0.05  # the same runs from the clean version do move it


@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_batched_scans_equal_one_forward_per_patch_whatever_the_batch_size(sharp: LoadedModel, direction: str) -> None:
    _plan, target, pair, clean, corrupted = _runs(sharp)
    base, source = (corrupted, clean) if direction == "denoising" else (clean, corrupted)
    base_target = pair.corrupted_target if direction == "denoising" else target
    runs = _every_scan_run(sharp, pair, direction)
    plain = one_run_at_a_time(sharp, base, source, runs, base_target)
    for batch_size in (1, 7, None):
        batched = patched_scores(sharp, base, source, runs, base_target, batch_size=batch_size)
        np.testing.assert_allclose(batched, plain, atol=2e-5)
    assert hook_count(sharp.model) == 0


def test_patch_pair_results_do_not_depend_on_batch_size_or_memory_bound(sharp: LoadedModel) -> None:
    plan = plan_note(sharp, CLEAN, RunOptions())
    target = masked_token_target(sharp, "chest")
    wide = patch_pair(sharp, plan, EDITED, target, scans=SCANS)
    narrow = patch_pair(sharp, plan, EDITED, target, scans=SCANS, batch_size=2)
    assert narrow.batch_rows == 2 and wide.batch_rows > 2
    tight = patch_pair(sharp, plan, EDITED, target, scans=("heads",), memory_limit=40_000)
    assert tight.batch_rows < wide.batch_rows
    for scan in wide.scans:
        np.testing.assert_allclose(narrow.scan(scan.name).share, scan.share, atol=1e-4)
    np.testing.assert_allclose(tight.scan("heads").share, wide.scan("heads").share, atol=1e-4)
    residual = wide.scan("residual")
    assert residual.share.shape == (3, wide.pair.positions)
    assert wide.scan("heads").share.shape == (3, 4)
    changed = first_changed_position(wide.pair)
    assert wide.pair.clean_tokens[changed] == "denies"
    np.testing.assert_allclose(residual.share[0, changed], 1.0, atol=1e-4)  # the only word that differs at the start
    untouched = np.delete(np.arange(wide.pair.positions), changed)
    np.testing.assert_allclose(residual.share[0, untouched], 0.0, atol=1e-5)
    assert [(layer, head) for layer, head, _share in top_heads(wide, 2)] == [
        tuple(int(i) for i in np.unravel_index(j, (3, 4))) for j in np.argsort(-wide.scan("heads").share, axis=None)[:2]]


def test_knocked_out_heads_are_not_patched_and_change_the_runs(sharp: LoadedModel) -> None:
    target = masked_token_target(sharp, "chest")
    intact = patch_pair(sharp, plan_note(sharp, CLEAN, RunOptions()), EDITED, target, scans=("heads",))
    knocked = patch_pair(sharp, plan_note(sharp, CLEAN, RunOptions(knocked_out=frozenset({(1, 2)}))), EDITED,
                         target, scans=("heads",))
    assert np.isnan(knocked.scan("heads").share[1, 2]) and np.isfinite(intact.scan("heads").share[1, 2])
    assert knocked.effect.clean_score != pytest.approx(intact.effect.clean_score, abs=1e-6)


# ---------------------------------------------------------------- the pair

def test_negation_flip_defaults() -> None:
    assert edited_copy("Patient denies chest pain.", negation_flip("Patient denies chest pain.")) == \
        "Patient reports chest pain."
    assert edited_copy("No fever today.", negation_flip("No fever today.")) == "fever today."
    assert edited_copy("Denies fever.", negation_flip("Denies fever.")) == "Reports fever."
    assert negation_flip("Fever and cough.") is None


def test_a_removed_word_is_aligned_by_word_and_reported_without_partner(sharp: LoadedModel) -> None:
    plan = plan_note(sharp, "No fever, patient reports [MASK] pain.", RunOptions())
    target = masked_token_target(sharp, "chest")
    pair = make_pair(sharp, plan, "fever, patient reports [MASK] pain.", target)
    assert not pair.one_to_one
    assert [pair.clean_tokens[p] for p in pair.unpartnered] == ["no"]
    assert pair.corrupted_only.size == 0
    partnered = np.flatnonzero(pair.partner >= 0)
    assert [pair.clean_tokens[p] for p in partnered] == [pair.corrupted_tokens[pair.partner[p]] for p in partnered]
    result = patch_pair(sharp, plan, "fever, patient reports [MASK] pain.", target, scans=("residual", "heads_at"))
    residual = result.scan("residual").share
    assert np.isnan(residual[:, pair.unpartnered]).all() and np.isfinite(residual[:, partnered]).all()
    assert result.pair.partner[result.position] >= 0  # the per-head scan defaults to a position both share


def test_a_word_of_another_length_leaves_its_pieces_unpartnered_in_both(sharp: LoadedModel) -> None:
    plan = plan_note(sharp, "Patient denies [MASK] pain.", RunOptions())
    pair = make_pair(sharp, plan, "Patient zzqx [MASK] pain.", masked_token_target(sharp, "chest"))
    assert pair.unpartnered.size == 1 and pair.corrupted_only.size > 1  # "denies" vs z ##z ##q ##x
    assert pair.clean_tokens[pair.unpartnered[0]] == "denies"


def test_an_identical_pair_is_a_clear_message(sharp: LoadedModel) -> None:
    plan = plan_note(sharp, CLEAN, RunOptions())
    with pytest.raises(TargetError, match="nothing|no difference"):
        patch_pair(sharp, plan, CLEAN, masked_token_target(sharp, "chest"))
    with pytest.raises(TargetError, match="no difference"):  # only spacing changes
        patch_pair(sharp, plan, CLEAN.replace("denies ", "denies  "), masked_token_target(sharp, "chest"))


def test_an_edit_outside_the_note_is_refused() -> None:
    with pytest.raises(TargetError, match="inside the note"):
        apply_edit("No fever.", 5, 40, "x")
    with pytest.raises(TargetError, match="inside the note"):
        apply_edit("No fever.", 3, 3, "x")


def test_a_target_the_head_cannot_score_is_a_message(sharp: LoadedModel, bundled: LoadedModel) -> None:
    with pytest.raises(CbertError):
        class_target(sharp, "POS")
    plan = plan_note(bundled, "Patient denies chest pain.", RunOptions())
    with pytest.raises(CbertError):
        patch_pair(bundled, plan, "Patient reports chest pain.", masked_token_target(bundled, "pain"))


def test_a_similarity_target_patches_every_row(bundled: LoadedModel) -> None:
    plan = plan_note(bundled, "Patient denies chest pain.", RunOptions())
    target = similarity_target(bundled, "chest pain present")
    result = patch_pair(bundled, plan, "Patient reports chest pain.", target, scans=("residual",))
    assert result.pair.clean_row == -1
    share = result.scan("residual").share
    np.testing.assert_allclose(share[0, np.arange(share.shape[1]) != first_changed_position(result.pair)], 0.0,
                               atol=1e-4)
    assert share.shape[0] == bundled.info.num_layers


def test_a_pair_longer_than_one_window_is_patched_in_the_window_holding_the_edit(sharp: LoadedModel) -> None:
    text = LONG_NOTE + " The patient denies chest pain."
    plan = plan_note(sharp, text, RunOptions())
    assert len(plan.windows) > 2
    cue = text.rindex("denies")
    edited = apply_edit(text, cue, cue + len("denies"), "reports")
    pair = make_pair(sharp, plan, edited, similarity_target(sharp, "pain"))
    assert pair.window_count == len(plan.windows)
    assert pair.window.start <= int(np.searchsorted(plan.tokens.offsets[:, 1], cue, side="right")) < pair.window.stop
    assert "denies" in pair.clean_tokens and "reports" in pair.corrupted_tokens
    assert pair.positions <= sharp.info.max_tokens


def test_a_masked_target_too_far_from_the_edit_is_a_message(sharp: LoadedModel) -> None:
    text = "The patient denies chest pain. " + LONG_NOTE + " [MASK] fever."
    plan = plan_note(sharp, text, RunOptions())
    with pytest.raises(TargetError, match="too far apart"):
        make_pair(sharp, plan, text.replace("denies", "reports", 1), masked_token_target(sharp, "no"))


def test_the_same_runs_through_capture_and_plain_forward_agree(sharp: LoadedModel) -> None:
    _plan, _target, pair, clean, _corrupted = _runs(sharp)
    with torch.inference_mode():
        inputs: list[torch.Tensor] = []
        run_encoder(sharp, embed(sharp, word_vectors(sharp, torch.tensor(pair.clean_ids)[None])), layer_inputs=inputs)
    np.testing.assert_allclose(clean.hidden, torch.cat(inputs).numpy(), atol=1e-6)
    assert clean.context.shape == (3, pair.positions, 32) and clean.ffn_update.shape == (3, pair.positions, 32)


@pytest.mark.parametrize("family", ["roberta", "distilbert", "electra"])
def test_other_families_patch_the_same_way_batched_and_one_at_a_time(tmp_path: Path, family: str) -> None:
    loaded = load_model(str(write_family(tmp_path / family, family)))
    _plan, _target, pair, clean, corrupted = _runs(loaded, word="pain")
    runs = _every_scan_run(loaded, pair, "denoising")
    every = np.arange(pair.positions)
    runs += [PatchRun(site="hidden", layer=layer, base_positions=every, source_positions=every) for layer in range(2)]
    plain = one_run_at_a_time(loaded, corrupted, clean, runs, pair.corrupted_target)
    np.testing.assert_allclose(patched_scores(loaded, corrupted, clean, runs, pair.corrupted_target), plain, atol=2e-5)
    np.testing.assert_allclose(plain[-2:], clean.score, atol=1e-5)  # a whole layer's input (ELECTRA: projected)
    assert hook_count(loaded.model) == 0


def test_a_progress_callback_that_raises_cancels_the_scans_and_leaves_no_hooks(sharp: LoadedModel) -> None:
    plan = plan_note(sharp, CLEAN, RunOptions(knocked_out=frozenset({(0, 1)})))
    seen: list[float] = []

    def cancel(fraction: float, _message: str) -> None:
        seen.append(fraction)
        if 0 < fraction < 1:
            raise InterruptedError("the user changed an input")

    with pytest.raises(InterruptedError):
        patch_pair(sharp, plan, EDITED, masked_token_target(sharp, "chest"), scans=SCANS, batch_size=4,
                   progress=cancel)
    assert 0 < seen[-1] < 1
    assert hook_count(sharp.model) == 0
