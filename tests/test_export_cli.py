"""Exports (JSON, NPZ, CSV, HTML, PNG) and the batch command line (local and Ray engines)."""

from __future__ import annotations

import io
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from cbert_core.corpus.cli import EXIT_INPUT, EXIT_MODEL, EXIT_OTHER, EXIT_OUTPUT, main
from cbert_core.errors import ExportError
from cbert_core.run.plan import plan_note
from cbert_core.run.trace import trace
from cbert_core.views import export
from tiny_models import write_bert

ROOT = Path(__file__).resolve().parent.parent
NOTES = ["Patient denies chest pain.", "No fever. Cough with shortness of breath.", "  ",
         "History of present illness: aspirin daily.", "Left lung normal. Patient alert.",
         " ".join(f"Patient denies chest pain and fever {i}." for i in range(12))]  # a long note: 2+ windows
SECRET = "Patient denies chest pain."


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def notes_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "notes.csv"
    pd.DataFrame({"note_id": [f"n{i}" for i in range(len(NOTES))], "body": NOTES,
                  "ward": ["A", "B", "A", "B", "A", "B"]}).to_csv(path, index=False)
    return path


def test_trace_to_json_and_npz_round_trip(tiny) -> None:
    result = trace(tiny, plan_note(tiny, "Patient denies chest pain [MASK] fever."))
    document = json.loads(export.to_json_bytes(result, exclude=("attentions",)))
    assert document["format"] == "cbert-export" and document["kind"] == "Trace"
    hidden = document["data"]["hidden_states"]
    # kept in float16 (half the memory); exported as held
    assert hidden["dtype"] == "float16" and hidden["shape"] == list(result.hidden_states.shape)
    np.testing.assert_array_equal(np.asarray(hidden["data"], dtype=np.float16), result.hidden_states)
    assert "attentions" not in document["data"] and document["data"]["tokens"][0] == "[CLS]"
    assert document["data"]["head"]["top_ids"]["dtype"] == "int32"
    archive = np.load(io.BytesIO(export.to_npz_bytes(result)), allow_pickle=False)
    np.testing.assert_array_equal(archive["hidden_states"], result.hidden_states)
    np.testing.assert_array_equal(archive["attentions/0"], result.attentions[0])
    meta = json.loads(str(archive["__meta__"]))
    assert meta["data"]["hidden_states"] == {"npz": "hidden_states", "dtype": "float16",
                                             "shape": list(result.hidden_states.shape)}
    odd = json.loads(export.to_json_bytes({"x": np.array([1.0, np.nan, np.inf], dtype=np.float16)}))
    assert odd["data"]["x"] == {"dtype": "float16", "shape": [3], "data": [1.0, None, None]}
    with pytest.raises(ExportError, match="NPZ"):
        export.to_json_bytes(result, max_bytes=10_000)


def test_tables_and_figures_export_offline() -> None:
    table = pd.DataFrame({"token": ["fever", "caf\u00e9"], "score": [0.5, 1.0]})
    assert export.table_to_csv_bytes(table).decode("utf-8") == "token,score\nfever,0.5\ncaf\u00e9,1.0\n"
    assert export.table_to_csv_bytes(table, excel=True).startswith(b"\xef\xbb\xbf")
    figure = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    html = export.figure_to_html_bytes(figure).decode("utf-8")
    assert "<html" in html and "Plotly.newPlot" in html
    assert '<script src="http' not in html and "cdn.plot.ly" not in html.split("<script", 1)[0]


def test_write_bytes_reports_unwritable_targets(tmp_path) -> None:
    written = export.write_bytes(tmp_path / "out.bin", b"abc")
    assert written.read_bytes() == b"abc" and list(tmp_path.iterdir()) == [written]
    with pytest.raises(ExportError, match="does not exist"):
        export.write_bytes(tmp_path / "missing" / "out.bin", b"abc")
    with pytest.raises(ExportError, match="is a folder"):
        export.write_bytes(tmp_path, b"abc")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match="does not exist"):
        export.write_bytes(tmp_path / "file" / "out.bin", b"abc")


def test_cli_errors_have_exit_codes_and_no_note_text(notes_csv, tiny_dir, tmp_path, capsys,
                                                      monkeypatch) -> None:
    model = ["--model", str(tiny_dir), "--quiet"]
    assert main([str(tmp_path / "nope.csv"), "-o", str(tmp_path / "o.parquet"), *model]) == EXIT_INPUT
    assert "no file" in capsys.readouterr().err
    assert main([str(notes_csv), "-o", str(tmp_path / "o.parquet"), "--text-column", "text", *model]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "no column named 'text'" in err and "'body'" in err and SECRET not in err
    (tmp_path / "file").write_text("x")
    assert main([str(notes_csv), "-o", str(tmp_path / "file" / "o.parquet"), "--text-column", "body",
                 *model]) == EXIT_OUTPUT
    assert "does not exist" in capsys.readouterr().err
    assert main([str(notes_csv), "-o", str(tmp_path / "o.parquet"), "--text-column", "body", "--analyses",
                 "predictions", "--model", str(ROOT / "tests")]) == EXIT_MODEL  # not a model folder
    capsys.readouterr()
    encoder_dir = write_bert(tmp_path / "encoder", head="encoder")
    assert main([str(notes_csv), "-o", str(tmp_path / "o.parquet"), "--text-column", "body", "--analyses",
                 "predictions", "--model", str(encoder_dir), "--quiet"]) == EXIT_OTHER
    assert "--labels" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["cbert_core", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "o.parquet")])
    with pytest.raises(SystemExit) as exited:  # what `python -m cbert_core` runs
        runpy.run_module("cbert_core", run_name="__main__")
    assert exited.value.code == EXIT_INPUT and "no file" in capsys.readouterr().err


