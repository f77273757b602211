"""The doctor: real figures on this CPU, sane predictions, and each warning on a simulated condition."""

import pytest

from helpers import doctor


def test_diagnosis_of_the_prepared_workspace_is_sane(workspace):
    cfg, paths = workspace
    result = doctor.diagnose(cfg.replace(epochs=3, variants=["temp", "bank"]), paths, steps=1, batch=8, device="cpu")
    f, t, p = result.facts, result.timings, result.predictions
    assert f["image_cache_ready"] and "train: 1,600 captions" in f["caption_cache"] and f["train_images"] == 320
    assert 0 < t["train_img_per_s"] < 10_000 and t["precision"] == "fp32"  # CPU: no autocast, as in the trainer
    assert t["loader_img_per_s"] and t["loader_img_per_s"] > 0
    rate = min(t["train_img_per_s"], t["loader_img_per_s"])
    assert p["epoch_minutes"] == pytest.approx((320 / rate + 50 / (3 * t["train_img_per_s"])) / 60)
    assert p["run_minutes"] == pytest.approx(3 * p["epoch_minutes"]) and p["ablation_minutes"] == pytest.approx(2 * p["run_minutes"])
    assert doctor.NO_GPU in result.warnings  # this machine has no GPU
    md = result.markdown()
    assert "| GPU | none |" in md and "EPOCHS=3" in md and "Runtime → Change runtime type → T4 GPU" in md


def _facts(**changes):
    base = {"gpu": "Tesla T4", "environment": "colab", "image_cache_ready": True, "local_cache_complete": True}
    return {**base, **changes}


def test_each_warning_triggers_on_its_condition_only():
    short = {"run_minutes": 45.0}
    assert doctor.warnings_for(_facts(), short) == []
    assert doctor.warnings_for(_facts(gpu=None), short) == [doctor.NO_GPU]
    long = doctor.warnings_for(_facts(), {"run_minutes": 5 * 60.0})
    assert len(long) == 1 and "5.0 h, more than a free Colab session" in long[0]
    assert doctor.warnings_for(_facts(), {"run_minutes": 5 * 60.0}, session_hours=6) == []
    drive_only = doctor.warnings_for(_facts(local_cache_complete=False), short)
    assert len(drive_only) == 1 and "only on Drive" in drive_only[0]
    assert doctor.warnings_for(_facts(environment="local", local_cache_complete=False), short) == []  # one copy is normal locally
    assert any("run 01_dataset_prep" in w for w in doctor.warnings_for(_facts(image_cache_ready=False), short))


def test_prediction_takes_the_slower_of_model_and_loader():
    facts = {"train_images": 82_783, "val_images": 5_000}
    gpu_bound = doctor.predict(facts, {"train_img_per_s": 400.0, "loader_img_per_s": 2000.0}, epochs=10, variants=3)
    loader_bound = doctor.predict(facts, {"train_img_per_s": 4000.0, "loader_img_per_s": 2000.0}, epochs=10, variants=3)
    assert gpu_bound["epoch_minutes"] == pytest.approx((82_783 / 400 + 5_000 / 1200) / 60)
    assert loader_bound["epoch_minutes"] == pytest.approx((82_783 / 2000 + 5_000 / 12_000) / 60)


def test_headless_doctor_prints_the_table(workspace, capsys):
    cfg, paths = workspace
    path = cfg.save(paths.artifacts_dir / "doctor.json")
    assert doctor.main(["--config", str(path), "--steps", "1", "--set", "BATCH_SIZE=4"]) == 0
    out = capsys.readouterr().out
    assert "| training step (4 images, fp32) |" in out and "predicted: EPOCHS=10" in out
