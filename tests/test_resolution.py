"""The resolution schedule (TRAIN_SIZES, the `lowres` variant): each epoch trains at its size, validation and
evaluation at the cached size, a kill mid-schedule resumes to the same run, and the schedule is part of the identity."""

from __future__ import annotations

import pytest
from test_train import _kill_then_resume_matches

from helpers.clip.identity import run_identity
from helpers.core import config, resolution
from helpers.core.lab import LabCode
from helpers.core.storage import read_json
from helpers.evaluation import evaluate
from helpers.store import runs
from helpers.training import train

LAB = LabCode.shipped()  # the lab's cells, as the notebooks hold them


def test_ramp_sizes_and_their_description():
    assert resolution.ramp(10, 224) == [160] * 6 + [192] * 2  # epochs 9-10 at 224 px
    assert resolution.ramp(4, 224) == [160, 160, 192]
    assert resolution.ramp(1, 224) == []  # one epoch: it trains at the cached size
    assert resolution.ramp(4, 64) == [48, 48, 56]
    assert resolution.describe([160] * 6 + [192] * 2, 224, 10) == "160 px for epochs 1-6, 192 px for epochs 7-8, 224 px for epochs 9-10"
    assert resolution.work_fraction([160] * 6 + [192] * 2, 224, 10) == pytest.approx(0.653, abs=1e-3)
    assert [resolution.size_at(e, [48, 56], 64) for e in range(4)] == [48, 56, 64, 64]


@pytest.mark.parametrize("sizes", [[60], [16], [72]], ids=["not a multiple of 8", "below 32 px", "above IMAGE_SIZE"])
def test_a_schedule_that_cannot_train_is_refused_with_the_rule(sizes):
    with pytest.raises(config.ConfigError, match=r"TRAIN_SIZES=.*multiple of 8 between 32 and IMAGE_SIZE=64"):
        config.from_params(IMAGE_SIZE=64, TRAIN_SIZES=sizes)


def test_the_schedule_is_part_of_the_identity_and_no_schedule_keeps_old_names():
    plain, scheduled = config.from_params(), config.from_params(TRAIN_SIZES=[160, 192])
    assert "train_sizes" not in run_identity(plain)  # runs trained before TRAIN_SIZES existed keep their names
    assert run_identity(scheduled)["train_sizes"] == [160, 192]
    assert runs.run_name_for(plain) != runs.run_name_for(scheduled) != runs.run_name_for(config.from_params(TRAIN_SIZES=[160]))
    assert config.identity_differences(run_identity(plain), run_identity(scheduled)) == [
        "TRAIN_SIZES: None (stored) vs [160, 192] (now)"
    ]


def test_each_epoch_trains_at_its_size_and_validation_and_evaluation_at_the_cached_size(workspace, monkeypatch):
    cfg, paths = workspace
    seen: list[tuple[bool, int]] = []  # (training mode, image side) of every image the tower encodes
    encode = LAB.ClipImageModel.encode_image  # forward() (training) and validation/evaluation both go through it

    def recording(self, images, *args, **kwargs):
        seen.append((self.training, images.shape[-1]))
        return encode(self, images, *args, **kwargs)

    monkeypatch.setattr(LAB.ClipImageModel, "encode_image", recording)
    run_cfg = cfg.replace(epochs=3, train_sizes=[32, 48], run_name="schedule", max_steps_per_epoch=2)
    result = train.train(run_cfg, paths, progress=False, log=lambda m: None)
    assert [r["train_size"] for r in result.history] == [32, 48, 64]  # epoch 3: after the schedule, the cached size
    train_sides = [side for training, side in seen if training]
    assert train_sides == [32, 32, 48, 48, 64, 64]  # two steps per epoch, each at its epoch's size
    assert {side for training, side in seen if not training} == {64}  # validation: the cached size, every epoch
    events = read_json(result.run_dir / "history.json")["events"]
    assert "resolution schedule: 32 px for epoch 1, 48 px for epoch 2, 64 px for epoch 3" in events
    seen.clear()
    evaluate.evaluate(run_cfg.replace(eval_split="test"), paths, progress=False)
    assert seen and {side for _, side in seen} == {64}  # the test split too


def test_a_schedule_wholly_below_the_cached_size_is_said_as_what_trained(workspace):
    """TRAIN_SIZES=[48, 48] over 2 epochs never trains at the cached 64 px: the trainer's event and the report's row say
    48 px (they once said "64 px for every epoch", the cached size), computed from the sizes the history records."""
    from helpers.study import report

    cfg, paths = workspace
    assert resolution.describe([48, 48], 64, 2) == "48 px for every epoch"
    run_cfg = cfg.replace(epochs=2, train_sizes=[48, 48], run_name="all_low", max_steps_per_epoch=1)
    result = train.train(run_cfg, paths, progress=False, log=lambda m: None)
    try:
        assert [r["train_size"] for r in result.history] == [48, 48]
        assert "resolution schedule: 48 px for every epoch" in read_json(result.run_dir / "history.json")["events"]
        run_dir = runs.RunDir(result.run_dir)
        metrics, history = read_json(run_dir.metrics), read_json(run_dir.history)
        row = report.hyperparameters(report.RunArtifacts(run_dir, metrics["config"], metrics, history, None, None), lambda _: None)
        assert row["image size"] == "training: 48 px for every epoch; validation and test: 64 px"
        history["epochs"][1]["train_size"] = 56  # the row follows the recorded sizes, not the settings
        row = report.hyperparameters(report.RunArtifacts(run_dir, metrics["config"], metrics, history, None, None), lambda _: None)
        assert row["image size"].startswith("training: 48 px for epoch 1, 56 px for epoch 2;")
    finally:
        import shutil

        shutil.rmtree(result.run_dir)


def test_lowres_killed_mid_schedule_resumes_to_the_uninterrupted_run(workspace, tmp_path):
    assert resolution.ramp(3, 64) == [48, 56]  # the kill after epoch 1 falls between the schedule's two sizes
    _kill_then_resume_matches(workspace, tmp_path, variant="lowres", epochs=3)


def test_a_lowres_run_continued_to_more_epochs_keeps_the_schedule_it_trained_and_says_so(workspace):
    """lowres over 2 epochs trains [48] then 64 px; continued to 5 EPOCHS, the schedule for 5 from the start would be
    [48, 48, 48, 56]: the run keeps its own (epochs 1-2 trained it), records exactly what trained, and says which."""
    cfg, paths = workspace
    short = cfg.replace(variant="lowres", epochs=2, max_steps_per_epoch=2, run_name="lowres-continued")
    train.train(short, paths, progress=False, log=lambda m: None)
    longer = train.train(short.replace(epochs=5), paths, progress=False, log=lambda m: None)
    assert [h["train_size"] for h in longer.history] == [48, 64, 64, 64, 64]  # as recorded: no size changed mid-run
    assert longer.metrics["config"]["train_sizes"] == [48]
    assert resolution.describe([48], 64, 5) in " ".join(longer.events)
    assert any("kept as this run started it" in e and "would be another run" in e for e in longer.events)
