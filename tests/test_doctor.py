"""The doctor: real figures on this CPU, sane predictions, and each warning on a simulated condition."""

import re

import pytest

from helpers import doctor
from helpers.core import config
from helpers.training import budget


def test_diagnosis_of_the_prepared_workspace_is_sane(workspace):
    cfg, paths = workspace
    run_cfg = cfg.replace(epochs=3, variants=["temp", "lowres"])
    result = doctor.diagnose(run_cfg, paths, steps=1, batch=8, device="cpu")
    f, t, p = result.facts, result.timings, result.plan
    assert f["image_cache_ready"] and "train: 1,600 captions" in f["caption_cache"] and f["train_images"] == 320
    assert t["precision"] == "fp32"  # CPU: no autocast, as in the trainer
    assert sorted(t["step_img_per_s"]) == [48, 56, 64]  # lowres' schedule for 3 epochs of 64 px images is timed too
    assert all(0 < rate < 10_000 for rate in t["step_img_per_s"].values())
    assert t["loader_img_per_s"] and t["loader_img_per_s"] > 0
    rate = {s: min(r, t["loader_img_per_s"]) for s, r in t["step_img_per_s"].items()}
    val = 50 / (3 * t["step_img_per_s"][64]) / 60
    assert p.run.minutes == pytest.approx(3 * (320 / rate[64] / 60 + val))
    lowres = next(v for v in p.variants if v.name == "lowres")
    assert lowres.minutes == pytest.approx((320 / rate[48] + 320 / rate[56] + 320 / rate[64]) / 60 + 3 * val)
    assert [v.name for v in p.variants] == sorted(["temp", "lowres"], key=lambda n: next(v.minutes for v in p.variants if v.name == n))
    assert doctor.NO_GPU in result.warnings  # this machine has no GPU
    md = result.markdown()
    assert "| GPU | none |" in md and "EPOCHS=3" in md and "Runtime → Change runtime type → T4 GPU" in md
    assert "on a T4" in md and "published ResNet-50 rates" in md  # a CPU has no ratio: the T4 from the published rates


def _facts(**changes):
    base = {"gpu": "Tesla T4", "environment": "colab", "image_cache_ready": True, "local_cache_complete": True}
    return {**base, **changes}


COCO = {"train_images": 82_783, "val_images": 5_000}


def _plan(epochs=10, variants=("head_ln", "augment"), rates=None, **settings):
    values = {**config.from_params(EPOCHS=epochs, **settings).to_dict()}
    rates = rates or budget.Rates("NVIDIA H100 80GB HBM3", {224: 3_600.0})
    return budget.plan(values, list(variants), rates, COCO["train_images"], COCO["val_images"])


def test_each_warning_triggers_on_its_condition_only():
    fits, too_long = _plan(epochs=2), _plan(epochs=40)
    assert fits.fits() is True and too_long.fits() is False
    assert doctor.warnings_for(_facts(), fits) == []
    assert doctor.warnings_for(_facts(gpu=None), fits) == [doctor.NO_GPU]
    long = doctor.warnings_for(_facts(), too_long)
    assert len(long) == 1 and "more than one free Colab session" in long[0] and "resumes" in long[0]
    drive_only = doctor.warnings_for(_facts(local_cache_complete=False), fits)
    assert len(drive_only) == 1 and "only on Drive" in drive_only[0]
    assert doctor.warnings_for(_facts(environment="local", local_cache_complete=False), fits) == []  # one copy is normal locally
    assert any("run 01_dataset_prep" in w for w in doctor.warnings_for(_facts(image_cache_ready=False), fits))


def test_t4_prediction_from_a_measured_gpu_uses_the_cited_ratio_range():
    p = _plan(rates=budget.Rates("NVIDIA H100 80GB HBM3", {224: 2_616.0}))  # an H100 as fast as Lambda's
    slow, fast = p.run.t4_minutes
    epoch_images = 82_783 + 5_000 / 3  # validation: forward only
    assert fast == pytest.approx(10 * epoch_images / 425 / 60, rel=1e-3)  # 2,616 / 6.16 = 425 img/s, the fast end
    assert slow == pytest.approx(10 * epoch_images / 295 / 60, rel=1e-3)  # 2,616 / 8.87 = 295 img/s
    assert "Lambda: H100 80GB SXM5" in p.t4_basis
    cpu = _plan(rates=budget.Rates("CPU", {224: 11.0}))  # no ratio: the published T4 rates, whatever the CPU does
    assert cpu.run.t4_minutes == pytest.approx(p.run.t4_minutes, rel=1e-3) and "published" in cpu.t4_basis
    scheduled = _plan(rates=budget.Rates("CPU", {224: 11.0}), TRAIN_SIZES=[160] * 6 + [192] * 2)
    t4_train = [m - 10 * 5_000 / 3 / r / 60 for m, r in zip(scheduled.run.t4_minutes, (295, 425))]
    assert t4_train[0] == pytest.approx(10 * 82_783 / 295 / 60 * 0.653, rel=1e-3)  # pixels: 0.653 of 224 px throughout


