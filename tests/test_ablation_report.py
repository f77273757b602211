"""Ablation summary and the report assembled from artifacts (complete and with pieces missing)."""

import json
import re
import shutil

import pytest

from helpers.core.storage import read_json
from helpers.evaluation import evaluate
from helpers.study import ablation, report
from helpers.study.ablation import RunOutcome
from helpers.study.base_settings import BaseSettings


def _outcome(variant, seed, r1):
    metrics = {k: 0.5 for k in ablation.RECALL_KEYS}
    metrics["t2i_R@1"] = r1
    metrics["rsum"] = sum(metrics[k] for k in ablation.RECALL_KEYS)
    return RunOutcome(variant, seed, f"{variant}-s{seed}", metrics, 2.0, False)


def test_summary_with_seeds_flags_noise():
    outcomes = [_outcome("baseline", 0, 0.30), _outcome("baseline", 1, 0.34), _outcome("head_ln", 0, 0.33), _outcome("head_ln", 1, 0.35)]
    outcomes += [_outcome("optim", 0, 0.45), _outcome("optim", 1, 0.47)]
    table = ablation.summarise(outcomes)
    assert table["baseline"]["t2i_R@1"] == pytest.approx(32.0) and table["baseline"]["t2i_R@1_std"] > 2
    assert table["head_ln"]["t2i_R@1_delta"] == pytest.approx(2.0) and table["head_ln"]["t2i_R@1_within_noise"]
    assert table["optim"]["t2i_R@1_delta"] == pytest.approx(14.0) and not table["optim"]["t2i_R@1_within_noise"]
    md = ablation.table_markdown(table)
    assert "(+2.0~)" in md and "(+14.0)" in md and "± " in md and "indistinguishable from noise" in md
    single = ablation.table_markdown(ablation.summarise([_outcome("baseline", 0, 0.3), _outcome("augment", 0, 0.31)]))
    assert "One seed only" in single and "~" not in single.split("\n")[3]


@pytest.fixture(scope="module")
def full_artifacts(trained, tmp_path_factory):
    """A copy of the trained workspace with an evaluation, figures and an ablation summary."""
    from helpers.core import figures
    from helpers.evaluation import qualitative

    cfg, paths, _ = trained
    result = evaluate.evaluate(cfg.replace(eval_split="test"), paths, device="cpu", progress=False)
    index = qualitative.RetrievalIndex.from_eval(result, cfg.text_model)
    figures.save_figure(qualitative.query_grid(index, ["a red circle"], k=3), result.data.run_dir / "figures_test" / "text_queries.png")
    scored = {"path": "best.pt", "sha256": result.record["checkpoint"]["sha256"]}
    augment = _outcome("augment", 0, 0.2)
    shutil.copytree(paths.runs_dir / "shared", paths.runs_dir / augment.run_name, dirs_exist_ok=True)  # its weights: a copy
    augment.checkpoint = scored
    outcomes = [RunOutcome("baseline", 0, "shared", result.metrics, 1.0, True, checkpoint=scored), augment]
    ablation.save(ablation.summarise(outcomes), outcomes, BaseSettings(cfg, paths, "shared", "test"), paths.artifacts_dir / "ablation")
    return paths.artifacts_dir


def _image_links(text):
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)


def test_report_from_complete_artifacts(full_artifacts):
    rep = report.build_report(full_artifacts, "shared")
    text = rep.path.read_text()
    for heading in (
        "## 1. Summary", "## 2. Data", "## 3. Hyperparameters", "## 4. Hardware and runtime", "## 5. The CLIP loss: intuition",
        "## 6. Retrieval results", "## 7. Training curves", "## 8. Qualitative retrievals",
        "## 9. Observations: stability, convergence, retrieval quality", "## 10. Ablation", "## 11. Reflection on LLM use",
    ):  # fmt: skip
        assert heading in text, heading
    for word in ("anchor", "positive", "negatives", "temperature", "Link to the conversation", "prompts"):
        assert word in text
    links = _image_links(text)
    assert links and all((rep.path.parent / link).exists() for link in links)  # no broken image links
    assert "figures/ablation_recall_delta.png" in links and "figures/shared_loss_curves.png" in links
    # numbers match the metrics files
    ev = read_json(full_artifacts / "runs" / "shared" / "eval_test.json")["metrics"]
    metrics = read_json(full_artifacts / "runs" / "shared" / "metrics.json")
    assert f"text→image R@1/5/10 = {100 * ev['t2i_R@1']:.1f} / {100 * ev['t2i_R@5']:.1f} / {100 * ev['t2i_R@10']:.1f}" in text
    assert f"best epoch **{metrics['best_epoch']}** of {metrics['epochs']}" in text
    assert f"| {metrics['img_per_s']:.0f} |" in text
    assert "image_classes" in " ".join(rep.missing)  # only text_queries was drawn for this copy


