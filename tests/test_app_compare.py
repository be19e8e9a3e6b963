"""AppTest for the Compare page: the CKA reference, shared attention colour scale, per-model casing, caching."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest

import cbert_core.analyses.compare
from test_app_pages import charts, start
from ui import caches
from ui.sidebar import MODEL_OTHER

COMPARE = "pages/compare.py"


def values(array: object) -> np.ndarray:
    """A plotly array from the sent JSON: a list or a base64 typed array."""
    if isinstance(array, dict):
        flat = np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
        shape = [int(size) for size in str(array.get("shape", len(flat))).split(",")]
        return flat.reshape(shape).astype(np.float64)
    return np.asarray(array, dtype=np.float64)


@pytest.fixture()
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Calls of the comparison and of every trace the app makes (by model key), recorded as they happen."""
    calls: dict[str, list] = {"compare": [], "trace": []}
    compare_traces, trace = cbert_core.analyses.compare.compare_traces, caches.trace

    def counting_compare(trace_a, trace_b, **options):
        calls["compare"].append((trace_a, trace_b))
        return compare_traces(trace_a, trace_b, **options)

    def counting_trace(loaded, *args, **options):
        calls["trace"].append(loaded.info.key)
        return trace(loaded, *args, **options)

    monkeypatch.setattr(cbert_core.analyses.compare, "compare_traces", counting_compare)
    monkeypatch.setattr(caches, "trace", counting_trace)
    return calls


def test_cka_is_shown_beside_its_random_weight_reference(tiny_dir: Path) -> None:
    app = start(COMPARE, note_text="Patient reports a cough and no fever today .", cmp_model=str(tiny_dir))
    figures = charts(app)
    cka, beside = figures["cmp_cka"]["data"][0], figures["cmp_cka_reference"]["data"][0]
    assert values(cka["z"]).shape == (7, 3)  # bundled: embeddings + 6 layers; tiny: embeddings + 2
    data = values(cka["customdata"])  # [7, 3, (cka, reference, difference)]
    np.testing.assert_allclose(values(cka["z"]), data[..., 0], atol=1e-6)
    np.testing.assert_allclose(values(beside["z"]), data[..., 0] - data[..., 1], atol=1e-6)  # "above" first
    assert "random-weight" in cka["hovertemplate"] and "random-weight" in beside["hovertemplate"]
    assert any(caption.value.startswith("Reference: the same CKA against") for caption in app.caption)
    app.radio(key="cmp_second_map").set_value("reference").run()
    beside = charts(app)["cmp_cka_reference"]["data"][0]
    np.testing.assert_allclose(values(beside["z"]), data[..., 1], atol=1e-6)


def test_attention_maps_share_one_colour_scale_unless_asked(tiny_dir: Path) -> None:
    app = start(COMPARE, note_text="No chest pain ; the patient reports a dry cough .", cmp_model=str(tiny_dir))
    maps = [charts(app)[f"cmp_attention_{side}"]["data"][0] for side in (0, 1)]
    largest = max(values(heatmap["z"]).max() for heatmap in maps)
    assert [heatmap["zmax"] for heatmap in maps] == pytest.approx([largest, largest], rel=1e-6)
    assert any(caption.value.startswith("Both maps share one colour scale") for caption in app.caption)
    app.toggle(key="cmp_own_scale").set_value(True).run()
    maps = [charts(app)[f"cmp_attention_{side}"]["data"][0] for side in (0, 1)]
    assert all("zmax" not in heatmap for heatmap in maps)  # each ends at its own largest weight
    assert any(caption.value.startswith("Each map is scaled to its own") for caption in app.caption)


def test_the_second_model_reads_the_note_with_its_own_casing(tiny_dir: Path, counted: dict[str, list]) -> None:
    # The tiny model in force, with "keep case" on; the bundled model's vocabulary is uncased.
    app = start(COMPARE, note_text="Patient denies COPD exacerbation .", model_choice=MODEL_OTHER,
                model_custom=str(tiny_dir), keep_case=True, cmp_model="bundled")
    (trace_a, trace_b), = counted["compare"]
    assert trace_a.lowercase is False and trace_b.lowercase is True
    assert "[UNK]" not in trace_b.tokens
    assert "Reads the note lower-cased." in [caption.value for caption in app.caption]


def test_the_comparison_runs_once_and_only_on_the_compare_page(tiny, tiny_dir: Path,
                                                                counted: dict[str, list]) -> None:
    app = start(note_text="The patient denies fever ; cough with chest pain .", cmp_model=str(tiny_dir))
    assert counted["compare"] == [] and tiny.info.key not in counted["trace"]  # Note page: nothing for model B
    app.switch_page(COMPARE).run()
    assert len(counted["compare"]) == 1 and counted["trace"].count(tiny.info.key) == 1
    app.toggle(key="cmp_own_scale").set_value(True).run()
    app.radio(key="cmp_second_map").set_value("reference").run()
    app.switch_page("pages/note.py").run()
    app.switch_page(COMPARE).run()
    assert not app.exception
    assert len(counted["compare"]) == 1 and counted["trace"].count(tiny.info.key) == 1