def test_the_lab_fits_one_session_or_says_what_would():
    fits = _plan(epochs=10, rates=budget.Rates("Tesla T4", {224: 425.0}))
    assert fits.fits() is True and not fits.suggestions and "it fits one free Colab session" in fits.verdict()
    slow = _plan(epochs=10, variants=("head_ln", "augment", "bank"), rates=budget.Rates("Tesla T4", {224: 200.0}))
    assert slow.fits() is False and "more than one free Colab session" in slow.verdict()
    advice = dict(slow.suggestions)
    assert any(k.startswith("TRAIN_SIZES=[160, 160, 160, 160, 160, 160, 192, 192]") for k in advice)
    epochs = next(k for k in advice if k.startswith("EPOCHS="))
    assert advice[epochs][0] <= budget.FREE_SESSION_MINUTES  # the EPOCHS it names fits, at the T4's slow end
    assert _plan(epochs=int(epochs.split("=")[1]) + 1, variants=("head_ln", "augment", "bank"),
                 rates=budget.Rates("Tesla T4", {224: 200.0})).fits() is not True  # fmt: skip  (and one more would not)
    assert any(k.startswith("VARIANTS=['head_ln']") for k in advice)  # the cheapest one alone
    assert any("sessions" in k for k in advice)
    for minutes in advice.values():
        assert minutes[1] <= minutes[0]  # (slow end, fast end)


def test_prediction_takes_the_slower_of_model_and_loader():
    values = config.from_params().to_dict()
    gpu_bound = budget.run_cost("b", values, 82_783, 5_000, budget.Rates("GPU", {224: 400.0}, loader=2000.0))
    loader_bound = budget.run_cost("b", values, 82_783, 5_000, budget.Rates("GPU", {224: 4000.0}, loader=2000.0))
    assert gpu_bound.minutes == pytest.approx(10 * (82_783 / 400 + 5_000 / 1200) / 60)
    assert loader_bound.minutes == pytest.approx(10 * (82_783 / 2000 + 5_000 / 12_000) / 60)


def test_notebook_04s_plan_is_the_doctors(workspace):
    cfg, paths = workspace
    cfg = cfg.replace(variants=["augment", "lowres"])
    rates = budget.Rates("Tesla T4", {64: 400.0, 48: 700.0, 56: 520.0}, loader=2_000.0)
    diagnosed = doctor.diagnose(cfg, paths, rates=rates).plan
    planned = doctor.study_plan(cfg, paths, rates=rates)
    assert [(v.name, v.minutes, v.t4_minutes) for v in planned.variants] == [(v.name, v.minutes, v.t4_minutes) for v in diagnosed.variants]
    assert [v.name for v in planned.variants] == ["lowres", "augment"]  # cheapest first
    assert planned.lab_t4_minutes == diagnosed.lab_t4_minutes
    assert doctor.plan_markdown(planned).count("variant `") == 2


def test_headless_doctor_prints_the_table(workspace, capsys):
    cfg, paths = workspace
    path = cfg.save(paths.artifacts_dir / "doctor.json")
    assert doctor.main(["--config", str(path), "--steps", "1", "--set", "BATCH_SIZE=4"]) == 0
    out = capsys.readouterr().out
    assert "| training step at 64 px (4 images, fp32) |" in out and "predicted: this run (EPOCHS=10" in out


