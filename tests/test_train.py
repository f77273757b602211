"""Training: learnability on synthetic data, resume after SIGKILL, skip/force, divergence and OOM handling."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from helpers.core import config, env
from helpers.core.config import ConfigError
from helpers.core.lab import LabCode
from helpers.core.storage import read_json, torch_load
from helpers.data.dataset import TextCacheMismatch
from helpers.store import runs
from helpers.training import optim, train, train_data

LAB = LabCode.shipped()  # the lab's cells, as the notebooks hold them


def quiet(cfg, paths, **kw):
    return train.train(cfg, paths, progress=False, log=lambda m: None, **kw)


def test_learnability_and_artifacts(workspace):
    cfg, paths = workspace
    cfg = cfg.replace(epochs=5, run_name="learn")
    result = quiet(cfg, paths)
    h = result.history
    chance_r1, chance_r5 = 1 / 50, 5 / 50
    assert h[-1]["train_loss"] < 0.8 * h[0]["train_loss"]
    assert min(r["val_loss"] for r in h) < h[0]["val_loss"]
    best = max(h, key=lambda r: r["val_rsum"])
    assert best["val_t2i_R@5"] >= 4 * chance_r5, best  # far above chance, not mere improvement
    assert best["val_t2i_R@1"] >= 5 * chance_r1, best
    assert best["val_i2t_R@5"] >= 3 * chance_r5, best
    run = result.run_dir
    for name in ("checkpoint.pt", "best.pt", "history.json", "metrics.json", "loss_curves.png", "config.json"):
        assert (run / name).exists(), name
    metrics = read_json(run / "metrics.json")
    assert metrics["best_epoch"] == best["epoch"] and metrics["selection_metric"] == "val_rsum"
    assert len(metrics["epoch_seconds"]) == 5 and metrics["img_per_s"] > 0 and "torch" in metrics["hardware"]
    assert torch_load(run / "best.pt")["epoch"] == best["epoch"]
    history = read_json(run / "history.json")
    assert len(history["epochs"]) == 5 and history["steps"] and {"lr", "temperature", "i2t_acc"} <= set(history["steps"][0])
    ckpt = torch_load(run / "checkpoint.pt")
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "epoch", "history", "config"} <= set(ckpt)
    assert ckpt["epoch"] == 5 and isinstance(ckpt["config"], dict)
    assert "val rsum" in runs.summary_markdown(result)


def test_finished_run_is_not_retrained_unless_forced(workspace):
    cfg, paths = workspace
    cfg = cfg.replace(epochs=1, run_name="skip", max_steps_per_epoch=3)
    quiet(cfg, paths)
    stamp = (paths.runs_dir / "skip" / "checkpoint.pt").stat().st_mtime_ns
    again = quiet(cfg, paths)
    assert again.skipped and (paths.runs_dir / "skip" / "checkpoint.pt").stat().st_mtime_ns == stamp
    forced = quiet(cfg.replace(force_retrain=True), paths)
    assert not forced.skipped and (paths.runs_dir / "skip" / "checkpoint.pt").stat().st_mtime_ns != stamp
    # more epochs on a finished run: continues from the last one
    longer = quiet(cfg.replace(epochs=2), paths)
    assert longer.resumed_from_epoch == 1 and len(longer.history) == 2


def test_more_epochs_with_the_default_run_name_continue_the_same_run(workspace):
    cfg, paths = workspace
    cfg = cfg.replace(epochs=1, run_name=None, seed=11, max_steps_per_epoch=3)
    first = quiet(cfg, paths)
    more = quiet(cfg.replace(epochs=2), paths)
    assert more.run_dir == first.run_dir and more.resumed_from_epoch == 1 and not more.skipped
    assert more.history[0] == first.history[0]  # epoch 1 was not recomputed (its timings are identical)
    assert [r["epoch"] for r in more.history] == [1, 2]
    assert any("EPOCHS changed from 1 to 2" in e for e in more.events)
    assert sorted(p.name for p in paths.runs_dir.iterdir() if "-s11-" in p.name) == [first.run_dir.name]


def _weights(path):
    return torch_load(path)["model"]


def test_resume_after_sigkill_matches_uninterrupted_run(workspace, tmp_path):
    _kill_then_resume_matches(workspace, tmp_path)


def _kill_then_resume_matches(workspace, tmp_path, variant="baseline", epochs=3, rel_tol=1e-4, weight_tol=1e-4, rsum_abs_tol=1e-6,
                              modification=None):  # fmt: skip
    """SIGKILL a headless training after its first epoch, re-run it: it must end as an uninterrupted run
    (exactly on the CPU; within ``rel_tol``/``weight_tol`` under AMP on a GPU, whose kernels are not bit-reproducible).
    ``modification``: the .py file that registers ``variant`` (already loaded in this process).

    ``rsum_abs_tol``: val R@K counts items, so a loss that differs in the 4th digit can still flip a near-tied rank
    (one image is 0.02 of the fraction rsum on the 50-image val split, one caption 0.004); ``math.inf`` skips it."""
    cfg, paths = workspace
    cfg = cfg.replace(epochs=epochs, variant=variant)
    reference = quiet(cfg.replace(run_name=f"uninterrupted-{variant}"), paths)
    killed_cfg = cfg.replace(run_name=f"killed-{variant}")
    cfg_file = killed_cfg.save(tmp_path / "cfg.json")
    cmd = [sys.executable, "-m", "helpers.train", "--config", str(cfg_file), "--no-progress"]
    cmd += ["--modification", str(modification)] if modification else []  # a student's .py file, loaded by every process
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    history = paths.runs_dir / killed_cfg.run_name / "history.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if history.exists() and len(read_json(history)["epochs"]) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"training ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch_load(paths.runs_dir / killed_cfg.run_name / "checkpoint.pt")["epoch"] < epochs
    assert not (paths.runs_dir / killed_cfg.run_name / "metrics.json").exists()
    out = subprocess.run(cmd, cwd=ROOT, env=environ, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["skipped"] is False
    resumed = read_json(paths.runs_dir / killed_cfg.run_name / "history.json")["epochs"]
    assert len(resumed) == epochs
    for a, b in zip(reference.history, resumed):
        for key in ("train_loss", "val_loss", "lr"):
            assert math.isclose(a[key], b[key], rel_tol=rel_tol, abs_tol=1e-6), (key, a[key], b[key])
        assert math.isclose(a["val_rsum"], b["val_rsum"], rel_tol=rel_tol, abs_tol=rsum_abs_tol), (a["val_rsum"], b["val_rsum"])
    ref_w, res_w = _weights(reference.run_dir / "checkpoint.pt"), _weights(paths.runs_dir / killed_cfg.run_name / "checkpoint.pt")
    assert max((ref_w[k].float() - res_w[k].float()).abs().max().item() for k in ref_w) < weight_tol


@pytest.mark.parametrize("finished", [True, False], ids=["reuse a finished run", "continue it with more EPOCHS"])
def test_a_named_run_is_never_resumed_or_reused_with_other_identity_settings(workspace, finished):
    cfg, paths = workspace
    cfg = cfg.replace(epochs=1, run_name=f"arch-{finished}", max_steps_per_epoch=2)
    first = quiet(cfg, paths)
    changes = {"hidden_dim": 64, "weight_decay": 0.5, "grad_clip": 0.1, "lr_schedule": "cosine", "warmup_steps": 50,
               "image_weights": "IMAGENET1K_V1", "max_steps_per_epoch": 1}  # fmt: skip
    for key, value in changes.items():
        with pytest.raises(ConfigError, match=rf"was trained with other settings: {key.upper()}: .* \(stored\) vs .*FORCE_RETRAIN"):
            quiet(cfg.replace(**{key: value}, epochs=1 if finished else 2), paths)
    again = quiet(cfg, paths)  # nothing was touched by the refusals
    assert again.skipped and again.history == first.history


def test_wrong_text_model_and_image_size_are_refused(workspace):
    cfg, paths = workspace
    with pytest.raises(TextCacheMismatch, match="re-run 01_dataset_prep"):
        quiet(cfg.replace(text_model="openai/clip-vit-large-patch14", run_name="tm"), paths)
    with pytest.raises(ConfigError, match="IMAGE_SIZE=224, but the image cache holds 64px"):
        quiet(cfg.replace(image_size=224, run_name="sz"), paths)


def test_non_finite_losses_are_skipped_then_rolled_back_then_stopped(workspace, monkeypatch):
    cfg, paths = workspace
    real_loss_and_step = train.loss_and_step
    real = LAB.clip_loss
    calls = {"n": 0}

    def sometimes_nan(*args):
        calls["n"] += 1
        out = real(*args)
        return out * float("nan") if calls["n"] == 2 else out

    monkeypatch.setattr(train, "loss_and_step", lambda c, v: (sometimes_nan, real_loss_and_step(c, v)[1]))
    result = quiet(cfg.replace(epochs=1, run_name="nan-once"), paths)
    assert result.history[0]["skipped_steps"] == 1 and any("non-finite" in e for e in result.metrics["events"])

    monkeypatch.setattr(train, "loss_and_step", lambda c, v: (lambda *a: real(*a) * float("nan"), real_loss_and_step(c, v)[1]))
    with pytest.raises(train.TrainingDiverged, match="Lower LR.*WARMUP_STEPS.*GRAD_CLIP"):
        quiet(cfg.replace(epochs=1, run_name="nan-always"), paths)


def test_out_of_memory_halves_the_batch(workspace, monkeypatch):
    cfg, paths = workspace
    real = LAB.training_step  # the lab's step (notebook 02's cell), which the trainer takes when it is built
    real_loss_and_step = train.loss_and_step

    def oom_at_32(model, images, *rest, **options):
        if images.shape[0] == 32:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, images, *rest, **options)

    monkeypatch.setattr(train, "loss_and_step", lambda c, v: (real_loss_and_step(c, v)[0], oom_at_32))
    result = quiet(cfg.replace(epochs=1, run_name="oom", max_steps_per_epoch=3), paths)
    assert result.history[0]["batch_size"] == 16
    assert any("out of memory at batch size 32; halving to 16" in e for e in result.metrics["events"])


def test_lr_schedule():
    assert optim.lr_factor(0, 100, "constant", 0) == 1.0
    assert optim.lr_factor(4, 100, "constant", 10) == pytest.approx(0.5)
    assert optim.lr_factor(10, 110, "cosine", 10) == pytest.approx(1.0)
    assert optim.lr_factor(60, 110, "cosine", 10) == pytest.approx(0.5)
    assert optim.lr_factor(110, 110, "cosine", 10) == pytest.approx(0.0, abs=1e-9)


# One other value for every identity field: the test fails when a field is added without deciding its kind.
IDENTITY_CHANGES = {
    "train_images": 100, "val_images": 100, "test_images": 100, "image_size": 96, "cache_quality": 80,
    "text_model": "some/other-text-model", "variant": "head_ln", "image_weights": "IMAGENET1K_V1", "image_backbone": "resnet18",
    "hidden_dim": 512, "batch_size": 32, "lr": 1e-3, "weight_decay": 0.5, "optimizer": "sgd", "lr_schedule": "cosine",
    "warmup_steps": 50, "grad_clip": 0.1, "temperature": 0.05, "bank_size": 0, "learnable_temperature": True, "seed": 1,
    "amp": False, "max_steps_per_epoch": 1, "train_sizes": [160],
}  # fmt: skip
FREE_CHANGES = {
    "epochs": 3, "num_workers": 0, "live_plot": False, "channels_last": False, "force_retrain": True, "eval_split": "val",
    "shard_size": 100, "text_batch_size": 64, "caption_part_size": 1000, "include_restval": True, "data_source": "local",
    "queries": ["a cat"], "interactive": False, "compare_zero_shot": True, "variants": ["temp"], "seeds": [0, 1],
}  # fmt: skip


def test_every_identity_field_alone_names_another_run_and_free_fields_do_not():
    assert set(IDENTITY_CHANGES) == set(config.IDENTITY_FIELDS)
    assert not set(config.IDENTITY_FIELDS) & set(config.FREE_FIELDS)
    assert set(config.IDENTITY_FIELDS) | set(config.FREE_FIELDS) == set(config.FIELD_NAMES)
    base = runs.run_name_for(config.from_params({}))
    assert base.startswith("baseline-resnet50-b64-lr0.0001-adamw-s0-")
    for key, value in IDENTITY_CHANGES.items():
        params = {key: value, "variant": "bank"} if key == "bank_size" else {key: value}
        reference = runs.run_name_for(config.from_params(variant="bank")) if key == "bank_size" else base
        assert runs.run_name_for(config.from_params(params)) != reference, key
    for key, value in FREE_CHANGES.items():
        assert runs.run_name_for(config.from_params({key: value})) == base, key
    # BANK_SIZE changes nothing without the bank flag: not part of a baseline's identity
    assert runs.run_name_for(config.from_params(BANK_SIZE=0)) == base
    a = base
    assert runs.run_name_for(config.from_params(EPOCHS=3)) == a  # EPOCHS may grow: the same run continues
    assert "-learnT-s3-" in runs.run_name_for(config.from_params(LEARNABLE_TEMPERATURE=True, SEED=3))
    assert runs.run_name_for(config.from_params(RUN_NAME="mine")) == "mine"


def test_config_file_round_trip_drives_headless_training(workspace, tmp_path):
    cfg, _ = workspace
    path = cfg.replace(epochs=1).save(tmp_path / "run.json")
    assert config.load(path) == cfg.replace(epochs=1)
    assert Path(path).read_text().count('"image_backbone": "resnet18"') == 1


def test_image_size_is_read_from_the_image_cache(workspace, tmp_path):
    cfg, paths = workspace  # a 64 px cache
    default = cfg.replace(image_size=224)
    told = []
    assert train_data.at_cache_size(default, paths, log=told.append).image_size == 64 and "IMAGE_SIZE=64" in told[0]
    assert train_data.at_cache_size(cfg.replace(image_size=96), paths).image_size == 96  # written on purpose: kept, then refused
    no_cache = env.resolve_paths(cfg.replace(artifacts_dir=str(tmp_path / "empty")), environment="local")
    assert train_data.at_cache_size(default, no_cache).image_size == 224  # nothing cached yet: training says to run 01
