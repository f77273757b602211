"""Provenance: every artifact knows what it was made from, and nothing combines artifacts that do not belong together.

Each case is what a user did between two notebooks (01 re-run with other settings, a run continued, a file
deleted); the test asserts that the reader refuses clearly or uses another run, and never reuses silently.
The chain tests run 01 -> 02 -> 01 changed -> 02/03/05 on a private copy of the synthetic workspace.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from helpers.clip.identity import run_identity
from helpers.clip.metrics import NonFiniteFeatures, retrieval_metrics
from helpers.core import config, env
from helpers.core.artifacts import ArtifactError
from helpers.core.config import ConfigError
from helpers.core.lab import LabCode
from helpers.core.provenance import ProvenanceMismatch
from helpers.core.storage import atomic_torch_save, read_json, torch_load
from helpers.data import prepare
from helpers.data.image_cache import ImageCache
from helpers.evaluation import evaluate
from helpers.store import runs
from helpers.study import report
from helpers.training import train
from helpers.training.recovery import TrainingDiverged

LAB = LabCode.shipped()  # the lab's cells, as the notebooks hold them


def quiet(cfg, paths, **kw):
    return train.train(cfg, paths, progress=False, log=lambda m: None, **kw)


@pytest.fixture
def chain(workspace, tmp_path):
    """A private copy of the workspace's data and artifacts, and a 1-epoch run "r" trained on it."""
    cfg, paths = workspace
    coco = Path(shutil.copytree(cfg.data_dir, tmp_path / "coco"))
    art = tmp_path / "art"
    art.mkdir()
    for item in paths.artifacts_dir.iterdir():
        if item.is_file():
            shutil.copy2(item, art / item.name)
    shutil.copytree(paths.image_cache_dir, art / "image_cache")
    cfg = cfg.replace(artifacts_dir=str(art), data_dir=str(coco), run_name="r", epochs=1, max_steps_per_epoch=2)
    paths = env.resolve_paths(cfg, environment="local")
    quiet(cfg, paths)
    return cfg, paths


def _prepare_again(cfg, paths, **changes):
    """Notebook 01 re-run with other settings: splits, image cache and caption caches as it would rebuild them."""
    cfg01 = cfg.replace(**changes)
    data = prepare.scan(Path(cfg01.data_dir))
    splits = prepare.build_splits(cfg01, paths, data)
    prepare.cache_images(cfg01, paths, data, splits, workers=1, progress=False)
    prepare.cache_captions(cfg01, paths, data, splits, device="cpu", progress=False)
    return cfg01


def _refusals(cfg, paths, artifact: str):
    """02 (continue and reuse) and 03 all refuse to combine run "r" with the changed data, naming ``artifact``."""
    with pytest.raises(ProvenanceMismatch, match=rf"Run r .* was made from other data .*{artifact}.*FORCE_RETRAIN"):
        quiet(cfg.replace(epochs=2), paths)  # continue
    with pytest.raises(ProvenanceMismatch, match=rf"{artifact}"):
        quiet(cfg, paths)  # reuse the finished run
    with pytest.raises(ProvenanceMismatch, match=rf"Run r .* was made from other data .*{artifact}.*01_dataset_prep"):
        evaluate.evaluate(cfg.replace(eval_split="test"), paths, device="cpu", progress=False)


def test_redrawn_splits_are_never_combined_with_a_run(chain):
    cfg, paths = chain
    evaluate.evaluate(cfg.replace(eval_split="test"), paths, device="cpu", progress=False)
    _prepare_again(cfg, paths, seed=1)  # 01 with SEED=1: other val/test images
    _refusals(cfg, paths, r"splits\.json")
    text = report.build_report(paths, "r").path.read_text()  # the run's own test figures, with its own data facts
    assert "`splits.json` was re-drawn after run `r` trained" in text and "(its own record)" in text
    fresh = quiet(cfg.replace(force_retrain=True), paths)  # the fix the message names works
    assert not fresh.skipped and evaluate.evaluate(cfg.replace(eval_split="test"), paths, device="cpu", progress=False).record


