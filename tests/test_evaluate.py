"""Notebook 03's machinery: evaluation files, references, qualitative figures, the widget, zero-shot."""

import csv
import io

import pytest
import torch
from PIL import Image

from helpers.core import figures
from helpers.core.storage import read_json
from helpers.evaluation import evaluate, qualitative, widget
from helpers.store import runs


@pytest.fixture(scope="module")
def evaluated(trained):
    cfg, paths, _ = trained
    cfg = cfg.replace(eval_split="test")
    return cfg, paths, evaluate.evaluate(cfg, paths, device="cpu", progress=False)


@pytest.fixture(scope="module")
def index(evaluated, tiny_tower):
    _, _, result = evaluated
    return qualitative.RetrievalIndex.from_eval(result, str(tiny_tower))


def test_results_files_and_metrics(evaluated):
    _cfg, paths, result = evaluated
    run = paths.runs_dir / "shared"
    record = read_json(run / "eval_test.json")
    assert record["num_images"] == 50 and record["num_captions"] == 250 and record["split"] == "test"
    assert record["checkpoint"]["path"].endswith("best.pt") and len(record["checkpoint"]["sha256"]) == 64
    assert record["config"]["eval_split"] == "test" and record["protocol"] == "deterministic"
    m = record["metrics"]
    assert set(m) >= {"i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_R@5", "t2i_R@10", "i2t_median_rank", "rsum"}
    assert all(0 <= m[k] <= 1 for k in evaluate.RECALL_KEYS)
    assert m["t2i_R@10"] > 3 * 10 / 50  # trained: far above chance on the held-out test split
    assert record["metrics_1k"] is None  # fewer than 5,000 images
    assert result.image_features.shape == (50, 64) and len(set(result.data.dataset.image_ids)) == 50
    rows = list(csv.reader(io.StringIO((run / "eval_test.csv").read_text())))
    assert rows[0][0] == "model" and len(rows) == 1 + 1 + len(evaluate.REFERENCES)
    assert sum("[published" in r[0] and "not re-measured]" in r[0] for r in rows) == len(evaluate.REFERENCES) == 4
    assert abs(float(rows[1][2]) - 100 * m["i2t_R@1"]) < 0.01
    md = evaluate.results_markdown(record)
    assert "CLIP ViT-L/14@336px, zero-shot" in md and "58.4" in md and "not re-measured" in md
    vit_b32 = "| OpenAI CLIP ViT-B/32, zero-shot [published*, not re-measured] | MS-COCO 5k test (Karpathy) | 50.1 | 75.0 | 83.5 | 30.4 |"
    assert vit_b32 in md  # as open_clip's table prints them (verified there: 50.12/75.00/83.52, 30.44/55.94/66.87)
    assert "OpenAI CLIP RN50, zero-shot" in md and "\"image retrieval\" means text→image" in md
    assert "Radford et al. 2021, *Learning Transferable Visual Models From Natural Language Supervision*, Table 13" in md
    assert "arXiv:1707.05612" in md and "COMPARE_ZERO_SHOT=True" in md  # ViT-B/32 has no published row: measure it
    assert record["scored_images"]["seen_in_training"] == 0 and record["scored_images"]["num_images"] == 50


def test_other_splits_and_run_lookup(trained):
    cfg, paths, _ = trained
    val2014 = evaluate.evaluate(cfg.replace(eval_split="val2014"), paths, device="cpu", progress=False)
    assert val2014.record["num_images"] == 100
    with pytest.raises(FileNotFoundError, match="No run 'nope'.*shared"):
        runs.find_run(cfg.replace(run_name="nope"), paths)
    assert runs.find_run(cfg.replace(run_name=None), paths).name in {p.name for p in paths.runs_dir.iterdir()}


def test_text_query_returns_distinct_ranked_images(index):
    hits = index.search("a red circle on the left", 5)
    assert len(hits) == 5 and len({h.image_id for h in hits}) == 5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    q = index.encode_queries(["a red circle on the left"])[0]
    best = int(torch.argmax(index.image_features @ q))
    assert hits[0].image_id == index.image_ids[best] and hits[0].caption
    assert index.search("   ", 5) == []


def test_classification_probabilities(index):
    scores = index.classify(index.image_features[0], ["a red shape", "a blue shape", "a green shape"])
    assert abs(sum(p for _, p in scores) - 1) < 1e-5 and scores[0][1] >= scores[-1][1]
    emb = index.class_embeddings(["a cat", "a dog"])
    assert emb.shape == (2, 64) and torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_qualitative_figures(evaluated, index, tmp_path):
    _, _, result = evaluated
    captions = [result.data.text["captions"][r] for r in result.caption_rows]
    figs = {
        "queries": qualitative.query_grid(index, ["a red circle", "sport"], k=5),
        "classes": qualitative.classification_figure(index, index.image_ids[:2], ["a person", "an animal", "a landscape"]),
        "heatmap": qualitative.similarity_heatmap(index, result.text_features, result.text_to_image, n=6),
    }
    figs["good"], figs["bad"] = qualitative.success_failure_grids(index, result.text_features, result.text_to_image, captions)
    for name, fig in figs.items():
        path = figures.save_figure(fig, tmp_path / f"{name}.png")
        assert Image.open(path).size[0] > 300
    assert len([ax for ax in figs["queries"].axes if ax.images]) == 10
    import re

    for name, lowest in (("good", 1), ("bad", 6)):  # failures: the true image outside the top 5, shown with its rank
        titles = [ax.get_title() for ax in figs[name].axes]
        queries = [t for t in titles if t == "query"]
        ranks = [int(m.group(1).replace(",", "")) for t in titles if (m := re.match(r"true image: rank ([\d,]+) of ", t))]
        assert queries and len(ranks) == len(queries) and "ground truth" not in " ".join(titles)
        assert all(r == 1 for r in ranks) if name == "good" else all(r >= lowest for r in ranks), (name, ranks)
    thumbnails = [ax for ax in figs["heatmap"].axes[0].child_axes if ax.images]
    assert len(thumbnails) == 6  # each heatmap row is labelled by its image, not by an id
    assert not any(label.get_text() for label in figs["heatmap"].axes[0].get_yticklabels())