def test_report_degrades_gracefully(tmp_path, full_artifacts):
    empty = report.build_report(tmp_path / "nothing")
    text = empty.path.read_text()
    assert "Run `01_dataset_prep.ipynb`" in text and "Run `02_train_clip.ipynb`" in text and "Run `04_ablation.ipynb`" in text
    assert "## 11. Reflection on LLM use" in text and not _image_links(text)
    partial = tmp_path / "partial"
    shutil.copytree(full_artifacts, partial)
    shutil.rmtree(partial / "ablation")
    (partial / "runs" / "shared" / "eval_test.json").unlink()
    (partial / "runs" / "shared" / "loss_curves.png").unlink()
    rep = report.build_report(partial, "shared")
    text = rep.path.read_text()
    assert "Run `03_evaluate_clip.ipynb`" in text and "Run `04_ablation.ipynb`" in text
    assert all((rep.path.parent / link).exists() for link in _image_links(text))
    assert "best epoch" in text  # what exists is still reported


def _with_val(outcome, val_rsum):
    outcome.val_metrics = {**outcome.metrics, "rsum": val_rsum}
    return outcome


def test_variants_are_chosen_on_val_even_when_test_disagrees():
    # augment is better on test, optim on val: the table must choose optim (val), and still report augment's test figure
    outcomes = [
        _with_val(_outcome("baseline", 0, 0.30), 3.0),
        _with_val(_outcome("augment", 0, 0.60), 3.1),
        _with_val(_outcome("optim", 0, 0.35), 3.5),
    ]
    table = ablation.summarise(outcomes)
    assert ablation.chosen_variant(table) == "optim"
    assert table["optim"]["val_rsum_delta"] == pytest.approx(50.0)
    md = ablation.table_markdown(table)
    assert "| **optim** ★ |" in md and "| augment |" in md and "compared on the val split" in md
    assert "(+30.0)" in md  # augment's test T->I R@1 change is reported, not hidden
    fig = ablation.delta_chart(table)
    assert [a.get_title() for a in fig.axes][:2] == ["val rsum change (compares)", "test Recall@K change (reported, never used to choose)"]


