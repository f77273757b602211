"""Zero-shot classification over COCO's categories: notebook 03's lab cell against references, the categories artifact
notebook 01 writes, and evaluate's record (run, zero-shot CLIP, chance; skipped with the reason when it cannot score)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from sklearn.metrics import average_precision_score

from helpers.core.lab import LabCell, LabCode, YourCodeError
from helpers.data import categories, prepare
from helpers.evaluation import classification, evaluate

LAB = LabCode.shipped()  # notebook 03's cell, as the notebook on disk holds it


@pytest.mark.parametrize("ties", [False, True])
def test_average_precision_matches_scikit_learn(ties):
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(300, 12, generator=g)
    if ties:  # a coarse score: many images level with each other, which scikit-learn groups into one threshold
        scores = (scores * 4).round() / 4
    labels = torch.rand(300, 12, generator=g) < 0.15
    labels[:, 11] = False  # a category no image holds: NaN, left out of mAP
    ap = LAB.average_precision(scores, labels)
    for c in range(11):
        assert ap[c].item() == pytest.approx(average_precision_score(labels[:, c].numpy(), scores[:, c].numpy()), abs=1e-6)
    assert math.isnan(ap[11].item())


def test_average_precision_and_top_k_by_hand():
    # 4 images, 3 categories. Category 0 held by images 0 and 2; ranked by its score: image 0 (0.9), 1 (0.8), 2 (0.7), 3.
    # AP = (1/1 * 1/2) + (2/3 * 1/2) = 0.8333
    scores = torch.tensor([[0.9, 0.1, 0.2], [0.8, 0.5, 0.1], [0.7, 0.9, 0.3], [0.1, 0.2, 0.8]])
    labels = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0]], dtype=torch.bool)
    ap = LAB.average_precision(scores, labels)
    assert ap[0].item() == pytest.approx(5 / 6)
    assert ap[1].item() == pytest.approx(1 / 2)  # image 1 holds it, ranked 2nd (image 2 scores 0.9)
    # top-1: image 0 best = cat 0 (right); image 1 best = cat 0 (wrong); image 2 best = cat 1 (wrong); image 3: no objects
    assert LAB.top_k_accuracy(scores, labels, 1) == pytest.approx(1 / 3)
    assert LAB.top_k_accuracy(scores, labels, 2) == pytest.approx(3 / 3)
    level = torch.zeros(4, 3)  # a model that scores every category alike: ties count against the image
    assert LAB.top_k_accuracy(level, labels, 1) == 0.0
    assert LAB.average_precision(level, labels)[0].item() == pytest.approx(0.5)  # one threshold: the prevalence


def test_chance_is_the_expected_figure_of_a_random_ranking():
    labels = torch.zeros(6, 4, dtype=torch.bool)
    labels[torch.arange(6), torch.tensor([0, 1, 2, 3, 0, 1])] = True
    expected = classification.chance(labels)
    assert expected["top1"] == pytest.approx(1 / 4) and expected["top5"] == pytest.approx(1.0)  # 4 categories: any 4 hold it
    g = torch.Generator().manual_seed(1)
    draws = [LAB.top_k_accuracy(torch.rand(6, 4, generator=g), labels, 1) for _ in range(4000)]
    assert sum(draws) / len(draws) == pytest.approx(1 / 4, abs=0.01)


def _categories_for(prepared_fixture, tmp_path):
    """A private ARTIFACTS_DIR copy with notebook 01's categories step run on it."""
    from helpers.core import env

    art = tmp_path / "art"
    shutil.copytree(prepared_fixture["paths"].artifacts_dir, art)
    paths = env.resolve_paths(prepared_fixture["cfg"].replace(artifacts_dir=str(art)), environment="local")
    line = prepare.cache_categories(prepared_fixture["cfg"], paths, prepared_fixture["data"], prepared_fixture["splits"])
    return paths, line