def test_the_doctor_says_whether_the_configured_run_can_be_continued(chain):
    from helpers import doctor

    cfg, paths = chain
    state, problem = doctor.run_state(cfg, paths)
    assert state == "`r`: finished after 1 epoch(s), made from the current data" and problem is None
    _prepare_again(cfg, paths, seed=1)
    facts = doctor.inspect(cfg, paths)
    assert "cannot be continued or reused" in facts["run"]
    warnings = doctor.warnings_for({**facts, "gpu": "T4"})
    assert any(re.search(r"Run r .* was made from other data .*splits\.json", w) for w in warnings)


def test_a_rebuilt_image_cache_is_never_combined_with_a_run(chain):
    cfg, paths = chain
    _prepare_again(cfg, paths, image_size=96)
    with pytest.raises(ConfigError, match="IMAGE_SIZE=64, but the image cache holds 96px"):
        quiet(cfg.replace(epochs=2), paths)
    with pytest.raises(ProvenanceMismatch, match=r"image size: 64 then, 96 now"):
        evaluate.evaluate(cfg.replace(eval_split="test"), paths, device="cpu", progress=False)


def test_another_dataset_with_the_same_image_ids_is_rebuilt_and_never_combined(chain):
    cfg, paths = chain
    captions = Path(cfg.data_dir) / "annotations" / "captions_val2014.json"
    data = json.loads(captions.read_text())
    for ann in data["annotations"]:
        ann["caption"] = ann["caption"] + " seen from far away"
    captions.write_text(json.dumps(data))
    other_picture = sorted((Path(cfg.data_dir) / "train2014").iterdir())[0].read_bytes()
    for image in sorted((Path(cfg.data_dir) / "val2014").iterdir())[:5]:  # other image files under the same names too
        image.write_bytes(other_picture)
    before = read_json(paths.image_cache_dir / "manifest.json")["parts"]["val2014"]["ids_digest"]
    _prepare_again(cfg, paths)
    after = read_json(paths.image_cache_dir / "manifest.json")["parts"]["val2014"]["ids_digest"]
    assert before != after  # 01 rebuilt the val2014 part (the same ids, another source)
    assert torch_load(paths.text_embeds_path("val"))["captions"][0].endswith("seen from far away")  # and its captions
    source = prepare.scan(Path(cfg.data_dir)).source()
    for split, folder in (("train", "train2014"), ("val", "val2014")):  # each caption cache records its own folder's source
        assert torch_load(paths.text_embeds_path(split))["config"]["source"] == source[folder]
    _refusals(cfg, paths, r"splits\.json")


def test_caches_copied_in_from_another_project_are_never_combined(chain, tmp_path):
    """Students share caches: another project's image_cache/ (or caption caches), with the same image ids, copied in."""
    cfg, paths = chain
    other_coco = Path(shutil.copytree(cfg.data_dir, tmp_path / "other-coco"))
    for folder in ("train2014", "val2014"):
        captions = other_coco / "annotations" / f"captions_{folder}.json"
        data = json.loads(captions.read_text())
        for ann in data["annotations"]:
            ann["caption"] = "another project: " + ann["caption"]
        captions.write_text(json.dumps(data))
        pictures = sorted((other_coco / folder).iterdir())
        for image in pictures[1:6]:  # other pixels under the same names
            image.write_bytes(pictures[0].read_bytes())
    other = cfg.replace(artifacts_dir=str(tmp_path / "other-art"), data_dir=str(other_coco))
    other_paths = env.resolve_paths(other, environment="local")
    _prepare_again(other, other_paths)

    own_cache = Path(shutil.move(paths.image_cache_dir, tmp_path / "own-cache"))
    shutil.copytree(other_paths.image_cache_dir, paths.image_cache_dir)  # their image cache, our splits and captions
    with pytest.raises(ProvenanceMismatch, match=r"train2014 images were cached from other files than splits\.json.*01_dataset_prep"):
        quiet(cfg.replace(run_name="new"), paths)  # 02: a new run, before its first step
    with pytest.raises(ProvenanceMismatch, match=r"val2014 images were cached from other files"):
        evaluate.evaluate(cfg.replace(eval_split="test"), paths, device="cpu", progress=False)  # 03, before it scores
    shutil.rmtree(paths.image_cache_dir)
    shutil.move(own_cache, paths.image_cache_dir)
    for split in ("train", "val"):  # now their caption caches, with the same caption ids and count
        shutil.copy2(other_paths.text_embeds_path(split), paths.text_embeds_path(split))
    with pytest.raises(ProvenanceMismatch, match=r"train_text_embeds\.pt was encoded from another caption file"):
        quiet(cfg.replace(run_name="new"), paths)
    with pytest.raises(ProvenanceMismatch, match=r"val_text_embeds\.pt was encoded from another caption file"):
        evaluate.evaluate(cfg.replace(eval_split="test"), paths, device="cpu", progress=False)
    assert not (paths.runs_dir / "new" / "checkpoint.pt").exists()  # nothing trained on the mixture