def test_hyperparameters_show_what_each_run_used_main_run_first_and_only_what_applies(tmp_path, full_artifacts, tiny_tower, trained):
    import json

    from helpers.clip.flags import Recipe
    from helpers.clip.loss import CLIP_LOSS_TEXT
    from helpers.core.env import Paths
    from helpers.data.text_tower import parameter_count

    art = tmp_path / "art"
    shutil.copytree(full_artifacts, art)
    for name, variant in (("aa-other", "baseline"), ("zz-bank", "bank+temp")):
        shutil.copytree(art / "runs" / "shared", art / "runs" / name)
        for file in ("config.json", "metrics.json"):
            data = json.loads((art / "runs" / name / file).read_text())
            config = data.get("config", data)
            config.update(variant=variant, learnable_temperature=variant != "baseline")
            if "loss" in data:  # metrics.json: the trainer's words for the loss that trained
                data["loss"] = Recipe.of(variant).loss_text(CLIP_LOSS_TEXT)
            (art / "runs" / name / file).write_text(json.dumps(data))
    (art / "runs" / "stale").mkdir()  # a folder of no study: named once, never a column
    shutil.copy(art / "runs" / "shared" / "metrics.json", art / "runs" / "stale" / "metrics.json")
    scored = read_json(art / "ablation" / "ablation.json")["runs"][0]["checkpoint"]  # the copies hold the same weights
    outcomes = [RunOutcome(v, seed, name, {**{k: 0.5 for k in ablation.RECALL_KEYS}, "rsum": 3.0}, 1.0, True, checkpoint=scored)
                for v, seed, name in (("baseline", 0, "shared"), ("baseline", 1, "aa-other"), ("bank+temp", 0, "zz-bank"))]  # fmt: skip
    copy = Paths.for_artifacts(art)
    ablation.save(ablation.summarise(outcomes), outcomes, BaseSettings(trained[0], copy, "shared", "test"), art / "ablation")
    text = report.build_report(art, "shared").path.read_text()
    section = text.split("## 3. Hyperparameters", 1)[1].split("\n## ", 1)[0]
    header = next(line for line in section.splitlines() if line.startswith("| setting"))
    assert header.index("`shared`") < header.index("`aa-other`") < header.index("`zz-bank`")  # main run, then baselines
    assert "`stale`" not in header and "`augment-s0`" not in header  # the runs of this study only
    assert text.count("`stale`") == 1 and "Other runs in `runs/`, not part of this report: `augment-s0` (finished), `stale` (" in text
    rows = {line.split(" | ")[0].strip("| "): line for line in section.splitlines() if line.startswith("| ")}
    assert rows["bank size"].endswith("| — | — | 32,768 |")  # only the bank run has a bank
    assert "learned, from 0.07" in rows["temperature τ"] and "0.07 (fixed)" in rows["temperature τ"]
    assert "| float32 |" in rows["precision"] and "True" not in rows["precision"]  # the dtype used (CPU), not AMP=True
    metrics = read_json(art / "runs" / "shared" / "metrics.json")
    assert f"{metrics['num_train_images']:,} / {metrics['num_val_images']:,}" in rows["train / val images"] and "None" not in section
    assert f"| `{tiny_tower.name}` |" in rows["text model (frozen)"] and str(tiny_tower) not in section  # its name, not its path
    assert f"{parameter_count(str(tiny_tower)):,}" in rows["text tower parameters (frozen)"]
    assert "Linear(" in rows["projection head"] and "symmetric InfoNCE" in rows["loss"] and "caption bank" in rows["loss"]
    assert "embedding width" in rows and "image tower parameters (trainable / frozen)" in rows


def test_the_report_lists_no_bank_size_without_a_bank_run(full_artifacts):
    text = report.build_report(full_artifacts, "shared").path.read_text()
    assert "| bank size |" not in text.split("## 3. Hyperparameters", 1)[1].split("\n## ", 1)[0]


def test_the_study_order_survives_a_students_modification_from_a_kernel_that_is_gone():
    """Notebook 05 reads `mine` from ablation.json in a kernel where it was never registered: rows, records and code
    keep the study's order (baseline, then VARIANTS), and nothing asks the registry for it."""
    table = {v: {"seeds": [0]} for v in ("baseline", "head_ln", "mine-gone")}  # JSON: keys sorted, the order kept aside
    described = {"head_ln": {"code": "a"}, "mine-gone": {"code": "b"}}
    record = {"table": table, "order": ["baseline", "mine-gone", "head_ln"], "variants": described}
    rows, records = ablation.in_order(record)
    assert list(rows) == ["baseline", "mine-gone", "head_ln"] and list(records) == ["mine-gone", "head_ln"]
    old = {"table": table, "variants": described}  # an ablation.json written before "order": the baseline first
    assert next(iter(ablation.in_order(old)[0])) == "baseline"


def _even(variant, seed, val, test):
    """A run whose six Recall@K are all ``test`` on test and ``val`` on val (fractions)."""
    metrics = {**{k: test for k in ablation.RECALL_KEYS}, "rsum": 6 * test}
    return RunOutcome(variant, seed, f"{variant}-s{seed}", metrics, 1.0, False, {**{k: val for k in ablation.RECALL_KEYS}, "rsum": 6 * val})