def test_widget_callbacks_without_a_browser(index):
    explorer = widget.Explorer(index, ["a person", "an animal", "a landscape"], query="a blue square")
    explorer.query.value = "a green triangle on the right"  # fires the observer, like pressing Enter
    assert len(explorer.last_hits) == 5 and explorer.last_hits == index.search("a green triangle on the right", 5)
    explorer.k.value = 3
    assert len(explorer.last_hits) == 3
    explorer.image_pick.value = index.image_ids[3]
    assert [c for c, _ in explorer.last_scores] and abs(sum(p for _, p in explorer.last_scores) - 1) < 1e-5
    buf = io.BytesIO()
    Image.new("RGB", (120, 90), (220, 30, 30)).save(buf, format="PNG")
    explorer._on_upload({"x.png": {"content": buf.getvalue()}})  # ipywidgets 7 shape
    explorer._on_upload(({"name": "x.png", "content": memoryview(buf.getvalue())},))  # ipywidgets 8 shape
    assert len(explorer.last_scores) == 3


def test_explorer_first_state_and_bad_uploads(index, monkeypatch):
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: None)
    explorer = widget.Explorer(index, ["a red shape", "a blue shape"], query="a red circle")
    explorer.show()
    assert len(explorer.last_hits) == 5 and len(explorer.last_scores) == 2  # the first image is scored at start
    explorer._on_upload(({"name": "empty.png", "content": b""},))
    assert "arrived empty" in explorer.last_message and "1 MB" in explorer.last_message
    explorer._on_upload(({"name": "huge.jpg", "content": b"x" * (widget.UPLOAD_LIMIT_BYTES + 1)},))
    assert "huge.jpg is 0.9 MB" in explorer.last_message and "Downscale" in explorer.last_message
    explorer._on_upload(({"name": "notes.txt", "content": b"not an image"},))
    assert "not an image Pillow can read" in explorer.last_message
    explorer._on_upload(())  # a reset widget: nothing happens
    assert "not an image" in explorer.last_message


def test_zero_shot_image_tower(tmp_path, evaluated):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from helpers.evaluation.zero_shot import zero_shot_image_features

    cfg = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=16, projection_dim=64
    )
    CLIPVisionModelWithProjection(cfg).save_pretrained(tmp_path / "tiny-vision")
    _, _, result = evaluated
    ids = result.data.dataset.image_ids[:10]
    feats = zero_shot_image_features(
        str(tmp_path / "tiny-vision"), result.data.cache, ids, torch.device("cpu"), batch_size=4, progress=False
    )
    assert feats.shape == (10, 64) and torch.allclose(feats.norm(dim=-1), torch.ones(10), atol=1e-5)
    with pytest.raises(OSError, match="COMPARE_ZERO_SHOT"):
        zero_shot_image_features(str(tmp_path / "missing"), result.data.cache, ids, torch.device("cpu"))


def test_class_bars_print_their_values(index):
    from helpers.evaluation import qualitative

    classes = ["a red shape", "a blue shape", "a green shape"]
    fig = qualitative.classification_figure(index, index.image_ids[:2], classes)
    values = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert len(values) == 6 and all(0 <= float(v) <= 1 for v in values)
    for bars in fig.axes[1::2]:  # every row lists the classes in the order given, the first at the top
        assert [t.get_text() for t in bars.get_yticklabels()] == classes[::-1]


def test_run_name_none_picks_the_newest_finished_baseline(workspace, tmp_path, capsys):
    import os
    import shutil

    from helpers.core import env
    from helpers.core.storage import atomic_write_json

    cfg, _ = workspace
    art = tmp_path / "art"
    (art / "runs").mkdir(parents=True)
    layout = (("old-base", "baseline", True, 300), ("new-variant", "temp", True, 100), ("training", "baseline", False, 0))
    for name, variant, finished, age in layout:
        run = art / "runs" / name
        run.mkdir()
        atomic_write_json(run / "config.json", {"variant": variant})
        (run / "best.pt").write_bytes(b"x")
        if finished:
            atomic_write_json(run / "metrics.json", {})
            os.utime(run / "metrics.json", (1e9 - age, 1e9 - age))
    probe = env.resolve_paths(cfg.replace(artifacts_dir=str(art), run_name=None), environment="local")
    chosen = runs.find_run(cfg.replace(run_name=None, variant="head_ln"), probe)
    assert chosen.name == "old-base"  # a finished baseline beats a newer variant; the run still training is never picked
    assert "newest finished baseline run, old-base" in capsys.readouterr().out
    shutil.rmtree(art / "runs" / "old-base")
    assert runs.find_run(cfg.replace(run_name=None, variant="head_ln"), probe).name == "new-variant"
    assert "no finished baseline run yet" in capsys.readouterr().out