def test_a_run_continued_after_01_changed_train_images_is_refused(chain):
    cfg, paths = chain
    _prepare_again(cfg, paths, train_images=100)
    with pytest.raises(ProvenanceMismatch, match=r"splits\.json .*the cached train images"):
        quiet(cfg.replace(epochs=2), paths)
    assert read_json(paths.runs_dir / "r" / "history.json")["epochs"][-1]["epoch"] == 1  # nothing was trained on the new split


def test_a_caption_cache_of_another_text_model_is_never_combined(chain, tmp_path):
    from helpers.data.synthetic import all_captions, make_tiny_text_tower

    cfg, paths = chain
    other = make_tiny_text_tower(tmp_path / "other-tower", all_captions(Path(cfg.data_dir)), seed=1)
    for split in ("train", "val"):
        paths.text_embeds_path(split).unlink()
    _prepare_again(cfg, paths, text_model=str(other))
    with pytest.raises(ProvenanceMismatch, match=r"text model: 'local:[0-9a-f]{16}' then, 'local:[0-9a-f]{16}' now"):
        evaluate.evaluate(cfg.replace(eval_split="test", text_model=str(other)), paths, device="cpu", progress=False)


def test_a_local_text_tower_is_known_by_its_content_not_its_path(chain, tmp_path):
    """TEXT_MODEL names a folder on Drive; another tower of the same width is saved over it (patch16 over patch32)."""
    from helpers.data.dataset import TextCacheMismatch
    from helpers.data.synthetic import all_captions, make_tiny_text_tower
    from helpers.evaluation import qualitative

    cfg, paths = chain
    tower = Path(shutil.copytree(cfg.text_model, tmp_path / "drive" / "tower"))
    moved = cfg.replace(text_model=str(tower))
    assert run_identity(moved)["text_model"] == run_identity(cfg)["text_model"]  # the same tower elsewhere
    assert runs.run_name_for(moved.replace(run_name=None)) == runs.run_name_for(cfg.replace(run_name=None))
    assert quiet(moved, paths).skipped  # ... is the same run: reused
    before = torch_load(paths.text_embeds_path("train"))["model_id"]
    result = evaluate.evaluate(moved.replace(eval_split="test"), paths, device="cpu", progress=False)

    make_tiny_text_tower(tower, all_captions(Path(cfg.data_dir)), seed=1)  # overwritten in place: same width, other weights
    with pytest.raises(TextCacheMismatch, match="live queries would land in another text space"):
        qualitative.RetrievalIndex.from_eval(result, str(tower)).search("a red circle")  # 03's explorer, still open
    with pytest.raises(TextCacheMismatch, match="the folder now holds another tower|was encoded with TEXT_MODEL"):
        evaluate.evaluate(moved.replace(eval_split="test"), paths, device="cpu", progress=False)  # 03 before 01 re-ran
    with pytest.raises(TextCacheMismatch, match="the folder now holds another tower|was encoded with TEXT_MODEL"):
        quiet(moved.replace(run_name=None), paths)  # 02 before 01 re-ran: no run trains on the old cache
    _prepare_again(moved, paths)  # 01 again: "up to date" no longer, the captions are encoded anew
    assert torch_load(paths.text_embeds_path("train"))["model_id"] != before
    with pytest.raises(ConfigError, match=r"TEXT_MODEL: 'local:[0-9a-f]{16}' \(stored\) vs 'local:[0-9a-f]{16}' \(now\)"):
        quiet(moved, paths)  # 02 with RUN_NAME="r": never "already finished"
    with pytest.raises(ProvenanceMismatch, match="text model"):
        evaluate.evaluate(moved.replace(eval_split="test"), paths, device="cpu", progress=False)  # 03 never scores r again
    assert not quiet(moved.replace(run_name=None), paths).skipped  # a derived name: a new run on the new tower