def test_notebook_01_keeps_the_categories_of_every_cached_val_image_and_skips_when_done(prepared, tmp_path):
    paths, line = _categories_for(prepared, tmp_path)
    record = json.loads(categories.artifact_path(paths.artifacts_dir).read_text())
    val_ids = sorted(set(prepared["splits"].val) | set(prepared["splits"].test))
    assert sorted(map(int, record["labels"])) == val_ids and len(record["categories"]) == 18
    instances = json.loads(categories.instances_path(prepared["data"].data_dir).read_text())
    one = instances["annotations"][0]
    assert one["category_id"] in record["labels"][str(one["image_id"])]  # the file's own pairs, kept
    assert record["synthetic"] is True and "18 categories over" in line
    again = prepare.cache_categories(prepared["cfg"], paths, prepared["data"], prepared["splits"])
    assert "up to date" in again


def test_categories_of_other_data_or_missing_images_are_not_used(prepared, tmp_path):
    paths, _ = _categories_for(prepared, tmp_path)
    from helpers.data.splits import load_splits

    source = load_splits(paths).source["val2014"]
    ids = prepared["splits"].test
    assert isinstance(categories.load_categories(paths.artifacts_dir, source, ids), categories.Categories)
    other = {**source, "annotations_sha256": "0" * 64}
    assert "other data" in categories.load_categories(paths.artifacts_dir, other, ids)
    assert "no categories for 1 of" in categories.load_categories(paths.artifacts_dir, source, [*ids, 999_999_999])
    categories.artifact_path(paths.artifacts_dir).unlink()
    reason = categories.load_categories(paths.artifacts_dir, source, ids)
    assert "No categories_val2014.json" in reason and "instances_val2014.json" in reason and "01_dataset_prep" in reason


def test_an_edited_or_unsealed_categories_file_is_not_used_and_01_writes_it_again(prepared, tmp_path):
    """categories_val2014.json is sealed: a label changed by hand (or the seal removed by a tool) is never scored; 03
    says so, and the next 01 writes the file again instead of calling it up to date."""
    from helpers.core.storage import atomic_write_json
    from helpers.data.splits import load_splits

    paths, _ = _categories_for(prepared, tmp_path)
    path = categories.artifact_path(paths.artifacts_dir)
    source, ids = load_splits(paths).source["val2014"], prepared["splits"].test
    record = json.loads(path.read_text())
    first = str(ids[0])
    edited = {**record, "labels": {**record["labels"], first: [*record["labels"][first], 999]}}
    for broken in (edited, {k: v for k, v in record.items() if k != "seal"}):
        atomic_write_json(path, broken)
        reason = categories.load_categories(paths.artifacts_dir, source, ids)
        assert isinstance(reason, str) and "changed after notebook 01 wrote it" in reason and "01_dataset_prep" in reason
        line = prepare.cache_categories(prepared["cfg"], paths, prepared["data"], prepared["splits"])
        assert "up to date" not in line and json.loads(path.read_text()) == record  # written again, as 01 first wrote it
        assert isinstance(categories.load_categories(paths.artifacts_dir, source, ids), categories.Categories)


def test_an_absent_instances_file_is_said_and_removes_a_stale_artifact(tmp_path):
    art = tmp_path / "art"
    art.mkdir()
    categories.artifact_path(art).write_text("{}")  # written from other data earlier
    line = categories.cache_categories(tmp_path / "coco", art, [1, 2], {}, False)
    assert "No instances_val2014.json" in line and "skip" in line and "annotations_trainval2014.zip" in line
    assert not categories.artifact_path(art).exists()


@pytest.fixture
def scored(trained):
    """The shared run scored on its test split with the categories (and the tiny tower's image half as zero-shot CLIP)."""
    cfg, paths, _ = trained
    from helpers.data.splits import load_splits

    splits = load_splits(paths)
    data = prepare.scan(Path(cfg.data_dir))
    prepare.cache_categories(cfg, paths, data, splits)
    try:
        yield cfg, paths, evaluate.evaluate(cfg.replace(compare_zero_shot=True), paths, device="cpu", progress=False)
    finally:
        categories.artifact_path(paths.artifacts_dir).unlink(missing_ok=True)


