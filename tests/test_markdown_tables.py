"""Every Markdown table the kit generates renders, in a GFM renderer, to exactly the cells it was built from.

A cell count alone is not enough: GFM silently drops the cells past the header's count, so a ``|``
inside a cell (CLIP's ``<|startoftext|>``) would lose text without changing the count of the first row.
Each generator below is called for real; ``markdown.table`` is wrapped to record what it was given,
and the rendered table is compared cell for cell with each source cell rendered on its own.
"""

from __future__ import annotations

import pytest
from markdown_it import MarkdownIt

from helpers.core import markdown
from helpers.core.lab import LabCode

LAB = LabCode.shipped()  # the lab's cells, as the notebooks hold them

GFM = MarkdownIt("commonmark").enable("table")


def _plain(tokens) -> str:
    out = []
    for token in tokens:
        if token.children:
            out.append(_plain(token.children))
        elif token.type in ("text", "code_inline"):
            out.append(token.content)
        elif token.type in ("softbreak", "hardbreak"):
            out.append(" ")
    return "".join(out)


def _rendered_cells(table_source: str) -> list[list[str]]:
    rows, row = [], None
    for token in GFM.parse(table_source):
        if token.type == "tr_open":
            row = []
        elif token.type == "inline" and row is not None:
            row.append(_plain([token]).strip())
        elif token.type == "tr_close":
            rows.append(row)
            row = None
    return rows


def _expected_cells(header, rows) -> list[list[str]]:
    return [[_plain(GFM.parseInline(str(c))).strip() for c in line] for line in (header, *rows)]


@pytest.fixture
def recorded(monkeypatch):
    calls = []
    real = markdown.table

    def recording(header, rows, numeric=()):
        out = real(header, rows, numeric)
        calls.append((list(header), [list(r) for r in rows], out))
        return out

    monkeypatch.setattr(markdown, "table", recording)
    return calls


def _check(calls, document: str) -> None:
    assert calls, "the generator wrote no table through markdown.table"
    for header, rows, out in calls:
        assert out in document
        assert _rendered_cells(out) == _expected_cells(header, rows)


def test_the_helper_round_trips_pipes_backslashes_code_and_line_breaks():
    header = ["token", "text"]
    rows = [["`<|startoftext|>`", "a | b"], ["`<|endoftext|>`", "two\nlines"], ["`a\\b`", "**bold** | x"]]
    assert _rendered_cells(markdown.table(header, rows)) == _expected_cells(header, [[r[0], r[1].replace("\n", " ")] for r in rows])
    with pytest.raises(ValueError, match="a table row has 1 cells, its header 2"):
        markdown.table(header, [["one"]])


def test_tables_of_notebook_01_and_the_teaching_cells(recorded, prepared, tiny_tower):
    from transformers import AutoTokenizer

    from helpers import teach
    from helpers.data import prepare

    tokens = teach.caption_tokens_table(AutoTokenizer.from_pretrained(str(tiny_tower)), ["a red circle", "a blue square on the left"])
    assert "<\\|startoftext\\|>" in tokens or "<\\|endoftext\\|>" in tokens  # the special tokens hold pipes: escaped
    document = tokens
    document += prepare.summary_markdown(prepared["splits"], prepared["manifest"], {"train": {"captions": 600, "token_reduction": 3.9}})
    document += teach.toy_loss_table(LAB.clip_loss) + teach.temperature_table()
    _check(recorded, document)


def test_tables_of_training_evaluation_ablation_doctor_and_report(recorded, trained):
    from helpers import doctor
    from helpers.clip.model import build_model, parameter_summary
    from helpers.evaluation import evaluate
    from helpers.store import runs
    from helpers.study import ablation, report
    from helpers.study.ablation import RunOutcome

    cfg, paths, result = trained
    document = runs.summary_markdown(result)
    model = build_model({**result.metrics["arch"]}, LAB, pretrained=False)
    document += parameter_summary(model)
    record = evaluate.evaluate(cfg.replace(eval_split="val"), paths, device="cpu", progress=False).record
    document += evaluate.results_markdown(record)
    metrics = record["metrics"]
    outcomes = [RunOutcome("baseline", 0, "shared", metrics, 1.0, True), RunOutcome("head_ln", 0, "x", metrics, 2.0, False)]
    document += ablation.table_markdown(ablation.summarise(outcomes), {"run": "a|b", "overrides": {"lr": {"base": 0.001, "here": 0.01}}})
    facts = doctor.inspect(cfg, paths)
    document += doctor.Diagnosis({**facts, "artifacts_dir": "/tmp/odd|folder"}).markdown()  # a path with a pipe
    document += report.build_report(paths, "shared").path.read_text()
    _check(recorded, document)


def test_sizes_read_in_binary_units_never_as_zero():
    from helpers.core import markdown

    assert markdown.size(2.5e9) == "2.3 GiB" and markdown.size(3_300_000) == "3.1 MiB" and markdown.size(500) == "500 bytes"
    assert markdown.size(0) == "0 bytes"  # a tiny cache is never "0.00 GB"