def test_the_report_never_shows_figures_metrics_or_ablation_rows_of_an_earlier_model(chain):
    from helpers.core import figures
    from helpers.evaluation import qualitative
    from helpers.study import ablation
    from helpers.study.ablation import RunOutcome
    from helpers.study.base_settings import BaseSettings

    cfg, paths = chain
    result = evaluate.evaluate(cfg.replace(eval_split="test"), paths, device="cpu", progress=False)
    index = qualitative.RetrievalIndex.from_eval(result, cfg.text_model)
    figures.save_figure(qualitative.query_grid(index, ["a red circle"], k=3), result.data.run.figures("test") / "text_queries.png")
    scored = {"path": "best.pt", "sha256": result.record["checkpoint"]["sha256"]}
    outcomes = [RunOutcome("baseline", 0, "r", result.metrics, 1.0, True, result.metrics, scored)]
    ablation.save(ablation.summarise(outcomes), outcomes, BaseSettings(cfg, paths, "r", "test"), paths.artifacts_dir / "ablation")
    fresh = report.build_report(paths, "r").path.read_text()
    assert "r_text_queries.png" in fresh and "Recall@K change against the baseline" in fresh  # all current: all shown
    assert "best epoch **1** of 1" in fresh
    records = [result.data.run.eval_json("test"), paths.artifacts_dir / "ablation" / "ablation.json"]
    for record, unsealed in ((r, u) for r in records for u in (False, True)):  # edited by hand; edited with its seal removed
        original = record.read_text()
        edited = json.loads(original)
        (edited["metrics"] if "metrics" in edited else edited["table"]["baseline"])["i2t_R@1"] = 0.999
        if unsealed:
            del edited["seal"]  # no seal is no proof: treated exactly like a broken one
        record.write_text(json.dumps(edited))
        text = report.build_report(paths, "r").path.read_text()
        assert "99.9" not in text and f"{record.name} was edited after it was written" in text, record.name  # never shown
        record.write_text(original)
    for name, read in (("metrics.json", runs.load_metrics), ("history.json", runs.load_history)):  # the run's own records
        path = result.data.run.path / name
        original = path.read_text()
        unsealed = json.loads(original)
        del unsealed["seal"]
        unsealed["epochs" if name == "metrics.json" else "run_name"] = 99 if name == "metrics.json" else "another"
        path.write_text(json.dumps(unsealed))
        if name == "metrics.json":
            with pytest.raises(runs.StaleArtifact, match="edited after it was written \\(or its seal removed\\)"):
                read(result.data.run)
        else:
            with pytest.warns(UserWarning, match="edited after it was written \\(or its seal removed\\): rewritten"):
                assert read(result.data.run)["run_name"] == "r"  # rewritten from the checkpoint, not believed
        path.write_text(original)

    def killed_after_the_checkpoint(trainer):  # the session dies after epoch 2's checkpoint, before metrics.json
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        quiet(cfg.replace(epochs=2), paths, on_epoch=killed_after_the_checkpoint)
    text = report.build_report(paths, "r").path.read_text()
    assert "r_text_queries.png" not in text and "shows an earlier model" in text  # figures of epoch 1's model: left out
    assert "ablation is out of date" in text and "Recall@K change against the baseline" not in text
    assert "best epoch **1** of 1" not in text  # the summary of the earlier model is gone with it
    with pytest.raises(FileNotFoundError, match=r"No run 'no-such-run' .*Known runs: \['r'\]"):
        report.build_report(paths, "no-such-run")