@pytest.mark.parametrize("better_on", ["val", "test"])
def test_the_generated_comparison_is_computed_and_flips_with_the_figures(better_on):
    """2.5.3's summary: each sentence follows the figures. The same study with val and test swapped says the opposite:
    the change's direction on each split, the variant val chooses, where test ranks it, whether test agrees."""
    high, low = (0.6, 0.4) if better_on == "val" else (0.4, 0.6)
    table = ablation.summarise([_even("baseline", 0, 0.5, 0.5), _even("head_ln", 0, high, low)])
    lines = ablation.comparison_summary(table)
    val_word, test_word = ("rose", "fell") if better_on == "val" else ("fell", "rose")
    assert lines[0].startswith("**head_ln** against the baseline:")
    assert f"On val, rsum {val_word} by 60.0 points of 600 (I→T R@1 {100 * (high - 0.5):+.1f}" in lines[0]
    assert f"On test, rsum {test_word} by 60.0 points of 600" in lines[0]
    assert "With one seed the spread across seeds is unknown" in lines[0]
    chosen, other = ("head_ln", "baseline") if better_on == "val" else ("baseline", "head_ln")
    assert lines[-1].startswith(f"Val chooses **{chosen}** (val rsum {600 * max(high, 0.5):.1f} of 600")
    assert f"on test it ranks 2 of 2 by rsum. Test would rank **{other}** first" in lines[-1]
    md = ablation.comparison_markdown(table)
    assert md.startswith("**Generated comparison**") and md.count("\n- ") == 2


@pytest.mark.parametrize("spread", [0.001, 0.2])
def test_the_generated_comparison_says_whether_a_change_is_outside_the_seed_spread(spread):
    """Two seeds: a +6 rsum change (of 600) against seeds that differ by 0.6 is outside the spread; against seeds that
    differ by 120, within it. Test agrees with val when both rank the variant first."""
    outcomes = [_even("baseline", s, 0.5 + d, 0.5 + d) for s, d in ((0, 0), (1, spread))]
    outcomes += [_even("augment", s, 0.51 + d, 0.51 + d) for s, d in ((0, 0), (1, spread))]
    lines = ablation.comparison_summary(ablation.summarise(outcomes))
    where = "outside" if spread < 0.01 else "within"
    assert f"Across 2 seeds, the val rsum change is {where} the spread" in lines[0]
    assert ("14 of the 14 changes listed are outside it" if where == "outside" else "0 of the 14 changes") in lines[0]
    assert lines[-1].startswith("Val chooses **augment**") and lines[-1].endswith("Test agrees.")


def test_a_new_study_keeps_the_previous_one_and_the_report_names_both(tmp_path, full_artifacts, trained):
    """Two studies in a row with different VARIANTS (04 run twice): both tables stay under ablation/studies/, the top
    holds the newest, and the report says which study it shows and names the other."""
    from helpers.core.env import Paths

    art = shutil.copytree(full_artifacts, tmp_path / "art")
    base = BaseSettings(trained[0], Paths.for_artifacts(art), "shared", "test")
    studies = {}
    for variants in (["augment"], ["head_ln", "optim"]):
        outcomes = [_with_val(_outcome(v, 0, 0.3 + 0.01 * i), 3.0) for i, v in enumerate(["baseline", *variants])]
        for o in outcomes:
            o.run_name = "shared"  # the report checks each row's weights: all rows score the one run of this workspace
            o.checkpoint = json.loads((art / "ablation" / "ablation.json").read_text())["runs"][0]["checkpoint"]
        ablation.save(ablation.summarise(outcomes), outcomes, base, art / "ablation")
        studies[tuple(variants)] = json.loads((art / "ablation" / "ablation.json").read_text())["study"]
    kept = ablation.kept_studies(art / "ablation")
    assert set(studies.values()) <= set(kept) and len(set(studies.values())) == 2
    for variants, name in studies.items():
        table = json.loads((art / "ablation" / "studies" / name / "ablation.json").read_text())["table"]
        assert set(table) == {"baseline", *variants}
        md = (art / "ablation" / "studies" / name / "ablation.md").read_text()
        assert all(re.search(rf"\| (\*\*)?{v}(\*\*)?( ★)? \|", md) for v in ("baseline", *variants)) and "Generated comparison" in md
    text = report.build_report(art, "shared").path.read_text()
    section = text.split("## 10. Ablation", 1)[1].split("\n## ", 1)[0]
    newest, older = studies[("head_ln", "optim")], studies[("augment",)]
    assert f"Study `{newest}`: the newest notebook 04 wrote" in section and f"`{older}`" in section
    assert "| optim |" in section and "| augment |" not in section


