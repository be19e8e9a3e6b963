"""Collections from CSV/JSONL, note embeddings per layer, their projection, and corpus token search."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cbert_core.corpus.collection import (
    CorpusLimits,
    candidate_label_columns,
    candidate_text_columns,
    collection_from_table,
    collection_from_texts,
    load_collection,
    read_table,
)
from cbert_core.corpus.embeddings import note_embeddings, project_notes
from cbert_core.corpus.token_search import build_token_index, search_tokens, search_trace_token
from cbert_core.errors import DataFileError, ResourceLimitError, TargetError
from cbert_core.run.plan import plan_note, plan_notes
from cbert_core.run.trace import trace

NOTES = [
    "Patient denies chest pain. No fever.",
    "Chest pain radiating to the left arm. Patient reports fever.",
    "History of COPD exacerbation with cough and shortness of breath.",
    "No evidence of pneumonia. Lung normal.",
    "Aspirin daily for heart history. Patient alert.",
]
LONG_NOTE = " ".join(f"Patient denies chest pain and fever {i}." for i in range(12))  # > 62 pieces: 2+ windows


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _csv(rows: list[tuple[str, str, str]]) -> bytes:
    lines = ["note_id,text,label,code"]
    for note_id, text, label in rows:
        lines.append(f'{note_id},"{text}",{label},x1')
    return ("\n".join(lines) + "\n").encode("utf-8")


def test_csv_collection_with_labels_ids_and_dropped_rows() -> None:
    data = _csv([("a", NOTES[0], "neg"), ("b", "   ", "pos"), ("c", NOTES[1], "pos"), ("d", NOTES[2], ""),
                 ("e", NOTES[3], "neg")])
    table = read_table(data, name="notes.csv")
    assert table.format == "csv" and table.columns == ("note_id", "text", "label", "code")
    assert candidate_text_columns(table)[0] == "text"
    assert "label" in candidate_label_columns(table)
    collection = collection_from_table(table, text_column="text", label_column="label", id_column="note_id")
    assert collection.ids == ("a", "c", "e")
    assert collection.labels == ("neg", "pos", "neg")
    assert collection.label_names == ("neg", "pos")
    assert collection.label_ids.tolist() == [0, 1, 0]
    assert collection.rows.tolist() == [0, 2, 4]
    assert (collection.dropped_empty, collection.dropped_unlabelled) == (1, 1)
    assert any("empty" in w for w in collection.warnings) and any("without a value" in w for w in collection.warnings)
    plain = load_collection(data, text_column="text", name="notes.csv")
    assert plain.labels is None and plain.ids[0] == "row 1" and len(plain) == 4


def test_file_problems_raise_clear_errors(tmp_path) -> None:
    with pytest.raises(DataFileError, match="not UTF-8"):
        read_table("text\nCaf\u00e9 au lait\n".encode("cp1252"), name="x.csv")
    with pytest.raises(DataFileError, match="no column named 'body'.*'text'"):
        load_collection(_csv([("a", NOTES[0], "x")]), text_column="body", name="x.csv")
    with pytest.raises(DataFileError, match="no usable note text"):
        load_collection(b"text,other\n ,a\n\t,b\n", text_column="text", name="x.csv")
    with pytest.raises(DataFileError, match="There is no file"):
        read_table(tmp_path / "missing.csv")
    with pytest.raises(DataFileError, match="limit is"):
        read_table(b"text\n" + b"a note\n" * 100, limits=CorpusLimits(max_bytes=100))
    with pytest.raises(DataFileError, match="Line 2 of the JSONL"):
        read_table(b'{"text": "ok"}\n{not json}\n', name="x.jsonl")
    with pytest.raises(DataFileError, match="Excel"):
        read_table(b"PK\x03\x04rest", name="x.csv")


def test_big_file_is_cut_to_the_row_limit_with_a_message() -> None:
    data = b"id,text\n" + b"".join(b"%d,Patient denies chest pain number %d.\n" % (i, i) for i in range(100_000))
    collection = load_collection(data, text_column="text", name="big.csv",
                                        limits=CorpusLimits(max_rows=5_000))
    assert len(collection) == 5_000 and collection.truncated
    assert any("more than 5,000 rows" in warning for warning in collection.warnings)
    limited = collection_from_texts(["short", "x" * 50], limits=CorpusLimits(max_chars=10))
    assert limited.texts == ("short",) and limited.dropped_too_long == 1


def test_jsonl_and_tsv_are_read() -> None:
    lines = [json.dumps({"text": text, "y": i % 2}) for i, text in enumerate(NOTES)]
    collection = load_collection("\n".join(lines).encode(), text_column="text", label_column="y",
                                        name="notes.jsonl")
    assert len(collection) == 5 and collection.label_names == ("0", "1")
    tsv = b"n\tsentence, with comma\tstatus (a, b)\n1\tNo fever, no cough.\tNegated\n2\tFever.\tAffirmed\n"
    table = read_table(tsv, name="negex.txt")
    assert table.format == "tsv" and table.frame.shape == (2, 3)


def test_note_embeddings_match_a_trace_and_do_not_depend_on_batching(tiny) -> None:
    collection = collection_from_texts(NOTES + [LONG_NOTE])
    seen = []
    plans = plan_notes(tiny, collection.texts)
    mean = note_embeddings(tiny, plans, batch_size=2, progress=lambda f, m: seen.append(f))
    assert mean.shape == (6, tiny.info.num_layers + 1, tiny.info.hidden_size) and mean.dtype == np.float32
    assert seen[-1] == pytest.approx(1.0)
    for index in (0, 3):
        result = trace(tiny, plan_note(tiny, NOTES[index]))
        # the trace keeps hidden states in float16: equal up to float16's rounding (2**-11 of each value)
        content = result.hidden_states[:, 1:-1].astype(np.float32)
        assert (np.abs(mean[index] - content.mean(axis=1)) <= 1e-5 + 2**-11 * np.abs(content).mean(axis=1)).all()
        cls = note_embeddings(tiny, [plans[index]], pooling="cls")
        np.testing.assert_allclose(cls[0], result.hidden_states[:, 0].astype(np.float32), rtol=2**-11, atol=1e-5)
    one_by_one = note_embeddings(tiny, plans, batch_size=1)
    np.testing.assert_allclose(one_by_one, mean, atol=1e-5)
    first = note_embeddings(tiny, plans[-1:], long_notes="first")
    assert not np.allclose(first[0], mean[5], atol=1e-4)  # the long note has more than one window
    half = note_embeddings(tiny, plans[:5], dtype=np.float16)
    assert half.dtype == np.float16
    with pytest.raises(ResourceLimitError, match="limit"):
        note_embeddings(tiny, plans, max_bytes=1000)

    def stale(fraction: float, message: str) -> None:
        raise RuntimeError("the user changed the collection")

    with pytest.raises(RuntimeError, match="changed the collection"):
        note_embeddings(tiny, plans, progress=stale)
    projection = project_notes(mean, -1)
    assert projection.coords.shape == (6, 2) and projection.layer == tiny.info.num_layers


def test_token_search_finds_the_token_in_context(tiny, bundled) -> None:
    collection = collection_from_texts(NOTES + [LONG_NOTE], ids=[f"n{i}" for i in range(6)])
    plans = plan_notes(tiny, collection.texts)
    index = build_token_index(tiny, plans, layer=2, note_ids=collection.ids)
    pieces = sum(len(trace(tiny, plan_note(tiny, text)).tokens) - 2 for text in collection.texts)
    assert index.size == pieces and index.nbytes >= pieces * tiny.info.hidden_size * 4
    query_trace = trace(tiny, plan_note(tiny, NOTES[1]))
    position = query_trace.tokens.index("fever")
    hits = search_trace_token(index, query_trace, position, k=3, include_self=True)
    best = hits[0]
    assert (best.note, best.position, best.token) == (1, position, "fever") and best.score == pytest.approx(1, abs=1e-5)
    assert best.note_id == "n1" and best.context == "Patient reports fever."
    assert NOTES[1][best.char_start:best.char_end] == "fever"
    assert [hit.rank for hit in hits] == [0, 1, 2] and hits[0].score >= hits[1].score >= hits[2].score
    others = search_trace_token(index, query_trace, position, k=3)
    assert all((hit.note, hit.position) != (1, position) for hit in others)
    direct = search_tokens(index, query_trace.hidden_states[2, position], k=1)
    assert (direct[0].note, direct[0].position) == (1, position)
    with pytest.raises(TargetError, match="built with"):
        search_trace_token(index, trace(bundled, plan_note(bundled, NOTES[1])), 1)
    with pytest.raises(TargetError, match="word piece"):
        search_trace_token(index, query_trace, 0)
    with pytest.raises(ResourceLimitError, match="limit"):
        build_token_index(tiny, plans, layer=-1, max_bytes=1000)