def test_cli_predictions_and_attributions(notes_csv, tmp_path, capsys) -> None:
    classifier = write_bert(tmp_path / "clf", head="sequence-classification", labels=("NEG", "POS"))
    out = tmp_path / "clf.parquet"
    code = main([str(notes_csv), "-o", str(out), "--text-column", "body", "--model", str(classifier), "--analyses",
                 "predictions", "attributions", "--attribution-method", "gradient-x-input", "--quiet"])
    assert code == 0, capsys.readouterr().err
    frame = pd.read_parquet(out)
    assert set(frame["predicted_label"]) <= {"NEG", "POS"} and len(frame["label_probs"][0]) == 2
    assert frame["attribution"][0]["target"] == frame["predicted_label"][0]
    assert len(frame["attribution"][0]["top_words"]) > 0
    mlm = write_bert(tmp_path / "mlm")
    assert main([str(notes_csv), "-o", str(tmp_path / "mlm.parquet"), "--text-column", "body", "--model", str(mlm),
                 "--analyses", "predictions", "--quiet"]) == 0
    likelihood = pd.read_parquet(tmp_path / "mlm.parquet")["pseudo_log_likelihood"][0]
    assert likelihood["total"] < 0 and likelihood["scored"] == 5  # Patient denies chest pain .
    tagger = write_bert(tmp_path / "ner", head="token-classification", labels=("O", "B-PROBLEM", "I-PROBLEM"))
    assert main([str(notes_csv), "-o", str(tmp_path / "ner.parquet"), "--text-column", "body", "--model",
                 str(tagger), "--analyses", "predictions", "--quiet"]) == 0
    entities = pd.read_parquet(tmp_path / "ner.parquet")["entities"]
    assert all(set(e) == {"label", "start", "end", "score"} for row in entities for e in row)
    encoder = write_bert(tmp_path / "encoder", head="encoder")
    assert main([str(notes_csv), "-o", str(tmp_path / "zs.parquet"), "--text-column", "body", "--model", str(encoder),
                 "--analyses", "predictions", "attributions", "--labels", "chest pain", "fever",
                 "--attribution-steps", "8", "--quiet"]) == 0
    zero_shot = pd.read_parquet(tmp_path / "zs.parquet")
    assert set(zero_shot["zero_shot_label"]) <= {"chest pain", "fever"} and len(zero_shot["zero_shot_probs"][0]) == 2
    assert zero_shot["attribution"][0]["method"] == "integrated-gradients"
    assert np.isfinite(zero_shot["attribution"][0]["delta"])
    assert SECRET not in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside Ray Data's own context code
def test_local_and_ray_engines_write_the_same_parquet(notes_csv, tiny_dir, tmp_path, capsys) -> None:
    pytest.importorskip("ray")
    outputs = {}
    for engine in ("local", "ray"):
        outputs[engine] = tmp_path / f"{engine}.parquet"
        code = main([str(notes_csv), "-o", str(outputs[engine]), "--text-column", "body", "--id-column", "note_id",
                     "--model", str(tiny_dir), "--engine", engine, "--chunk-size", "2", "--threads", "1"])
        err = capsys.readouterr().err
        assert code == 0, err
        assert "Wrote 5 rows" in err and "1 row(s) with an empty" in err and SECRET not in err
    local, remote = (pd.read_parquet(outputs[name]) for name in ("local", "ray"))
    assert local["id"].tolist() == remote["id"].tolist() == ["n0", "n1", "n3", "n4", "n5"]
    assert local["row"].tolist() == [0, 1, 3, 4, 5]
    assert local["n_windows"].tolist()[-1] >= 2 and local["text_length"][0] == len(SECRET)
    assert list(local["tokens"][0]) == ["Patient", "denies", "chest", "pain", "."] or local["n_tokens"][0] > 0
    for column in ("text_length", "n_tokens", "n_windows"):
        assert local[column].tolist() == remote[column].tolist()
    assert [list(t) for t in local["tokens"]] == [list(t) for t in remote["tokens"]]
    embeddings = np.stack(local["embedding"].to_numpy())
    assert embeddings.shape == (5, 32) and embeddings.dtype == np.float32
    np.testing.assert_array_equal(embeddings, np.stack(remote["embedding"].to_numpy()))