def test_a_replaced_step_is_shown_as_such_in_the_hyperparameters(full_artifacts):
    """A run whose step cell was edited: the report cannot know whether that step clips, so the row says the step decides
    (an unedited run still reads "none")."""
    from helpers.store.runs import RunDir

    metrics = read_json(full_artifacts / "runs" / "shared" / "metrics.json")
    run = report.RunArtifacts(RunDir(full_artifacts / "runs" / "shared"), metrics["config"], metrics, None, None, None)
    assert report.hyperparameters(run, lambda _: None)["gradient clipping"] == "none"
    edited = {**metrics, "lab_edited": {"02:training-step": "def training_step(...): ..."}}
    run = report.RunArtifacts(RunDir(full_artifacts / "runs" / "shared"), metrics["config"], edited, None, None, None)
    row = report.hyperparameters(run, lambda _: None)
    assert row["gradient clipping"].startswith("your step decides (`training-step` edited")
    assert row["lab code (the notebooks' cells)"] == "edited: `training-step` (02)"


def test_the_report_on_a_full_disk_says_so_and_what_to_free(full_artifacts, tmp_path, monkeypatch):
    import errno

    from helpers.core import storage

    art = shutil.copytree(full_artifacts, tmp_path / "art")

    def no_space(src, fh):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "_copy_into", no_space)  # the disk fills while the report copies its figures
    with pytest.raises(storage.DiskSpaceError, match=r"No space left on the disk of .*report/figures.* Free space there \(run folders"):
        report.build_report(art, "shared")
    assert not list((art / "report").rglob(".*.tmp"))  # no half-written file left behind


def test_flickr30k_transfer_columns_appear_when_04_scored_the_runs_there():
    """FLICKR30K in 04: the transfer's R@1 both ways and rsum beside the test split's, each with its change against the
    baseline; a study without them shows no such column, and a run not scored there shows a dash, never a number."""
    from dataclasses import replace

    def flickr(value):
        return {**{k: value for k in ablation.RECALL_KEYS}, "rsum": 6 * value}

    plain = [_outcome("baseline", 0, 0.30), _outcome("head_ln", 0, 0.35)]
    scored = [replace(plain[0], flickr_metrics=flickr(0.20)), replace(plain[1], flickr_metrics=flickr(0.25))]
    table = ablation.summarise(scored)
    assert table["head_ln"]["flickr_rsum"] == pytest.approx(150.0) and table["head_ln"]["flickr_rsum_delta"] == pytest.approx(30.0)
    md = ablation.table_markdown(table)
    assert "| Flickr30k I→T R@1 | Flickr30k T→I R@1 | Flickr30k rsum |" in md and "| 150.0 (+30.0) |" in md
    assert "Flickr30k" not in ablation.table_markdown(ablation.summarise(plain))
    mixed = ablation.table_markdown(ablation.summarise([scored[0], plain[1]]))
    assert "| Flickr30k rsum |" in mixed and next(r for r in mixed.splitlines() if r.startswith("| head_ln")).count("| — |") == 3


def test_a_table_scored_by_an_edited_cell_says_so_and_the_report_names_code_that_differs():
    """A pasted table says which code made it: 03's Recall@K (and classification) tables carry a note when the student's
    edited cell scored them, none when the notebook's did; the report says when 04 scored the study with other 03 cells
    than section 6's table, and says nothing when they are the same."""
    from helpers.evaluation.classification import classification_markdown

    m = {f"{d}_R@{k}": 0.1 * k / 10 for d in ("i2t", "t2i") for k in (1, 5, 10)}
    m.update(rsum=sum(m.values()), i2t_median_rank=3.0, t2i_median_rank=4.0)
    record = {"run_name": "r", "split": "test", "num_images": 100, "num_captions": 500, "protocol": "karpathy-5k", "metrics": m,
              "lab_code": {"digest": "aaaa", "edited": {}}}  # fmt: skip
    edited = {**record, "lab_code": {"digest": "bbbb", "edited": {"03:recall-at-k": "def recall_at_k(...): ..."}}}
    note = "Computed by your edited lab cell `recall-at-k` (03), not the notebook's"
    assert note not in evaluate.results_markdown(record) and note in evaluate.results_markdown(edited)
    rows = evaluate.measured_rows(edited, "this run", "100 images")  # the CSV's rows, which travel without the note
    assert rows[0][1] == "test: 100 images; Recall@K by your edited cell recall-at-k"
    assert evaluate.measured_rows(record, "this run", "100 images")[0][1] == "test: 100 images"
    other = {**record, "lab_code": {"digest": "cccc", "edited": {"03:results-csv": "..."}}}  # the CSV cell: not the table's figures
    assert "Computed by your edited" not in evaluate.results_markdown(other)

    scores = {"top1": 0.5, "top5": 0.9, "mAP": 0.4, "ap": {}}
    classified = {"categories": 3, "categories_present": 3, "images": 10, "images_with_objects": 9, "prompt": "a {}",
                  "chance": {"top1": 0.3, "top5": 1.0, "mAP": 0.3}, "run": scores, "zero_shot": None}  # fmt: skip
    assert "your edited lab cell" not in classification_markdown(classified)
    assert "your edited lab cell `zero-shot-classification` (03)" in classification_markdown({**classified, "edited": True})

    assert report.scored_by_note(record["lab_code"], record) == []  # the same 03 code scored both
    lines = "\n".join(report.scored_by_note(edited["lab_code"], record))
    assert note in lines and "Scored by other notebook-03 code than section 6" in lines and "`03:recall-at-k`" in lines
    assert report.scored_by_note(None, record) == []  # an ablation.json of an earlier kit