def test_identity_changes_in_the_ablation_never_reuse_a_baseline_of_other_settings():
    base = config.from_params(WEIGHT_DECAY=0.01)
    asked = config.from_params(WEIGHT_DECAY=0.5)
    as_ablation_names = lambda c: runs.run_name_for(c.replace(variant="baseline", seed=0, run_name=None))  # noqa: E731
    assert as_ablation_names(base) != as_ablation_names(asked)


# ----------------------------------------------------------------------------- numbers that cannot be right
def test_non_finite_features_are_refused_by_the_metric():
    images = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    images[3] = float("nan")
    with pytest.raises(NonFiniteFeatures, match="1 of 8 image features hold NaN"):
        retrieval_metrics(images, images.clone().nan_to_num(0.5), torch.arange(8))


def test_exact_ties_always_count_against_the_query():
    torch.manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(1000, 64), dim=1)
    images[1::2] = images[0::2]  # 500 pairs of bit-identical image embeddings
    texts = torch.nn.functional.normalize(images + 0.3 * torch.randn(1000, 64), dim=1)
    for chunk in (None, 97):  # every caption ties with its image's twin: rank >= 2, pessimistically, however chunked
        assert retrieval_metrics(images, texts, torch.arange(1000), chunk_size=chunk)["t2i_R@1"] == 0.0


def test_a_diverged_epoch_stops_the_run_and_is_never_saved(workspace, tmp_path):
    cfg, paths = workspace
    cfg = cfg.replace(run_name="nan", epochs=1, max_steps_per_epoch=1, lr=0.5)

    def poison(trainer):  # the weights turn NaN after the step (as WEIGHT_DECAY=1e9 did)
        with torch.no_grad():
            for p in trainer.model.parameters():
                p.fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match=r"Run nan, epoch 1: .*NaN.*not saved.*Likely cause: LR=0\.5"):
        quiet(cfg, paths, on_step=poison)
    assert not (paths.runs_dir / "nan" / "best.pt").exists() and not (paths.runs_dir / "nan" / "checkpoint.pt").exists()


def test_evaluating_a_diverged_checkpoint_is_refused(chain):
    cfg, paths = chain
    best = paths.runs_dir / "r" / "best.pt"
    state = torch_load(best)
    state["model"] = {k: v.float().fill_(float("nan")) if v.is_floating_point() else v for k, v in state["model"].items()}
    atomic_torch_save(state, best)
    with pytest.raises(ArtifactError, match=r"metrics\.json describes another model than .*best\.pt"):
        evaluate.evaluate(cfg.replace(eval_split="test"), paths, device="cpu", progress=False)  # not the finished run's weights
    (paths.runs_dir / "r" / "metrics.json").unlink()  # as a run whose weights diverged: it never finished
    with pytest.raises(TrainingDiverged, match=r"Run r .* non-finite image features"):
        evaluate.evaluate(cfg.replace(eval_split="test"), paths, device="cpu", progress=False)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"WEIGHT_DECAY": 1e9}, r"WEIGHT_DECAY=1000000000.0 is out of range: 0 <= WEIGHT_DECAY <= 1"),
        ({"GRAD_CLIP": 1e9}, r"GRAD_CLIP=1000000000.0 is out of range"),
        ({"IMAGE_SIZE": 100000}, r"IMAGE_SIZE=100000 is out of range: 32 <= IMAGE_SIZE <= 1024"),
        ({"RUN_NAME": "../escape"}, r"RUN_NAME='../escape' is not a valid run name: use letters, digits"),
        ({"RUN_NAME": "a/b"}, r"not a valid run name"),
        ({"RUN_NAME": "."}, r"not a valid run name"),
        ({"RUN_NAME": "../../victim"}, r"not a valid run name"),
    ],
)
def test_values_that_cannot_be_right_are_refused_at_construction(params, match):
    with pytest.raises(ConfigError, match=match):
        config.from_params(params)


