"""The report never contradicts its figures: every judging sentence is computed, and stale results are never shown."""

import shutil
from pathlib import Path

import pytest

from helpers.core.artifacts import StaleArtifact
from helpers.evaluation import evaluate
from helpers.store import runs
from helpers.study import report
from helpers.training import train


def _epochs(val_losses, train_losses):
    return [
        {"epoch": e, "val_loss": v, "train_loss": t, "val_rsum": 1.0}
        for e, (v, t) in enumerate(zip(val_losses, train_losses), 1)
    ]


def test_overfitting_is_said_only_when_the_curves_show_it():
    overfit = report.convergence_sentence(_epochs([2.0, 1.5, 1.7, 1.9], [2.1, 1.6, 1.2, 0.9]), best_epoch=2)
    assert "started to overfit" in overfit and "epoch 2 (1.500)" in overfit
    improving = report.convergence_sentence(_epochs([2.0, 1.5, 1.4, 1.3], [2.1, 1.6, 1.2, 0.9]), best_epoch=4)
    assert "still falling" in improving and "overfit" not in improving
    unstable = report.convergence_sentence(_epochs([2.0, 1.5, 1.9], [2.1, 1.6, 1.8]), best_epoch=2)
    assert "unstable" in unstable and "overfit" not in unstable.replace("rather than overfitting", "")
    flat = report.convergence_sentence(_epochs([2.0, 1.5, 1.5001], [2.1, 1.6, 1.2]), best_epoch=2)
    assert "levelled off" in flat and "still falling" not in flat and "overfit" not in flat
    assert "no trend" in report.convergence_sentence(_epochs([2.0], [2.1]), best_epoch=1)


def _metrics(i2t, t2i):
    return {"i2t_R@1": i2t, "t2i_R@1": t2i, "i2t_median_rank": 2, "t2i_median_rank": 3}


def test_the_stronger_direction_is_the_one_the_figures_show():
    assert report.direction_sentence(_metrics(0.30, 0.20)).startswith("Image→text R@1 is higher than text→image (30.0 vs 20.0)")
    reverse = report.direction_sentence(_metrics(0.090, 0.174))  # the demo's figures that used to be misreported
    assert reverse.startswith("Text→image R@1 is higher than image→text (17.4 vs 9.0)")
    assert "Image→text R@1 is higher" not in reverse
    assert "equal" in report.direction_sentence(_metrics(0.2, 0.2))


def test_report_marks_drafts_and_states_the_true_direction(trained, tmp_path):
    cfg, paths, _ = trained
    art = tmp_path / "art"
    shutil.copytree(paths.artifacts_dir, art, ignore=shutil.ignore_patterns("uninterrupted*", "killed*", "temp-*", "bank-*"))
    run_cfg = cfg.replace(artifacts_dir=str(art), run_name="shared", eval_split="test")
    from helpers.core import env

    record = evaluate.evaluate(run_cfg, env.resolve_paths(run_cfg, environment="local"), "cpu", False).record
    text = report.build_report(art, "shared").path.read_text()
    i2t, t2i = 100 * record["metrics"]["i2t_R@1"], 100 * record["metrics"]["t2i_R@1"]
    stronger = "Image→text R@1 is higher" if i2t > t2i else "Text→image R@1 is higher" if t2i > i2t else "are equal"
    assert stronger in text
    assert text.count(report.DRAFT) == 2  # loss intuition and observations
    assert "**Template: complete it yourself.**" in text and "Link to the conversation" in text
    section = text.split("## 9. Observations: stability, convergence, retrieval quality\n", 1)[1].split("## 10.", 1)[0]
    assert all(line.startswith(">") for line in section.strip().splitlines())  # the whole section is a marked draft


def test_retraining_never_lets_the_report_quote_the_old_model(workspace, tmp_path):
    """train 2 epochs -> evaluate -> FORCE_RETRAIN with 1 epoch -> report: the old test R@1 must not appear."""
    from helpers.core import env

    cfg, paths = workspace
    art = tmp_path / "art"
    for item in paths.artifacts_dir.iterdir():  # the prepared data only, no other runs
        if item.is_file():
            shutil.copy2(item, art / item.name) if art.exists() else (art.mkdir(), shutil.copy2(item, art / item.name))
    shutil.copytree(paths.image_cache_dir, art / "image_cache")
    cfg = cfg.replace(artifacts_dir=str(art), run_name="retrained", epochs=2, eval_split="test")
    paths = env.resolve_paths(cfg, environment="local")
    train.train(cfg, paths, progress=False, log=lambda m: None)
    old = evaluate.evaluate(cfg, paths, "cpu", False).record
    run = paths.runs_dir / "retrained"
    kept = (run / "eval_test.json").read_bytes()
    train.train(cfg.replace(epochs=1, force_retrain=True, seed=5), paths, progress=False, log=lambda m: None)
    assert not (run / "eval_test.json").exists() and not (run / "eval_test.csv").exists()  # retraining removed them
    (run / "eval_test.json").write_bytes(kept)  # and if one is restored or left by an older version...
    with pytest.raises(StaleArtifact, match=r"scored an earlier model.*Re-run 03_evaluate_clip.ipynb with RUN_NAME='retrained'"):
        runs.load_eval(run, "test")
    text = report.build_report(art, "retrained").path.read_text()
    summary = text.split("## 2. Data", 1)[0]
    assert f"{100 * old['metrics']['i2t_R@1']:.1f} / {100 * old['metrics']['i2t_R@5']:.1f}" not in summary
    assert "scored an earlier model" in text and "_Missing: test-split results" in text


def test_saved_figures_carry_the_run_name(tmp_path):
    import matplotlib.pyplot as plt
    from PIL import Image

    from helpers.core.figures import footer_for, save_figure

    assert footer_for(Path("/x/artifacts/runs/baseline-s0/figures_test/q.png")) == "run baseline-s0"
    assert footer_for(tmp_path / "figures" / "pairs_grid.png") is None
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    path = save_figure(fig, tmp_path / "runs" / "my-run" / "f.png")
    assert any(t.get_text() == "run my-run" for t in fig.texts) and Image.open(path).size[0] > 0


def test_another_runs_best_pt_is_refused_by_03_and_02_also_without_metrics_json(trained, tmp_path):
    """best.pt copied in from another run and metrics.json gone: 03 does not score the foreign weights as this run,
    and 02 writes no summary for them (the check is the weights file against the run's own checkpoint)."""
    from helpers.core.artifacts import ArtifactError
    from helpers.core.env import Paths

    cfg, paths, _ = trained
    art = shutil.copytree(paths.artifacts_dir, tmp_path / "art", ignore=shutil.ignore_patterns("figures_*", "eval_*"))
    copy = Paths.for_artifacts(art)
    mine = cfg.replace(artifacts_dir=str(art))
    other = mine.replace(epochs=1, max_steps_per_epoch=2, run_name="other", seed=7)
    train.train(other, copy, progress=False, log=lambda m: None)
    run = art / "runs" / "shared"
    shutil.copy(art / "runs" / "other" / "best.pt", run / "best.pt")
    (run / "metrics.json").unlink()
    with pytest.raises(ArtifactError, match="best.pt is not this run's best epoch .*copied in or restored from elsewhere"):
        evaluate.evaluate(mine, copy, device="cpu", progress=False)
    with pytest.raises(ArtifactError, match="best.pt is not this run's best epoch"):
        train.train(mine, copy, progress=False, log=lambda m: None)
    assert not (run / "metrics.json").exists() and not (run / "eval_test.json").exists()