def test_a_tiny_runs_plan_scales_preparation_to_its_data_and_prints_a_figure_that_means_something():
    """The demo's data (a few hundred images): 01's preparation and each evaluation cost their share of COCO's, not the
    16-31 min of all of COCO, and a run of seconds prints as such, never as "0:01-0:01"."""
    values = config.from_params(EPOCHS=1, IMAGE_SIZE=64).to_dict()
    rates = budget.Rates("CPU", {64: 11.0})
    tiny = budget.plan(values, ["head_ln"], rates, 40, 10, prep_images=600)
    coco = budget.plan(values, ["head_ln"], rates, 40, 10)  # before 01: all of COCO is to prepare
    assert coco.lab_t4_minutes[1] >= budget.PREP_MINUTES[0] > 50 * tiny.lab_t4_minutes[0]
    share = 600 / 123_287
    trainings = sum(r.t4_minutes[0] for r in (tiny.run, *tiny.variants))
    assert tiny.lab_t4_minutes[0] == pytest.approx(trainings + (budget.PREP_MINUTES[1] + 2 * budget.EVAL_MINUTES_PER_RUN) * share)
    rows = dict(doctor.plan_rows(tiny))
    assert "predicted: the whole lab on a T4 (prep of 600 images, these trainings, evaluation with the classification over " \
           "categories)" in rows
    assert not any("Flickr30k" in what for what in rows)  # FLICKR30K off: not planned
    flickr = budget.plan({**values, "flickr30k": True}, ["head_ln"], rates, 40, 10, prep_images=600)
    assert flickr.lab_t4_minutes[0] == pytest.approx(tiny.lab_t4_minutes[0] + budget.FLICKR_PREP_MINUTES[1] + budget.FLICKR_EVAL_MINUTES)
    assert any(what.startswith("predicted: Flickr30k transfer in 03") for what in dict(doctor.plan_rows(flickr)))
    assert all(not re.search(r"(\d+:\d\d)-\1\b", text) for text in rows.values()), rows  # no "0:01-0:01"
    assert doctor._span((0.001, 0.0005)) == "under 1 s" and doctor._span((2.0, 1.0)) == "1:00-2:00"
    assert "prep of all of COCO 2014" in " ".join(dict(doctor.plan_rows(coco)))


def test_the_doctors_suggestions_take_a_bounded_number_of_plans_whatever_epochs_is():
    """EPOCHS=1,000,000 on a T4: the suggestion of the most EPOCHS that fit is found in ~log2(EPOCHS) plans (one plan per
    smaller EPOCHS was quadratic: the doctor hung), and it is the right one (one more would not fit)."""
    values = config.from_params(EPOCHS=1_000_000).to_dict()
    rates = budget.Rates("Tesla T4", {224: 425.0})
    current = budget.plan(values, ["head_ln"], rates, COCO["train_images"], COCO["val_images"], suggest=False)
    plans = []

    def replan(settings, variants):
        plans.append(settings["epochs"])
        return budget.plan(settings, variants, rates, COCO["train_images"], COCO["val_images"], suggest=False)

    advice = dict(budget.suggestions(values, ["head_ln"], current, replan))
    assert len(plans) <= 25, len(plans)
    epochs = int(next(k for k in advice if k.startswith("EPOCHS=")).split("=")[1])
    assert replan({**values, "epochs": epochs}, ["head_ln"]).fits() and not replan({**values, "epochs": epochs + 1}, ["head_ln"]).fits()


@pytest.mark.parametrize("steps", ["0", "-2", "three"])
def test_the_doctor_refuses_a_step_count_that_times_nothing(steps, capsys):
    with pytest.raises(SystemExit):
        doctor.main(["--steps", steps])
    err = capsys.readouterr().err
    assert ("give a whole number" if steps == "three" else "at least 1 training step must be timed") in err


def test_the_doctor_takes_modification_and_times_the_loader_for_any_batch(workspace, tmp_path, capsys):
    """``--modification mine.py`` as helpers.train takes it (the variant is known to the plan), and a batch larger than
    half the cache still gets a loader figure (smaller batches), not "no cache"."""
    cfg, paths = workspace
    mine = tmp_path / "doctor_mine.py"
    mine.write_text(
        "from torch import nn\nfrom helpers.clip.variants import register\n\n\n"
        "def wide(in_dim, hidden_dim, embed_dim):\n    return nn.Sequential(nn.Linear(in_dim, embed_dim))\n\n\n"
        "register('doctor_wide', changes='a linear head', why='a test', head=wide)\n"
    )
    config_file = cfg.replace(variant="doctor_wide", batch_size=200).save(tmp_path / "run.json")  # 320 cached: > half
    try:
        assert doctor.main(["--config", str(config_file), "--steps", "1", "--modification", str(mine)]) == 0
    finally:  # the registry is the process's: no other test may see this record
        from helpers.clip import flags

        flags.unregister("doctor_wide")
    out = capsys.readouterr().out
    assert "predicted: this run" in out and "| loader | no cache |" not in out
    assert doctor.time_loader(cfg.replace(batch_size=10_000), paths) > 0  # any batch, however large
