"""Synthetic results say so wherever they can be pasted, from the data's own record (its caption files), and a run on
data that is not generated never carries the mark."""

from __future__ import annotations

import csv
import io
import json
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pytest
from conftest import TRAIN_BASE, make_cfg
from PIL import Image

from helpers.core import env
from helpers.core.figures import save_figure
from helpers.core.provenance import source_record, synthetic_artifacts
from helpers.data import prepare
from helpers.data.coco import load_captions
from helpers.evaluation import evaluate
from helpers.study import report
from helpers.training import train

COCO_INFO = {  # the info block of COCO's own captions_*2014.json (no word of "synthetic")
    "description": "This is stable 1.0 version of the 2014 MS COCO dataset.",
    "url": "http://mscoco.org",
    "version": "1.0",
    "year": 2014,
    "contributor": "Microsoft COCO group",
    "date_created": "2015-01-27 09:11:52.357475",
}


def _not_generated(coco):
    """The same layout with COCO's own info block: a folder that did not come from the generator."""
    for folder in ("train2014", "val2014"):
        path = coco / "annotations" / f"captions_{folder}.json"
        doc = json.loads(path.read_text())
        doc["info"] = COCO_INFO
        path.write_text(json.dumps(doc))
    return coco


def _figure_pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_the_caption_files_say_whether_the_data_is_generated(coco_copy):
    tables = {f: load_captions(coco_copy, f) for f in ("train2014", "val2014")}
    assert all(t.synthetic for t in tables.values())
    assert all(part["synthetic"] is True for part in source_record(tables, {}).values())
    _not_generated(coco_copy)
    tables = {f: load_captions(coco_copy, f) for f in ("train2014", "val2014")}
    assert not any(t.synthetic for t in tables.values())
    assert all("synthetic" not in part for part in source_record(tables, {}).values())  # COCO's record is unchanged


def test_a_figure_of_synthetic_artifacts_carries_a_visible_mark_and_another_does_not(tmp_path):
    """The same figure saved into two ARTIFACTS_DIRs: the synthetic one's PNG differs where the mark is (a band of red
    across the middle) and says so in its metadata; the other is untouched."""
    pictures = {}
    for name, source in (("synthetic", {"train2014": {"synthetic": True}}), ("coco", {"train2014": {"images": "x"}})):
        art = tmp_path / name
        art.mkdir()
        (art / "splits.json").write_text(json.dumps({"source": source}))
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot([0, 1], [0, 1], color="black")
        pictures[name] = save_figure(fig, art / "runs" / "r" / "curve.png")
        plt.close(fig)
    assert synthetic_artifacts(tmp_path / "synthetic" / "runs" / "r") and not synthetic_artifacts(tmp_path / "coco")
    assert "SYNTHETIC" in Image.open(pictures["synthetic"]).info.get("Description", "")
    assert "Description" not in Image.open(pictures["coco"]).info
    marked, plain = _figure_pixels(pictures["synthetic"]), _figure_pixels(pictures["coco"])
    reddish = lambda px: ((px[..., 0] - px[..., 1] > 25) & (px[..., 0] - px[..., 2] > 25)).mean()  # noqa: E731
    assert reddish(marked) > 0.02 and reddish(plain) == 0


@pytest.fixture(scope="module")
def coco_layout_run(tmp_path_factory, synthetic_coco, tiny_tower):
    """01's steps, one short training, 03's evaluation and 05's report on a COCO-layout folder whose caption files are
    not the generator's."""
    root = tmp_path_factory.mktemp("real-layout")
    coco = _not_generated(shutil.copytree(synthetic_coco, root / "coco"))
    cfg = make_cfg(DATA_SOURCE="local", DATA_DIR=str(coco), ARTIFACTS_DIR=str(root / "art"), TEXT_MODEL=str(tiny_tower),
                   **TRAIN_BASE)  # fmt: skip
    paths = env.resolve_paths(cfg, environment="local")
    data = prepare.scan(coco)
    splits = prepare.build_splits(cfg, paths, data)
    prepare.cache_images(cfg, paths, data, splits, workers=1, progress=False)
    prepare.cache_captions(cfg, paths, data, splits, device="cpu", progress=False)
    cfg = cfg.replace(epochs=1, max_steps_per_epoch=2, run_name="real")
    train.train(cfg, paths, progress=False, log=lambda m: None)
    evaluate.evaluate(cfg, paths, device="cpu", progress=False)
    return paths, report.build_report(paths)


def test_a_run_on_data_that_is_not_generated_never_says_synthetic(coco_layout_run):
    paths, built = coco_layout_run
    run = paths.runs_dir / "real"
    for text in (built.path.read_text(), (run / "eval_test.csv").read_text()):
        assert text.lower().count("synthetic") == 0
    assert json.loads((run / "eval_test.json").read_text())["scored_images"]["synthetic"] is False
    assert json.loads((run / "metrics.json").read_text())["data"]["synthetic"] is False
    assert built.path.read_text().startswith("# CLIP fine-tuning on MS COCO 2014: lab report")
    for png in [run / "loss_curves.png", *(built.path.parent / "figures").glob("*.png")]:
        assert "Description" not in Image.open(png).info, png


def test_a_synthetic_run_says_so_in_the_report_the_csv_and_the_figures(trained, tmp_path):
    """The session's shared run (generated data): the report's title and first lines, its data section, every row of
    this run in the CSV and the results table, and its loss curves."""
    cfg, paths, _ = trained
    art = shutil.copytree(paths.artifacts_dir, tmp_path / "art")
    copy = env.Paths.for_artifacts(art)
    evaluate.evaluate(cfg.replace(artifacts_dir=str(art)), copy, device="cpu", progress=False)
    text = report.build_report(copy, "shared").path.read_text()
    assert text.startswith("# CLIP fine-tuning on SYNTHETIC demo data (not MS COCO 2014): lab report\n\n> **SYNTHETIC DATA.**")
    assert "SYNTHETIC images (train2014 layout, generated)" in text.split("## 2. Data", 1)[1].split("\n## ", 1)[0]
    assert "**SYNTHETIC DATA: these figures come from generated images" in text.split("## 6.", 1)[1].split("\n## ", 1)[0]
    rows = list(csv.reader(io.StringIO((art / "runs" / "shared" / "eval_test.csv").read_text())))
    assert rows[0][2] == "image_to_text_R@1_%" and rows[0][-1] == "rsum_of_600"
    ours = [r for r in rows[1:] if r[0].startswith("this run")]
    assert ours and all("SYNTHETIC images (not COCO)" in r[1] for r in ours)
    assert all("SYNTHETIC" not in r[1] for r in rows[1:] if "published" in r[0])  # the quoted rows are COCO's
    assert "SYNTHETIC" in Image.open(art / "runs" / "shared" / "loss_curves.png").info.get("Description", "")
