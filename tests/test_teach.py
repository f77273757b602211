"""The teaching helpers show the real code and run it on examples that can be checked by hand."""

import math

import pytest

from helpers import teach
from helpers.clip import loss
from helpers.core.lab import LabCode

LAB = LabCode.shipped()  # the lab's cells, as the notebooks hold them


def test_show_source_renders_the_real_function():
    md = teach.source_markdown(loss.max_hinge_loss)  # plumbing a curious student may read (the lab's own code is in cells)
    assert md.startswith("`helpers.clip.loss.max_hinge_loss`") and "```python\ndef max_hinge_loss(" in md and "clamp(min=0)" in md
    from helpers.training import train

    method = teach.source_markdown(train.Trainer.train_one_epoch)  # a method, dedented to read like a function
    assert "```python\ndef train_one_epoch(self" in method and "self.step_fn(" in method


def _cell(table: str, row_start: str, column: int) -> float:
    row = next(line for line in table.splitlines() if line.startswith(row_start))
    return float(row.split("|")[column])


def test_toy_loss_is_near_zero_when_aligned_and_near_log_b_when_random():
    table = teach.toy_loss_table(LAB.clip_loss, batch=4)
    assert _cell(table, "| equal to their own captions", 2) < 0.01
    assert abs(_cell(table, "| random", 2) - math.log(4)) < 0.6
    assert _cell(table, "| equal to *another*", 2) > 5


def test_temperature_table_sharpens_as_tau_falls():
    table = teach.temperature_table()
    top = [_cell(table, f"| {tau} (", 2) for tau in ("1", "0.1", "0.07", "0.01")]
    assert top == sorted(top) and top[0] < 0.4 and top[-1] > 0.99


def test_toy_recall_example_matches_the_hand_count():
    text, metrics = teach.toy_recall_example(LAB.retrieval_ranks, LAB.recall_at_k)
    assert "- image 2: c1 (0.87), c5✓ (0.80), c4✓ (0.61), c2 (0.10), c0 (0.00), c3 (0.00) → K=1 miss, K=2 hit" in text
    assert metrics["i2t_R@1"] == pytest.approx(2 / 3) and metrics["t2i_R@1"] == pytest.approx(4 / 6)
    assert metrics["i2t_R@2"] == metrics["t2i_R@2"] == 1.0
    assert text.count("K=1 miss") == 3  # image 2, captions 1 and 4
    assert "image→text R@1 = 66.7%, R@2 = 100.0%; text→image R@1 = 66.7%" in text  # read in percent, like every table


def test_caption_tokens_show_padding_and_mask(tiny_tower):
    from transformers import AutoTokenizer

    table = teach.caption_tokens_table(AutoTokenizer.from_pretrained(tiny_tower), ["a red circle", "a small blue square on the left"])
    masks = [line for line in table.splitlines() if line.startswith("| attention mask")]
    assert len(masks) == 2 and masks[0].count(" 0 ") > 0 and masks[1].count(" 0 ") == 0  # only the shorter one is padded
    assert "`<\\|startoftext\\|>`" in table and "`<\\|endoftext\\|>`" in table  # pipes escaped: one cell each in GFM


def test_the_code_of_every_variant_that_runs_is_shown_and_only_theirs():
    from helpers.clip import variants

    shown = teach.variant_code_markdown(["best", "head_ln"])  # best = optim+disc_lr+temp+bank
    headings = [line[len("#### ") :] for line in shown.splitlines() if line.startswith("#### ")]
    assert headings == ["`optim`", "`disc_lr`", "`temp`", "`bank`", "`head_ln`"]  # VARIANTS' order: the study's one order
    assert "def head_ln(" in shown and "the lab cell `head-ln` of 04_ablation.ipynb" in shown
    assert "```python\ndef logits(self" in shown and "def draw(self, step: int" in shown
    assert "```python\ndef optim_overrides(" in shown and "def temp_lr_multiplier(" in shown
    assert "def max_hinge_loss(" not in shown and "class CaptionSafeAugment" not in shown  # hardneg and augment did not run
    assert "the baseline's code is shown in notebook 02" in teach.variant_code_markdown([])
    for name, record in variants.records().items():  # every record's code is readable, and what the notebook shows
        assert record.combines or (record.code and record.source), name