def test_a_path_as_run_name_never_reaches_another_folder(chain, tmp_path):
    cfg, paths = chain
    victim = tmp_path / "victim" / "runs" / "run"
    victim.mkdir(parents=True)
    (victim / "eval_test.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a valid run name"):
        quiet(cfg.replace(run_name="../../victim/runs/run", force_retrain=True), paths)
    with pytest.raises(ConfigError, match="not a valid run name"):
        report.build_report(paths, "../../victim/runs/run")
    assert (victim / "eval_test.json").exists()  # nothing of the other project was touched


def test_variant_with_spaces_is_the_variant():
    assert config.from_params(VARIANT="baseline ").variant == "baseline"
    assert config.from_params(VARIANT=" head_ln + augment ").variant == "head_ln+augment"


# ----------------------------------------------------------------------------- the image cache on every read
def test_one_flipped_bit_in_a_cached_image_is_caught_on_read(chain):
    from torchvision.io import decode_jpeg

    _, paths = chain
    cache = ImageCache(paths.image_cache_dir)
    image_id = cache.image_ids[3]
    shard_no, offset, length, _ = cache._locs[image_id]
    shard = cache.cache_dir / cache.shard_files[shard_no]
    blob = bytearray(shard.read_bytes())
    blob[offset + length // 2] ^= 0x10  # one bit, in the entropy-coded data: the size is unchanged
    shard.write_bytes(bytes(blob))
    flipped = torch.frombuffer(bytearray(blob[offset : offset + length]), dtype=torch.uint8)
    assert decode_jpeg(flipped).shape[0] == 3  # it still decodes (to other pixels): only the checksum can tell
    with pytest.raises(ArtifactError, match=rf"Image {image_id} in the image-cache shard .* fails its checksum.*01_dataset_prep"):
        ImageCache(paths.image_cache_dir).load_uint8(image_id)


# ----------------------------------------------------------------------------- crashes that now say what to do
def test_a_summary_that_is_not_the_checkpoints_own_is_noticed_and_written_again_from_it(chain):
    """metrics.json restored from an older Drive version (1 epoch, the checkpoint holds 2), or edited by hand."""
    from helpers.core.artifacts import StaleArtifact

    cfg, paths = chain
    run = runs.RunDir(paths.runs_dir / "r")
    older = run.metrics.read_text()  # after epoch 1
    quiet(cfg.replace(epochs=2), paths)  # continued to 2 epochs
    run.metrics.write_text(older)  # the older version comes back
    again = quiet(cfg.replace(epochs=2), paths)
    assert again.skipped and again.metrics["epochs"] == 2 and runs.load_metrics(run)["epochs"] == 2  # never "2 epochs" over 1
    assert any("metrics.json was not this run's summary (it summarises 1 epochs, the checkpoint holds 2)" in e for e in again.events)
    edited = json.loads(run.metrics.read_text())
    edited["best_val"]["val_rsum"] = 5.99  # a better number, typed in
    run.metrics.write_text(json.dumps(edited))
    with pytest.raises(StaleArtifact, match="edited after it was written"):
        runs.load_metrics(run)  # the report and 04 never show it
    rewritten = quiet(cfg.replace(epochs=2), paths)
    assert rewritten.metrics["best_val"]["val_rsum"] != 5.99 and runs.is_sealed(runs.load_metrics(run))


def test_weights_of_another_run_in_the_folder_and_an_edited_history_are_noticed(chain):

    cfg, paths = chain
    other = quiet(cfg.replace(run_name="other", seed=5), paths)  # another run of the same settings, another seed
    run = runs.RunDir(paths.runs_dir / "r")
    shutil.copy2(other.run_dir / "best.pt", run.best)  # its weights copied over r's
    with pytest.raises(ArtifactError, match=r"best\.pt is not this run's best epoch"):  # the weights file against the run's
        evaluate.evaluate(cfg.replace(eval_split="test"), paths, device="cpu", progress=False)  # 03 never scores them as r
    with pytest.raises(ArtifactError, match=r"best\.pt is not this run's best epoch .* copied in or restored from elsewhere"):
        quiet(cfg, paths)  # 02 never reuses them as r
    run.best.unlink()
    assert quiet(cfg, paths).skipped  # its only epoch was the best: best.pt is rewritten from the checkpoint
    history = json.loads(run.history.read_text())
    history["epochs"][0]["val_rsum"] = 5.99  # a better curve, typed in
    run.history.write_text(json.dumps(history))
    edited = r"history.json was edited after it was written \(or its seal removed\): rewritten from checkpoint.pt"
    with pytest.warns(UserWarning, match=edited):
        assert runs.load_history(run)["epochs"][0]["val_rsum"] != 5.99  # the report's curves come from the checkpoint


def test_a_deleted_best_pt_is_rewritten_when_the_last_epoch_was_best_else_named(chain):
    cfg, paths = chain
    best = paths.runs_dir / "r" / "best.pt"
    best.unlink()
    again = quiet(cfg, paths)  # one epoch: the last epoch is the best one, its weights are in checkpoint.pt
    assert again.skipped and best.exists() and any("best.pt was missing" in e for e in again.events)
    state = torch_load(paths.runs_dir / "r" / "checkpoint.pt")
    state["history"] = [{**state["history"][0], "epoch": 1}, {**state["history"][0], "epoch": 2, "val_rsum": -1.0}]
    state["epoch"] = 2
    atomic_torch_save(state, paths.runs_dir / "r" / "checkpoint.pt")  # as if epoch 2 was worse than epoch 1
    best.unlink()
    with pytest.raises(ArtifactError, match=r"best\.pt is gone: the best epoch \(1\) was not the last \(2\).*FORCE_RETRAIN=True"):
        quiet(cfg.replace(epochs=2), paths)


def test_a_damaged_run_config_is_rewritten_by_02(chain):
    cfg, paths = chain
    config_json = paths.runs_dir / "r" / "config.json"
    config_json.write_text("{ truncated")
    with pytest.warns(UserWarning, match=r"config\.json was missing or damaged: rewritten from checkpoint\.pt"):
        assert quiet(cfg, paths).skipped
    assert read_json(config_json)["run_name"] == "r"


def test_a_run_folder_deleted_mid_run_is_written_again_whole(chain):
    cfg, paths = chain
    run = paths.runs_dir / "r"

    def delete_the_folder(trainer):
        if trainer.history[-1]["epoch"] == 2:
            shutil.rmtree(run)

    quiet(cfg.replace(epochs=3), paths, on_epoch=delete_the_folder)
    assert {"config.json", "checkpoint.pt", "best.pt", "metrics.json", "history.json"} <= {p.name for p in run.iterdir()}
    assert "r" in report.build_report(paths, "r").path.read_text()


def test_a_lock_that_is_a_folder_says_what_to_delete(tmp_path):
    from helpers.store.runlock import RunLock, RunLocked

    (tmp_path / "run" / "run.lock").mkdir(parents=True)
    with pytest.raises(RunLocked, match=r"run\.lock is a folder, not this kit's lock file: delete it"):
        RunLock(tmp_path / "run").acquire()


def test_a_failing_lock_release_never_hides_the_error_that_ended_the_run(tmp_path, monkeypatch):
    import errno

    from helpers.store.runlock import holding

    unlink = Path.unlink

    def read_only(path, *args, **kwargs):  # the folder was remounted read-only (root may write anywhere, so simulated)
        if path.name == "run.lock":
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return unlink(path, *args, **kwargs)

    raised = pytest.raises(OSError, match="the checkpoint could not be written")
    warned = pytest.warns(UserWarning, match=r"Could not remove the lock .*run\.lock .*Read-only file system")
    with raised, warned, holding(tmp_path / "run", "training", log=lambda m: None):
        monkeypatch.setattr(Path, "unlink", read_only)
        raise OSError(errno.EROFS, "the checkpoint could not be written")


def test_disk_full_while_writing_a_checkpoint_names_the_folder_and_keeps_the_old_one(chain, monkeypatch):
    import errno

    from helpers.core import storage

    cfg, paths = chain
    checkpoint = paths.runs_dir / "r" / "checkpoint.pt"
    before = checkpoint.read_bytes()

    def full_disk(fd):  # the disk fills while the new checkpoint is flushed (a real ENOSPC needs a full filesystem)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.os, "fsync", full_disk)
    with pytest.raises(storage.DiskSpaceError, match=rf"No space left on the disk of {paths.runs_dir / 'r'} while writing .*GB free"):
        quiet(cfg.replace(epochs=2), paths)
    monkeypatch.undo()
    assert checkpoint.read_bytes() == before and not list((paths.runs_dir / "r").glob(".*.tmp"))


def test_kaggle_without_internet_says_so(tmp_path):
    import requests

    from helpers.data.acquire import acquire
    from helpers.data.download import DownloadError

    def fetch(slug):  # a real connection attempt that fails as it does offline (nothing listens on port 9)
        return requests.get("http://127.0.0.1:9/", timeout=5)

    cfg = config.from_params(DATA_SOURCE="kaggle")
    with pytest.raises(DownloadError, match=r"Could not reach Kaggle .*no internet.*Internet on.*DATA_SOURCE='local'"):
        acquire(cfg, tmp_path / "coco", kaggle_fetch=fetch)


NEW_MESSAGES = [
    "was trained with other settings", "was made from other data", "fails its checksum", "is not a valid run name",
    "non-finite image features", "No space left on the disk", "is a folder, not this kit's lock file", "Could not reach Kaggle",
    "best.pt is gone", "shows an earlier model", "ablation is out of date", "describes another model", "is out of range: 32 <= IMAGE_SIZE",
]  # fmt: skip


@pytest.mark.parametrize("message", NEW_MESSAGES)
def test_readme_troubleshooting_lists_each_new_message(message):
    from conftest import ROOT

    table = (ROOT / "docs" / "troubleshooting.md").read_text()
    assert message in table, message


def test_pretrained_weights_offline_say_what_to_do_and_a_local_file_works(tmp_path, monkeypatch):
    """Kaggle with Internet off, a lab machine behind a firewall: the torch hub download fails."""
    import urllib.request

    import torchvision
    from torch import hub

    from helpers.clip import model

    def offline(url, *args, **kwargs):  # a real connection attempt that fails as it does offline (nothing listens on port 9)
        return urllib.request.urlopen("http://127.0.0.1:9/" + url.rsplit("/", 1)[-1], timeout=5)

    monkeypatch.setattr(hub, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    arch = model.model_config(config.from_params(IMAGE_BACKBONE="resnet18", IMAGE_WEIGHTS="IMAGENET1K_V1", HIDDEN_DIM=32), 16)
    with pytest.raises(ConnectionError, match=r"IMAGE_WEIGHTS='IMAGENET1K_V1'.*no internet.*Settings -> Internet on.*"
                                              r"torch-home.*checkpoints.*resnet18.*IMAGE_WEIGHTS=None"):  # fmt: skip
        model.build_model(arch, LAB)
    saved = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(saved, tmp_path / "resnet18-local.pth")
    local = model.build_model({**arch, "image_weights": str(tmp_path / "resnet18-local.pth")}, LAB)
    assert torch.equal(local.trunk.conv1.weight, saved["conv1.weight"])  # the file's weights, no download
