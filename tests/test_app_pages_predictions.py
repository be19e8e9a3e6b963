"""AppTest for what the Predictions page claims: cosines with their scale and reference, surprise per piece."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

from cbert_core.analyses import similarity
from cbert_core.analyses.predict import pseudo_log_likelihood
from cbert_core.model.loading import BUNDLED, load_model
from cbert_core.run.plan import plan_note
from cbert_core.text.examples import DEFAULT_EXAMPLE, EXAMPLE_NOTES
from test_app_pages import charts, start
from ui.sidebar import MODEL_OTHER

NOTE = EXAMPLE_NOTES[DEFAULT_EXAMPLE]
DESCRIPTIONS = ["pneumonia present", "no evidence of pneumonia"]


def numbers(value: list | dict) -> np.ndarray:
    """A plotly array from the sent JSON: a list, or plotly 6's base64 typed array."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.asarray(value, dtype=float)


def share_tables(app) -> list:
    return [frame.value for frame in app.dataframe if any(c.startswith("share") for c in frame.value.columns)]


def test_zero_shot_shows_cosines_on_a_fixed_axis_with_the_reference_and_every_share_beside_its_cosine() -> None:
    expected = similarity.embedding_similarity(load_model(BUNDLED), plan_note(load_model(BUNDLED), NOTE), DESCRIPTIONS)
    app = start("pages/predictions.py", note_text=NOTE)
    figure = charts(app)["pred_similar_intact model"]
    bars = figure["data"][0]
    assert list(bars["y"]) == DESCRIPTIONS
    np.testing.assert_allclose(numbers(bars["x"]), expected.note_similarity, atol=1e-6)
    np.testing.assert_allclose(numbers(bars["customdata"]), expected.note_probs, atol=1e-6)  # shares: hover only
    assert figure["layout"]["xaxis"]["range"] == [-1, 1]
    lines = [shape for shape in figure["layout"]["shapes"] if shape["type"] == "line"]
    assert [line["x0"] for line in lines] == pytest.approx([expected.note_reference], abs=1e-5)
    assert any(f"{len(similarity.REFERENCE_DESCRIPTIONS)} everyday phrases unrelated to medicine" in caption.value
               for caption in app.caption)
    note_table, sentence_table = share_tables(app)
    for table in (note_table, sentence_table):
        share = next(c for c in table.columns if c.startswith("share"))
        assert "cosine" in table.columns and list(table.columns).index("cosine") < list(table.columns).index(share)
    np.testing.assert_allclose(note_table["cosine"], expected.note_similarity, atol=1e-6)
    best = expected.sentence_similarity.argmax(-1)
    np.testing.assert_allclose(sentence_table["cosine"], expected.sentence_similarity.max(-1), atol=1e-6)
    np.testing.assert_allclose(sentence_table["unrelated text"], expected.sentence_reference, atol=1e-6)
    assert list(sentence_table["verdict"]) == list(expected.sentence_verdicts)
    assert list(sentence_table["closest description"]) == [DESCRIPTIONS[i] for i in best]
    shown = " ".join(element.value for element in [*app.warning, *app.info])
    assert ("stands out" in shown) and (("No description stands out" in shown) != expected.stands_out)


def test_zero_shot_says_when_no_description_stands_out() -> None:
    app = start("pages/predictions.py", note_text="Chest x-ray shows a right lower lobe pneumonia.",
                pred_descriptions="pneumonia present\npneumonia present")
    assert not any("stands out" in info.value for info in app.info)
    assert any("No description stands out" in warning.value and "within the margin" in warning.value
               for warning in app.warning)


def test_surprise_map_colours_by_mean_per_piece_unless_asked_for_the_sum(tiny_dir: Path) -> None:
    note = "patient has copd exacerbation and no chest pain ."  # a note no other test scores
    expected = pseudo_log_likelihood(load_model(str(tiny_dir)), plan_note(load_model(str(tiny_dir)), note), stride=8)
    app = start("pages/predictions.py", note_text=note, model_choice=MODEL_OTHER, model_custom=str(tiny_dir))
    app.button(key="go_pll").click().run()
    assert not app.exception
    assert app.radio(key="pred_pll_per").value == "per piece (mean)"
    table = app.dataframe[-1].value
    assert list(table.columns) == ["word", "mean log-probability per piece", "pieces"]
    np.testing.assert_allclose(table["mean log-probability per piece"],
                               np.sort(expected.word_mean_logprobs)[:len(table)], atol=1e-5)
    assert table.loc[table["word"] == "copd", "pieces"].item() == 2
    assert any("**mean** log-probability" in caption.value for caption in app.caption)
    app.radio(key="pred_pll_per").set_value("per word (sum)").run()
    table = app.dataframe[-1].value
    assert list(table.columns) == ["word", "log-probability (sum over pieces)", "pieces"]
    np.testing.assert_allclose(table["log-probability (sum over pieces)"],
                               np.sort(expected.word_logprobs)[:len(table)], atol=1e-5)
    assert any("**sum** of each word" in caption.value for caption in app.caption)