def test_evaluate_records_the_run_zero_shot_and_chance(scored):
    _, _, result = scored
    record = result.record["classification"]
    assert record["categories"] == 18 and record["images"] == result.record["num_images"] and record["synthetic"] is True
    for row in ("run", "zero_shot"):
        assert 0.0 <= record[row]["top1"] <= record[row]["top5"] <= 1.0 and 0.0 < record[row]["mAP"] <= 1.0
    assert record["run"]["mAP"] == pytest.approx(sum(record["run"]["ap"].values()) / len(record["run"]["ap"]))
    table = classification.classification_markdown(record)
    assert "zero-shot tiny-clip-text (measured here)" in table and "random ranking (expected)" in table and "SYNTHETIC" in table
    assert "zero-shot CLIP" not in table  # the tower measured is named: here the tiny one, never "CLIP" by default
    assert f"| {100 * record['run']['top1']:.1f} |" in table
    assert result.tower is not None  # loaded once: 03's queries reuse it
    fig = classification.category_figure(record)
    shown = len(fig.axes[0].get_yticklabels())
    assert shown == len(record["run"]["ap"]) == record["categories_present"] <= 18  # few categories: every one present shown


def test_without_categories_evaluate_says_why_and_scores_retrieval(trained):
    cfg, paths, _ = trained
    result = evaluate.evaluate(cfg, paths, device="cpu", progress=False)
    assert "skipped" in result.record["classification"] and result.record["metrics"]["rsum"] > 0
    assert "No categories_val2014.json" in classification.classification_markdown(result.record["classification"])


TOP_K_LINE = "return (wrong_at_or_above < k).float().mean().item()"
CLASSIFICATION_SLIPS = {  # an edit of 03's zero-shot-classification cell, and the message that names it
    "scores of images against images": (
        "return image_features.float() @ prompt_features.float().t()", "return image_features.float() @ image_features.float().t()",
        r"Your `category_scores` \(the lab cell `zero-shot-classification` of 03_evaluate_clip\.ipynb\) returned "
        r"a tensor of shape \(2, 2\)"),
    "accuracy in percent": (TOP_K_LINE, TOP_K_LINE.replace("return (", "return 100 * ("),
                            r"Your `top_k_accuracy` .* returned 100\.0; an accuracy is a fraction in \[0, 1\]"),
    "AP of present categories only": ("\n    return ap", "\n    return ap[~ap.isnan()]",
                                      r"Your `average_precision` .* the kit needs one average precision per category, 3 numbers"),
    "AP raises": ("ap[c] = (precision * recall_added).sum()", "ap[c] = (precision * recall_added).sum() / 0.0 + labels.missing",
                  r"Your code raised AttributeError in `average_precision`, in `average_precision`, line \d+ of the lab cell"),
}  # fmt: skip


@pytest.mark.parametrize("slip", sorted(CLASSIFICATION_SLIPS))
def test_a_slip_in_03s_classification_cell_is_named(slip):
    from helpers.core.config import from_params, with_lab

    old, new, message = CLASSIFICATION_SLIPS[slip]
    assert old in LAB.cell("03:zero-shot-classification").source
    cells = [c if c.cell_id != "zero-shot-classification" else LabCell(c.notebook, c.cell_id, c.source.replace(old, new, 1))
             for c in LAB.cells]  # fmt: skip
    edited = with_lab(from_params({}), LabCode(cells))
    assert list(edited.lab.edited(("03",))) == ["03:zero-shot-classification"]
    labels = categories.Categories(["a", "b", "c"], [1, 2, 3], {5: [1], 6: [2]}, "")
    features, prompts = torch.eye(2, 4), torch.eye(3, 4)
    assert classification._summary(with_lab(from_params({}), LAB), features, prompts, labels.matrix([5, 6]), labels)["top1"] == 1.0
    with pytest.raises(YourCodeError, match=message):
        classification._summary(edited, features, prompts, labels.matrix([5, 6]), labels)
