"""AppTest for the model-running pages: Predictions, Attribution, Corpus, Compare, Fine-tune."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cbert_core.analyses.intervals import wilson_interval
from test_app_pages import charts, start
from ui.sidebar import MODEL_OTHER

PNEUMONIA_NOTE = "Patient denies chest pain. No evidence of pneumonia on the chest x-ray. COPD [MASK] noted."


def texts(app, kind: str = "html") -> str:
    return " ".join(json.dumps(element.proto.body if hasattr(element.proto, "body") else str(element.proto))
                    for element in app.get(kind))


def test_predictions_embedding_similarity_on_the_bundled_model() -> None:
    app = start("pages/predictions.py", note_text=PNEUMONIA_NOTE)
    bars = charts(app)["pred_similar_intact model"]["data"][0]
    assert [label for label in bars["y"]] == ["pneumonia present", "no evidence of pneumonia"]
    sentences = app.dataframe[-1].value
    row = sentences[sentences["sentence"].str.startswith("No evidence of pneumonia")].iloc[0]
    assert row["closest description"] == "no evidence of pneumonia"


def test_predictions_with_heads_knocked_out_show_both_models() -> None:
    app = start("pages/predictions.py", note_text=PNEUMONIA_NOTE, ko_layers=[1])
    figures = charts(app)
    intact = figures["pred_similar_intact model"]["data"][0]["x"]
    knocked = figures["pred_similar_heads knocked out"]["data"][0]["x"]
    assert intact != knocked


def test_predictions_fill_mask_and_surprise_map_on_a_masked_lm(tiny_dir: Path) -> None:
    app = start("pages/predictions.py", note_text="patient denies chest pain [MASK] fever .",
                model_choice=MODEL_OTHER, model_custom=str(tiny_dir))
    figures = charts(app)
    fill = [key for key in figures if key.startswith("pred_fill_intact")]
    assert len(fill) == 1 and len(figures[fill[0]]["data"][0]["y"]) == 10
    assert any(key.startswith("pred_masked_") for key in figures)
    app.button(key="go_pll").click().run()
    assert not app.exception
    assert any("pseudo-log-likelihood" in caption.value for caption in app.caption)


def test_attribution_page_explains_scores_faithfulness_scan_and_edit() -> None:
    app = start("pages/attribution.py", note_text="Patient denies chest pain. No evidence of pneumonia.",
                attr_methods=["integrated-gradients", "occlusion"])
    app.button(key="go_explain").click().run()
    assert not app.exception
    delta = [caption.value for caption in app.caption if caption.value.startswith("Convergence delta")]
    assert delta and "% of the score difference" in delta[0]
    faithful = app.dataframe[-1].value
    assert list(faithful["method"]) == ["Integrated Gradients", "Leave one word out"]
    assert ((faithful["comprehensiveness ↑"] > -1) & (faithful["comprehensiveness ↑"] < 1)).all()
    app.button(key="go_scan").click().run()
    scan = charts(app)["scan_heads"]["data"][0]
    assert len(scan["text"]) == 6 * 12
    app.button(key="go_cf").click().run()
    assert any("cosine similarity" in markdown.value and "→" in markdown.value for markdown in app.markdown)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_precision_switch_reaches_attribution_and_the_surprise_map(tiny_dir: Path, precision: str) -> None:
    note = "patient has no chest pain , [MASK] fever ."  # explained by no other test: nothing cached yet
    app = start("pages/attribution.py", note_text=note, model_choice=MODEL_OTHER, model_custom=str(tiny_dir),
                attr_methods=["integrated-gradients"], precision=precision)
    app.button(key="go_explain").click().run()
    delta = [caption.value for caption in app.caption if caption.value.startswith("Convergence delta")]
    assert delta and f"s in {precision}." in delta[0]
    app = start("pages/predictions.py", note_text=note, model_choice=MODEL_OTHER, model_custom=str(tiny_dir),
                precision=precision)
    app.button(key="go_pll").click().run()
    assert any(caption.value.endswith(f"s ({precision}).") for caption in app.caption)


def test_integrated_gradients_stop_early_when_asked_and_converged(tiny_dir: Path) -> None:
    def steps_shown(**session) -> str:
        app = start("pages/attribution.py", note_text="patient reports chest pain [MASK] cough .",
                    model_choice=MODEL_OTHER, model_custom=str(tiny_dir), attr_methods=["integrated-gradients"],
                    **session)  # a note no other test explains, so no result is cached yet
        app.button(key="go_explain").click().run()
        return next(caption.value for caption in app.caption if caption.value.startswith("Convergence delta"))

    assert "; 50 steps," in steps_shown()
    assert "; 16 steps," in steps_shown(attr_early=True)


def test_corpus_page_embeds_the_example_set_and_searches_tokens() -> None:
    app = start("pages/corpus.py", note_text="Patient denies chest pain.")
    app.button(key="go_corpus_embed").click().run()
    assert not app.exception
    scatter = charts(app)["scatter_corpus"]
    assert {trace_["name"] for trace_ in scatter["data"]} == {"negated", "affirmed"}
    app.button(key="go_corpus_index").click().run()
    matches = app.dataframe[-1].value
    assert len(matches) == 10
    assert "denies" in list(matches["token"])[:3]


def test_compare_page_two_models(tiny_dir: Path) -> None:
    app = start("pages/compare.py", note_text="patient denies chest pain .", cmp_model=str(tiny_dir))
    assert not app.exception
    cka = charts(app)["cmp_cka"]["data"][0]
    assert len(cka["y"]) == 7 and len(cka["x"]) == 3  # embeddings + 6 layers vs embeddings + 2 layers
    assert "cmp_attention_0" in charts(app) and "cmp_attention_1" in charts(app)


def test_finetune_page_trains_and_reports(tiny_dir: Path) -> None:
    app = start("pages/finetune.py", model_choice=MODEL_OTHER, model_custom=str(tiny_dir), ft_epochs=2)
    app.button(key="go_train").click().run()
    assert not app.exception
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["Majority baseline"] == "50.0%" and metrics["Validation accuracy"].endswith("%")
    assert "ft_loss" in charts(app) and "ft_confusion" in charts(app)
    # The example set holds 30 notes: 20% of them, 6, are held out. Say so, and how uncertain 6 notes are.
    assert any(caption.value.startswith("These figures rest on 6 held-out validation notes") for caption in app.caption)
    warnings = [warning.value for warning in app.warning if "uncertain" in warning.value]
    assert len(warnings) == 1 and warnings[0].startswith("Only 6 validation notes")
    lower, upper = wilson_interval(app.session_state["ft_model"].result.validation_correct, 6)
    assert f"between {lower:.0%} and {upper:.0%}" in warnings[0] and upper - lower > 0.3


@pytest.mark.parametrize("page", ["pages/predictions.py", "pages/attribution.py", "pages/corpus.py",
                                  "pages/compare.py", "pages/finetune.py"])
def test_model_pages_show_errors_as_messages(page: str) -> None:
    app = start(page, note_text="")
    assert not app.exception
    assert any("empty" in error.value for error in app.error)


def test_attribution_over_its_memory_bound_is_a_message() -> None:
    app = start("pages/attribution.py", note_text="Patient denies chest pain. " * 80,  # ~100 MB a row
                attr_methods=["integrated-gradients"], attr_memory=0.05)
    app.button(key="go_explain").click().run()
    assert not app.exception
    assert any("memory" in error.value for error in app.error)


def test_saving_a_fine_tuned_model_to_an_unwritable_folder_is_a_message(tiny_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    app = start("pages/finetune.py", model_choice=MODEL_OTHER, model_custom=str(tiny_dir), ft_epochs=1,
                ft_folder=str(blocker / "model"))
    app.button(key="go_train").click().run()
    app.button(key="go_save").click().run()
    assert not app.exception
    assert app.error and "a-file" in app.error[0].value
    saved = tmp_path / "model"
    app.text_input(key="ft_folder").set_value(str(saved)).run()
    app.button(key="go_save").click().run()
    assert (saved / "config.json").is_file() and any(s.value.startswith("Saved to") for s in app.success)