def test_04_never_reuses_results_scored_by_other_03_cells(trained):
    """04 reuses a run's eval_<split>.json while it scores the current weights; figures scored by other Recall@K code
    (03's kernel with an unsaved edit) are scored again with the study's cells, never tabled beside them."""
    from helpers.core.config import with_lab
    from helpers.core.lab import EVALUATION, LabCell, LabCode

    cfg, paths, result = trained
    cfg = cfg.replace(eval_split="val")
    shipped = LabCode.shipped()
    edited = LabCode(LabCell(c.notebook, c.cell_id, c.source.replace("(ranks < k)", "(ranks <= k)")) if c.key == "03:recall-at-k" else c
                     for c in shipped.cells)  # fmt: skip
    try:
        theirs = evaluate.evaluate(with_lab(cfg, edited), paths, progress=False).record  # R@K counted one rank too far
        assert ablation._cached_or_new_eval(with_lab(cfg, edited), paths, progress=False) == theirs  # the same code: reused
        ours = ablation._cached_or_new_eval(with_lab(cfg, shipped), paths, progress=False)
        assert ours["lab_code"]["digest"] == shipped.digest(EVALUATION) != theirs["lab_code"]["digest"]
        assert ours["metrics"]["i2t_R@1"] <= theirs["metrics"]["i2t_R@1"] and ours["metrics"] != theirs["metrics"]
    finally:
        for name in ("eval_val.json", "eval_val.csv"):
            (result.run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(result.run_dir / "figures_val", ignore_errors=True)


def test_the_report_is_built_beside_a_failed_and_an_unfinished_run_and_names_their_state(full_artifacts, tmp_path):
    """One run of the student's own that failed before its first epoch (a config.json alone) and one stopped after 1 of 3
    epochs: 05 still builds the whole report and names each once with its state."""
    from helpers.core.provenance import seal
    from helpers.store.runs import RunDir

    art = tmp_path / "art"
    shutil.copytree(full_artifacts, art)
    shared = art / "runs" / "shared"
    config = read_json(shared / "config.json")
    (art / "runs" / "mine-failed").mkdir()
    (art / "runs" / "mine-failed" / "config.json").write_text(json.dumps({**config, "run_name": "mine-failed"}))
    history = read_json(shared / "history.json")
    (art / "runs" / "mine-stopped").mkdir()
    (art / "runs" / "mine-stopped" / "config.json").write_text(json.dumps({**config, "epochs": 3, "run_name": "mine-stopped"}))
    one = {k: v for k, v in history.items() if k != "seal"}
    stopped_history = seal({**one, "run_name": "mine-stopped", "epochs": one["epochs"][:1]})
    (art / "runs" / "mine-stopped" / "history.json").write_text(json.dumps(stopped_history))
    text = report.build_report(art, "shared").path.read_text()
    assert "`mine-failed` (failed or stopped before its first epoch ended)" in text
    assert "`mine-stopped` (unfinished: 1 of 3 epochs)" in text
    assert "## 10. Ablation" in text and "## 11. Reflection" in text  # the whole report, not a refusal
    stopped = report.RunArtifacts(RunDir(art / "runs" / "mine-stopped"), {"epochs": 1}, None, {"epochs": [{}]}, None, None)
    assert stopped.status().startswith("all 1 epochs trained, no summary yet")  # the opposite case: all epochs, no summary
