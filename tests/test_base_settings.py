"""Notebook 04's base settings come from the student's baseline run; what 04 overrides is recorded and shown."""

import json
import os

import pytest
import torch

from helpers.core import config
from helpers.study import ablation, base_settings


def _finished_run(art, name, mtime, **settings):
    """A run folder as the trainer leaves it, as far as the base-run lookup reads it (config.json; metrics.json and best.pt exist)."""
    run = art / "runs" / name
    run.mkdir(parents=True)
    stored = config.from_params(settings).to_dict()
    (run / "config.json").write_text(json.dumps(stored))
    arch = {"variant": stored["variant"]}
    torch.save({"model": {"w": torch.zeros(1)}, "arch": arch, "config": stored, "epoch": 1}, run / "best.pt")
    (run / "metrics.json").write_text("{}")
    os.utime(run / "metrics.json", (mtime, mtime))
    return run


def _notebook(art, **params):
    """The globals of notebook 04's parameters cell (plus anything the student wrote or papermill injected)."""
    return {"ARTIFACTS_DIR": str(art), "BASE_RUN": None, "VARIANTS": ["temp"], "SEEDS": [0], "LIVE_PLOT": False, **params}


def test_the_study_takes_every_run_setting_from_the_students_baseline_run(tmp_path):
    art = tmp_path / "art"
    _finished_run(art, "old-baseline", 1_000, weight_decay=0.2)
    _finished_run(art, "mine", 2_000, weight_decay=0.05, lr=3e-4, optimizer="sgd", temperature=0.05, epochs=6, hidden_dim=256)
    _finished_run(art, "a-variant", 3_000, variant="temp", weight_decay=0.3)  # newer, but not a baseline
    base = base_settings.from_notebook(_notebook(art))
    c = base.cfg
    assert (c.weight_decay, c.lr, c.optimizer, c.temperature, c.epochs, c.hidden_dim) == (0.05, 3e-4, "sgd", 0.05, 6, 256)
    assert c.variant == "baseline" and c.variants == ["temp"] and c.run_name is None
    assert base.run == "mine" and base.overrides == {}
    shown = base.markdown()
    assert "run `mine` (the newest finished baseline run, trained by notebook 02" in shown and "sgd lr 0.0003 (weight decay 0.05" in shown
    assert "Overrides set in notebook 04: none" in shown


def test_a_setting_written_in_04_overrides_the_base_run_and_is_listed_beside_the_table(tmp_path):
    art = tmp_path / "art"
    _finished_run(art, "mine", 2_000, weight_decay=0.05, epochs=6)
    base = base_settings.from_notebook(_notebook(art, EPOCHS=2, WEIGHT_DECAY=0.05, NUM_WORKERS=0))
    assert base.cfg.epochs == 2 and base.cfg.weight_decay == 0.05 and base.cfg.num_workers == 0
    assert base.overrides == {"epochs": {"base": 6, "here": 2}}  # the same value as the base run's is no override
    table = ablation.summarise([ablation.RunOutcome("baseline", 0, "b", dict.fromkeys(ablation.METRIC_KEYS, 0.5), 1.0, False)])
    md = ablation.table_markdown(table, base.record())
    assert "| `EPOCHS` | 6 | 2 |" in md and "instead of the settings of run `mine`:" in md


def test_without_a_baseline_run_the_lab_defaults_are_used_and_said(tmp_path):
    art = tmp_path / "art"
    _finished_run(art, "a-variant", 3_000, variant="temp", lr=0.003)
    base = base_settings.from_notebook(_notebook(art))
    assert base.run is None and base.cfg.lr == config.Config().lr
    assert "the lab's defaults: there is no finished baseline run yet" in base.markdown()


def test_base_run_by_name_and_a_name_that_is_not_a_finished_run(tmp_path):
    art = tmp_path / "art"
    _finished_run(art, "mine", 2_000, lr=3e-4)
    _finished_run(art, "older", 1_000, lr=5e-4)
    assert base_settings.from_notebook(_notebook(art, BASE_RUN="older")).cfg.lr == 5e-4
    with pytest.raises(FileNotFoundError, match=r"BASE_RUN='nope' is not a finished run .* Finished runs: \['mine', 'older'\]"):
        base_settings.from_notebook(_notebook(art, BASE_RUN="nope"))
    with pytest.raises(config.ConfigError, match="EPOCS"):
        base_settings.from_notebook(_notebook(art, EPOCS=3))


def test_a_baseline_the_last_ablation_trained_with_overrides_never_becomes_the_next_base(tmp_path):
    art = tmp_path / "art"
    _finished_run(art, "mine", 2_000, epochs=6)
    _finished_run(art, "ablation-baseline", 3_000, epochs=1)  # 04 trained it with EPOCHS=1 from base "mine"
    (art / "ablation").mkdir()
    runs = [{"run_name": "ablation-baseline"}, {"run_name": "temp-run"}]
    (art / "ablation" / "ablation.json").write_text(json.dumps({"table": {}, "runs": runs, "config": {}, "base": {"run": "mine"}}))
    assert base_settings.from_notebook(_notebook(art)).run == "mine"


