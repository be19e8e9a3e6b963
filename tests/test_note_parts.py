"""Parts of a long note (windows, sections, sentences) that one pass through the model can show."""

from __future__ import annotations

import numpy as np

from cbert_core.model.loading import LoadedModel
from cbert_core.run.note_parts import default_part, note_parts
from cbert_core.run.plan import plan_note
from cbert_core.run.trace import trace

HISTORY = " ".join(f"The patient reports cough number {index} at night." for index in range(6))
LONG_NOTE = (f"HISTORY OF PRESENT ILLNESS: {HISTORY}\nMEDICATIONS: Aspirin daily. Metoprolol twice daily.\n"
             f"PHYSICAL EXAM: Lungs clear. Heart regular. {HISTORY}\nPLAN: Follow up in two weeks.")


def test_every_window_section_and_sentence_is_a_part_inside_one_window(tiny: LoadedModel) -> None:
    result = trace(tiny, plan_note(tiny, LONG_NOTE))
    assert len(result.windows) > 2  # tiny reads 62 pieces at once
    parts = note_parts(result)
    kinds = [part.kind for part in parts]
    assert kinds.count("window") == len(result.windows)
    titled = [section.title for section in result.segmentation.sections if section.title]
    assert [part.label.split(" · ")[0] for part in parts if part.kind == "section"] == [f"Section {t}" for t in titled]
    assert kinds.count("sentence") == len(result.segmentation.sentences)
    for part in parts:
        window = result.windows[part.window]
        assert window.start + 1 <= part.first <= part.last <= window.stop  # focus lies inside the window it runs
    for index, section in enumerate(result.segmentation.sections):
        held = np.flatnonzero(result.section_ids == index)
        part = next(p for p in parts if p.kind == "section" and p.label.startswith(f"Section {section.title} "))
        assert part.complete == (part.focus.tolist() == held.tolist())
        if not part.complete:
            assert "cut to window" in part.label and set(part.focus) < set(held)


def test_the_default_part_is_the_mask_window_then_the_findings_window(tiny: LoadedModel) -> None:
    result = trace(tiny, plan_note(tiny, LONG_NOTE))
    parts = note_parts(result)
    chosen = parts[default_part(result, parts)]
    exam = next(i for i, s in enumerate(result.segmentation.sections) if s.title == "PHYSICAL EXAM")
    first_exam_piece = int(np.flatnonzero(result.section_ids == exam)[0])
    assert chosen.kind == "window" and chosen.window == int(result.owner[first_exam_piece]) > 0

    masked = LONG_NOTE.replace("Follow up in two weeks", "Follow up in two [MASK]")
    result = trace(tiny, plan_note(tiny, masked))
    parts = note_parts(result)
    chosen = parts[default_part(result, parts)]
    assert chosen.window == int(result.owner[int(result.mask_positions[0])]) == len(result.windows) - 1

    short = trace(tiny, plan_note(tiny, "Patient denies chest pain."))
    parts = note_parts(short)
    assert parts[default_part(short, parts)].window == 0