def test_a_base_run_whose_config_json_is_lost_or_edited_is_read_from_its_weights(tmp_path):
    """The checkpoint is the source of truth: 04 never says "no finished baseline" for a lost config.json, and never
    trains the study at a WEIGHT_DECAY the base run did not train with."""
    art = tmp_path / "art"
    run = _finished_run(art, "mine", 2_000, weight_decay=0.01, image_size=64)
    summary = {"run_name": "mine", "best_epoch": 1, "best_val": {}, "hardware": {}, "epochs": 1}
    (run / "metrics.json").write_text(json.dumps({**summary, "config": json.loads((run / "config.json").read_text())}))
    (run / "config.json").unlink()
    with pytest.warns(UserWarning, match="config.json was missing or damaged: rewritten from best.pt"):
        base = base_settings.from_notebook(_notebook(art))
    assert base.run == "mine" and base.cfg.image_size == 64 and (run / "config.json").exists()
    edited = json.loads((run / "config.json").read_text())
    edited["weight_decay"] = 0.05  # by hand, after the run trained
    (run / "config.json").write_text(json.dumps(edited))
    with pytest.warns(UserWarning, match=r"WEIGHT_DECAY: 0.05 in the file, 0.01 trained"):
        base = base_settings.from_notebook(_notebook(art))
    assert base.cfg.weight_decay == 0.01 and json.loads((run / "config.json").read_text())["weight_decay"] == 0.01


def test_an_override_says_exactly_which_rows_of_the_study_it_holds_for(tmp_path):
    """EPOCHS=1 in 04 over a 2-epoch baseline: the finished baseline is reused at 2 epochs, temp trains for 1."""
    art = tmp_path / "art"
    _finished_run(art, "mine", 2_000, epochs=2)
    base = base_settings.from_notebook(_notebook(art, EPOCHS=1))
    assert "| `EPOCHS` | 2 | 1 | every run (to be trained) |" in base_settings.overrides_markdown(base.record())  # before

    def outcome(variant, epochs):
        return ablation.RunOutcome(variant, 0, f"{variant}-run", {}, 1.0, variant == "baseline", trained={"epochs": epochs})

    record = ablation.base_record(base, [outcome("baseline", 2), outcome("temp", 1)])
    assert record["overrides"]["epochs"]["not_held_by"] == {"baseline": 2}
    assert "| `EPOCHS` | 2 | 1 | not: baseline (2: reused) |" in base_settings.overrides_markdown(record)
    record = ablation.base_record(base, [outcome("baseline", 1), outcome("temp", 1)])
    assert "| `EPOCHS` | 2 | 1 | every run |" in base_settings.overrides_markdown(record)
    assert "the baseline included" not in base_settings.overrides_markdown(record)  # no claim beyond the rows


def test_04_stops_before_writing_anything_while_a_baseline_is_being_trained(tmp_path):
    """02 continues the baseline (its lock held by a live process): 04 says so and writes nothing; once the holder is
    gone (its lock stale), 04 goes on."""
    import socket
    import subprocess
    import sys

    from helpers.store.runlock import RunLocked

    art = tmp_path / "art"
    run = _finished_run(art, "mine", 2_000)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"pid": holder.pid, "host": socket.gethostname(), "purpose": "training", "started": "now"}
        (run / "run.lock").write_text(json.dumps(lock))
        before = sorted(p.name for p in (art / "runs").iterdir())
        with pytest.raises(RunLocked, match=r"Run mine \(a baseline\) is being trained right now .*Let notebook 02 finish"):
            base_settings.from_notebook(_notebook(art))
        assert sorted(p.name for p in (art / "runs").iterdir()) == before
    finally:
        holder.kill()
        holder.wait()
    assert base_settings.from_notebook(_notebook(art)).run == "mine"  # the holder is gone: its lock no longer stops 04


def test_an_uppercase_constant_of_04s_modification_cell_is_not_a_setting(tmp_path):
    art = tmp_path / "art"
    _finished_run(art, "mine", 2_000)
    cell = "import torch.nn.functional as F\nBIAS = -10.0\n\n\ndef my_loss(a, b, s, n=None):\n    return (a - b).sum() + BIAS\n"
    namespace = {**_notebook(art), "In": ["", "VARIANTS = ['temp']\n", cell], "BIAS": -10.0, "F": json}
    assert base_settings.from_notebook(namespace).run == "mine"  # no "unknown key BIAS"


def test_a_base_run_trained_with_the_students_step_gives_every_row_of_the_study_that_step(tmp_path):
    """A baseline trained with an edited training-step cell (02): 04, whose kernel holds the notebooks' step, trains every
    row with the base run's own cells (its weights file keeps them), so the study compares against the run it names."""
    from helpers.core.lab import TRAINING, LabCell, LabCode

    shipped = LabCode.shipped()
    mine = LabCode(LabCell(c.notebook, c.cell_id, c.source + "\n# my step: clips at 0.5") if c.key == "02:training-step" else c
                   for c in shipped.cells)  # fmt: skip
    art = tmp_path / "art"
    run = _finished_run(art, "mine", 2_000, epochs=3)
    weights = torch.load(run / "best.pt", weights_only=True)
    torch.save({**weights, "lab_code": mine.sources(TRAINING)}, run / "best.pt")
    base = base_settings.from_notebook(_notebook(art))
    assert base.run == "mine"
    assert base.cfg.lab.cell("02:training-step").source.endswith("# my step: clips at 0.5")
    assert base.cfg.lab.digest(TRAINING) == mine.digest(TRAINING) != shipped.digest(TRAINING)  # every row's identity: that step
