"""The notebooks themselves: the .ipynb files are the source; their guarantees are checked here, and papermill runs them."""

import ast
import json
import re
import shutil
import sys
from pathlib import Path

import nbformat
import papermill as pm
import pytest
import torch
from conftest import SLOWDOWN

from helpers.data import text_tower as tt
from helpers.study import ablation

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ("01_dataset_prep.ipynb", "02_train_clip.ipynb", "03_evaluate_clip.ipynb", "04_ablation.ipynb", "05_report.ipynb")


def _cells(name):
    return nbformat.read(ROOT / name, as_version=4).cells


def test_the_five_notebooks_share_one_bootstrap_cell():
    first_code = [next(c.source for c in _cells(n) if c.cell_type == "code") for n in NOTEBOOKS]
    assert first_code[0].startswith("# @title Setup") and all(src == first_code[0] for src in first_code), (
        "the bootstrap cell differs between notebooks: copy the changed one into all five"
    )


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_clean(name):
    raw = [c.get("id") for c in json.loads((ROOT / name).read_text())["cells"]]
    assert all(raw) and len(set(raw)) == len(raw), f"{name}: every cell needs its own id (nbformat 4.5)"
    nb = nbformat.read(ROOT / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), f"{name}: clear the outputs before committing"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{name}: exactly one cell tagged 'parameters'"
    assert code.index(params[0]) == 1, f"{name}: the parameters cell comes right after the bootstrap cell"
    for line in params[0].source.splitlines():  # literals only: papermill and Colab forms rewrite them
        if line and not line.startswith("#"):
            name_, _, value = line.partition("=")
            assert name_.strip().isupper(), line
            ast.literal_eval(value.split("#")[0].strip())  # raises on anything but a literal


def test_a_gpu_is_requested_by_the_notebooks_that_use_one_and_by_no_other():
    """01 encodes ~464k captions with the text tower (1-2 min on a T4, hours on 2 vCPUs), 02 and 04 train, 03 scores;
    05 only assembles the report: asking Colab for a T4 there spends a student's GPU quota for nothing."""
    wants = {name: json.loads((ROOT / name).read_text())["metadata"].get("accelerator") == "GPU" for name in NOTEBOOKS}
    assert wants == {name: not name.startswith("05") for name in NOTEBOOKS}
    readme = (ROOT / "README.md").read_text()
    assert "01-04 ask for it; 05 only writes the report" in readme


def test_ruff_checks_the_notebooks():
    import subprocess

    out = subprocess.run([sys.executable, "-m", "ruff", "check", *NOTEBOOKS], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "error: " not in out.stderr and "No Python files" not in out.stderr


def run_notebook(name, out_dir, source=None, **params):
    out = Path(out_dir) / f"out_{name}"
    params.setdefault("INTERACTIVE", False)  # widgets can stall headless execution (jupyter/nbclient#312)
    pm.execute_notebook(
        str(source or ROOT / name),
        str(out),
        parameters=params,
        cwd=str(ROOT),
        kernel_name="python3",
        progress_bar=False,
        execution_timeout=int(600 * SLOWDOWN),
    )
    nb = json.loads(out.read_text())
    assert "PosixPath(" not in _text(nb), f"{name}: a cell ends in a bare expression whose repr leaks into the notebook"
    return nb


def _text(nb):
    return "\n".join(
        "".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", "")) + "".join(o.get("data", {}).get("text/markdown", ""))
        for c in nb["cells"]
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
    )


@pytest.fixture(scope="module")
def nb01(tmp_path_factory, synthetic_coco, tiny_tower):
    """Notebook 01 executed once on the synthetic data; later notebooks read its artifacts."""
    out = tmp_path_factory.mktemp("nb01")
    params = dict(
        DATA_SOURCE="local", DATA_DIR=str(synthetic_coco), TEXT_MODEL=str(tiny_tower), ARTIFACTS_DIR=str(out / "art"), IMAGE_SIZE=64
    )
    return run_notebook("01_dataset_prep.ipynb", out, **params), params, out


def test_notebook_01_on_synthetic_data(nb01):
    nb, params, out = nb01
    art = out / "art"
    for rel in (
        "train_text_embeds.pt",
        "val_text_embeds.pt",
        "splits.json",
        "image_cache/manifest.json",
        "figures/pairs_grid.png",
        "config_01_dataset_prep.json",
        "categories_val2014.json",  # the object categories of each val2014 image, for 03's classification
    ):
        assert (art / rel).exists(), rel
    text = _text(nb)
    assert "protocol=deterministic: train 120 images" in text
    assert "```python\ndef prepare_image(" in text and "```python\ndef normalize_images(" in text  # the transform, shown
    assert "def encode_text(" not in text and "class CocoCacheDataset(" not in text  # lab cells that run, not rendered copies
    recorded = torch.load(art / "train_text_embeds.pt", weights_only=True)["lab_code"]  # 01's cells, for 02 and 03
    assert sorted(recorded) == ["01:caption-encoding", "01:dataset"] and "def encode_text(" in recorded["01:caption-encoding"]
    assert "image (3, 64, 64) torch.float32" in text  # the Dataset cell, normalising on request
    assert text.count(str(art)) == 1 and "ARTIFACTS_DIR: " + str(art) in text  # the location once, then relative paths
    assert "saved figures/pairs_grid.png" in text
    assert "| attention mask |" in text and "`<\\|endoftext\\|>`" in text  # tokens, padding, mask; the pipes escaped for GFM
    assert re.search(r"L2 norm (0\.999\d|1\.000\d)", text) and "one row per caption" in text
    stamp = (art / "train_text_embeds.pt").stat().st_mtime_ns
    shard_stamp = (art / "image_cache" / "train2014-00000.bin").stat().st_mtime_ns
    (out / "again").mkdir()
    nb2 = run_notebook("01_dataset_prep.ipynb", out / "again", **params)
    assert "Caption embeddings: up to date" in _text(nb2)
    assert (art / "train_text_embeds.pt").stat().st_mtime_ns == stamp
    assert (art / "image_cache" / "train2014-00000.bin").stat().st_mtime_ns == shard_stamp


TINY_TRAINING = dict(
    IMAGE_WEIGHTS=None, IMAGE_BACKBONE="resnet18", HIDDEN_DIM=64, EPOCHS=2, BATCH_SIZE=32, LR=1e-3, IMAGE_SIZE=64, NUM_WORKERS=0
)


def test_notebook_02_trains_and_then_skips(nb01):
    _, params, out = nb01
    recipe = {k: v for k, v in TINY_TRAINING.items() if k != "IMAGE_SIZE"}  # 02 reads it from 01's image cache
    common = dict(ARTIFACTS_DIR=params["ARTIFACTS_DIR"], TEXT_MODEL=params["TEXT_MODEL"], RUN_NAME="nb-baseline", **recipe)
    nb = run_notebook("02_train_clip.ipynb", out, LIVE_PLOT=True, **common)
    assert "IMAGE_SIZE=64: the size notebook 01 cached the images at" in _text(nb)
    run = Path(params["ARTIFACTS_DIR"]) / "runs" / "nb-baseline"
    for name in ("checkpoint.pt", "best.pt", "history.json", "metrics.json", "loss_curves.png"):
        assert (run / name).exists(), name
    text = _text(nb)
    assert "projection head" in text and "| 2 |" in text  # parameter summary and the 2-epoch table
    assert "| predicted: this run (EPOCHS=2, 120 images) |" in text and "| training step at 64 px (32 images, fp32) |" in text
    assert text.index("projection head") < text.index("| predicted: this run")  # the doctor after the model is introduced
    assert "```python\nclass LossGuard:" in text and "```python\ndef after_divergence(" in text  # handout 2.3 item 6
    assert "```python\ndef load_text_tower(" in text and "requires_grad_(False)" in text  # plumbing, shown; the lab's code is in cells
    for lesson in ("def projection_head(", "class ClipImageModel(", "def clip_loss(", "def training_step("):
        assert lesson not in text  # defined in a lab cell that runs (tests/test_lab_code.py), never rendered as a copy
    shown = "\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))
    for machinery in ("kill_point", "backward_scale", "fix_replicated_grads", "global_clip_loss", "gather_with_local_grad", "self.dist"):
        assert machinery not in shown, machinery  # test and DDP machinery sit behind one named call, never in the lesson
    tower = sum(p.numel() for p in tt.load_text_tower(params["TEXT_MODEL"], "cpu").model.parameters())
    assert f"| text tower `tiny-clip-text` (CLIP, frozen: its caption embeddings are cached) | 0 | {tower:,} |" in text
    assert "| equal to their own captions | 0.0000 |" in text and "| 0.07 (14) |" in text  # toy loss, temperature table
    images = [o for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 1  # the live panel, redrawn in place; the saved figure is not drawn a second time
    assert "The curves above are the final ones, saved as ARTIFACTS_DIR/runs/nb-baseline/loss_curves.png" in text
    (out / "again02").mkdir()
    again = run_notebook("02_train_clip.ipynb", out / "again02", LIVE_PLOT=False, **common)
    assert "already finished" in _text(again)


def test_an_edit_to_02s_loss_cell_is_a_new_run_that_trains_with_it(nb01):
    """The loss cell doubled: 02 logs twice the loss of the lab's run on the same first batch, under a new name that the
    unedited cells would not give; the lab's run is kept."""
    from helpers.core import config, env
    from helpers.store import runs

    _, params, out = nb01
    lab_run = _baseline_of_02(params, out)  # the lab's cells, the same seed, data and first batch
    nb = nbformat.read(ROOT / "02_train_clip.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.get("id") == "clip-loss")
    assert "lab" in cell.metadata.get("tags", [])
    cell.source = cell.source.replace("return 0.5 * (", "return 2 * 0.5 * (")  # the student's edit: the loss doubled
    assert "return 2 * 0.5 * (" in cell.source
    nbformat.write(nb, out / "02_doubled.ipynb")
    settings = dict(ARTIFACTS_DIR=params["ARTIFACTS_DIR"], TEXT_MODEL=params["TEXT_MODEL"], **{**TINY_TRAINING, "EPOCHS": 1},
                    MAX_STEPS_PER_EPOCH=3)  # fmt: skip
    runs_dir = Path(params["ARTIFACTS_DIR"], "runs")
    before = set(runs_dir.glob("*"))
    try:
        (out / "nb02-doubled").mkdir()
        run_notebook("02_train_clip.ipynb", out / "nb02-doubled", source=out / "02_doubled.ipynb", LIVE_PLOT=False, **settings)
        new = sorted(set(runs_dir.glob("*")) - before)
        assert len(new) == 1, new
        unedited = config.from_params({k: v for k, v in settings.items() if k != "IMAGE_SIZE"}, image_size=64)
        assert new[0].name != runs.RunDir.for_config(env.resolve_paths(unedited), unedited).name  # the edit named a new run
        metrics = json.loads((new[0] / "metrics.json").read_text())
        assert list(metrics["lab_edited"]) == ["02:clip-loss"] and "return 2 * 0.5 * (" in metrics["lab_code"]["02:clip-loss"]
        assert not json.loads((lab_run / "metrics.json").read_text())["lab_edited"] and (lab_run / "best.pt").exists()
        first = [json.loads((r / "history.json").read_text())["steps"][0]["loss"] for r in (lab_run, new[0])]
        assert first[1] == pytest.approx(2 * first[0], rel=1e-4)  # the same first batch and weights: twice the loss
        from helpers.study import report

        written = report.build_report(Path(params["ARTIFACTS_DIR"]), new[0].name).path.read_text()  # the code that trained
        assert "edited: `clip-loss` (02)" in written  # the doubled run, its hyperparameters row
        assert "### The lab cells you edited" in written and "return 2 * 0.5 * (" in written
        assert f"`{lab_run.name}` (finished)" in written.split("## 3.", 1)[0]  # the lab's run: not of this report, named once
    finally:  # the newest baseline run otherwise: 04 would take its settings in the next test, whether this one passed or not
        for run in set(runs_dir.glob("*")) - before:
            shutil.rmtree(run)


def test_notebook_01_typo_in_parameters_names_the_key(tmp_path, synthetic_coco, tiny_tower):
    with pytest.raises(pm.PapermillExecutionError, match="EPOCS"):
        run_notebook(
            "01_dataset_prep.ipynb",
            tmp_path,
            DATA_SOURCE="local",
            DATA_DIR=str(synthetic_coco),
            TEXT_MODEL=str(tiny_tower),
            ARTIFACTS_DIR=str(tmp_path / "a"),
            EPOCS=3,
        )


def test_notebook_03_evaluates_the_run_from_02(nb01):
    _, params, out = nb01
    run = _baseline_of_02(params, out)
    (out / "nb03").mkdir()
    nb = run_notebook(
        "03_evaluate_clip.ipynb",
        out / "nb03",
        ARTIFACTS_DIR=params["ARTIFACTS_DIR"],
        TEXT_MODEL=params["TEXT_MODEL"],
        RUN_NAME="nb-baseline",
        QUERIES=["a red circle", "a blue square on the left"],
        NUM_WORKERS=0,
    )
    for name in ("eval_test.json", "eval_test.csv"):
        assert (run / name).exists(), name
    for name in ("text_queries", "image_classes", "similarity_heatmap", "retrieval_successes", "retrieval_failures", "category_ap"):
        assert (run / "figures_test" / f"{name}.png").exists(), name
    text = _text(nb)
    assert re.search(r"\| this run \| \d+\.\d \| \d+\.\d \| \d+\.\d \|", text) and "random ranking (expected)" in text  # categories
    assert "published" in text and "not re-measured" in text and "I→T R@1" in text
    assert "def retrieval_ranks(" not in text and "def results_csv(" not in text  # lab cells that run, not rendered copies
    assert "- image 2: c1 (0.87)" in text and "text→image R@1 = 66.7%" in text  # the toy example, ranked by hand
    assert "saved: ARTIFACTS_DIR/runs/nb-baseline/eval_test.json (fractions) and ARTIFACTS_DIR/runs/nb-baseline/eval_test.csv" in text
    assert "figures saved in ARTIFACTS_DIR/runs/nb-baseline/figures_test" in text
    assert len(re.findall(r"-?\d\.\d{3}  image \d+: \w", text)) == 5  # the explorer's query callback, headless
    scored = json.loads((run / "eval_test.json").read_text())
    assert scored["lab_code"]["edited"] == {} and scored["metrics"]["i2t_R@1"] < 1.0

    # the student edits 03's Recall@K cell: 03's table follows, and the results file names the edited cell
    nb = nbformat.read(ROOT / "03_evaluate_clip.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.get("id") == "recall-at-k")
    cell.source = cell.source.replace('out[f"{name}_R@{k}"] = (ranks < k).float().mean().item()', 'out[f"{name}_R@{k}"] = 1.0')
    assert 'out[f"{name}_R@{k}"] = 1.0' in cell.source
    nbformat.write(nb, out / "03_edited.ipynb")
    (out / "nb03-edited").mkdir()
    labels = Path(params["ARTIFACTS_DIR"]) / "categories_val2014.json"
    labels.rename(labels.with_suffix(".aside"))  # as after an older download without instances_val2014.json
    try:
        edited = run_notebook("03_evaluate_clip.ipynb", out / "nb03-edited", source=out / "03_edited.ipynb", EVAL_SPLIT="val",
                              ARTIFACTS_DIR=params["ARTIFACTS_DIR"], TEXT_MODEL=params["TEXT_MODEL"], RUN_NAME="nb-baseline",
                              NUM_WORKERS=0)  # fmt: skip
        table_row = (r"\| this run \(nb-baseline\) \| val: \d+ SYNTHETIC images \(not COCO\); Recall@K by your edited cell "
                     r"recall-at-k \|( 100\.0 \|){6} 600\.0 \|")
        assert re.search(table_row, _text(edited))  # the synthetic data and the edited cell said in the row itself
        assert "Computed by your edited lab cell `recall-at-k` (03), not the notebook's" in _text(edited)
        record = json.loads((run / "eval_val.json").read_text())
        assert list(record["lab_code"]["edited"]) == ["03:recall-at-k"] and record["lab_code"]["digest"] != scored["lab_code"]["digest"]
        assert "Classification over COCO's categories: skipped. No categories_val2014.json" in _text(edited)  # and 03 went on
        assert "skipped" in record["classification"] and (run / "figures_val" / "retrieval_failures.png").exists()
    finally:
        labels.with_suffix(".aside").rename(labels)
        (run / "eval_val.json").unlink(missing_ok=True)
        (run / "eval_val.csv").unlink(missing_ok=True)


def _baseline_of_02(params, out):
    """The run notebook 02 trains in test_notebook_02_trains_and_then_skips (trained here when a test runs alone)."""
    run = Path(params["ARTIFACTS_DIR"]) / "runs" / "nb-baseline"
    if not (run / "metrics.json").exists():
        common = dict(ARTIFACTS_DIR=params["ARTIFACTS_DIR"], TEXT_MODEL=params["TEXT_MODEL"], RUN_NAME="nb-baseline", **TINY_TRAINING)
        run_notebook("02_train_clip.ipynb", out, LIVE_PLOT=False, **common)
    return run


def test_notebooks_04_and_05_ablation_and_report(nb01):
    _, params, out = nb01
    art = Path(params["ARTIFACTS_DIR"])
    _baseline_of_02(params, out)
    # Only the study's own settings and two overrides: the recipe (resnet18, random init, HIDDEN_DIM 64, LR 1e-3, 64 px,
    # the tiny text tower) must come from 02's baseline run. 04's old defaults (ResNet50, ImageNet weights) fail offline.
    # "mine" is the worked example of 04's cell tagged student-modification: it trains like a built-in
    common = dict(ARTIFACTS_DIR=params["ARTIFACTS_DIR"], VARIANTS=["head_ln", "mine"], SEEDS=[0], EPOCHS=1, MAX_STEPS_PER_EPOCH=3)
    (out / "nb04").mkdir()
    nb = run_notebook("04_ablation.ipynb", out / "nb04", NUM_WORKERS=0, **common)
    summary = json.loads((art / "ablation" / "ablation.json").read_text())
    assert set(summary["table"]) == {"baseline", "head_ln", "mine"}
    assert summary["variants"]["mine"]["builtin"] is False and "class ResidualHead(nn.Module):" in summary["variants"]["mine"]["code"]
    assert summary["base"] == {
        "run": "nb-baseline",
        "chosen_by": "the newest finished baseline run, trained by notebook 02; set BASE_RUN to pick another",
        "overrides": {
            "epochs": {"base": 2, "here": 1, "not_held_by": {}},  # held by every row: none reused otherwise
            "max_steps_per_epoch": {"base": None, "here": 3, "not_held_by": {}},
        },
        "synthetic": True,  # the generator's data: 04's table says so
    }
    for outcome in summary["runs"]:
        trained = json.loads((art / "runs" / outcome["run_name"] / "config.json").read_text())
        assert {k: trained[k] for k in ("image_backbone", "image_weights", "hidden_dim", "lr", "batch_size", "image_size")} == {
            "image_backbone": "resnet18", "image_weights": None, "hidden_dim": 64, "lr": 1e-3, "batch_size": 32, "image_size": 64,
        }  # fmt: skip
        assert trained["text_model"] == params["TEXT_MODEL"]
    assert "**Base settings** of every run below: run `nb-baseline`" in _text(nb)
    assert "| `EPOCHS` | 2 | 1 | every run |" in _text(nb) and "| `MAX_STEPS_PER_EPOCH` | None | 3 | every run |" in _text(nb)
    assert (art / "ablation" / "ablation_recall_delta.png").exists() and (art / "ablation" / "ablation.md").exists()
    assert re.search(r"\| (\*\*)?head_ln(\*\*)?( ★)? \|", _text(nb)) and "compared on the val split" in _text(nb)
    assert "| `bigbatch` | batch 256" in _text(nb)  # every flag's code change, shown from helpers/clip/variants.py
    assert "#### `head_ln`" in _text(nb) and "def head_ln(" in _text(nb) and "#### `mine`" in _text(nb)
    assert "`your cell.ResidualHead`" in _text(nb) and "0.5 * self.shortcut(features)" in _text(nb)  # the student's code, shown
    assert "| `mine` (yours) | head: the lab's MLP plus a linear shortcut" in _text(nb)
    assert "def max_hinge_loss(" not in _text(nb)  # the code of the variants that run, and only theirs
    assert _text(nb).rstrip().endswith(ablation.COMPARISON_QUESTIONS[-1])  # 04 ends with the handout's questions
    (out / "nb04b").mkdir()
    again = run_notebook("04_ablation.ipynb", out / "nb04b", NUM_WORKERS=0, **common)
    assert _text(again).count("already finished") == 3  # every run reused, none retrained
    assert json.loads((art / "ablation" / "ablation.json").read_text())["base"]["run"] == "nb-baseline"  # not 04's own baseline
    # one number changed in the student's cell: a new run of "mine" trains; the baseline and head_ln are reused
    changed = nbformat.read(ROOT / "04_ablation.ipynb", as_version=4)
    cell = next(c for c in changed.cells if "student-modification" in c.metadata.get("tags", []))
    assert "0.5 * self.shortcut" in cell.source
    cell.source = cell.source.replace("0.5 * self.shortcut", "0.25 * self.shortcut")
    nbformat.write(changed, out / "04_changed.ipynb")
    (out / "nb04c").mkdir()
    before = {o["variant"]: o["run_name"] for o in summary["runs"]}
    third = run_notebook("04_ablation.ipynb", out / "nb04c", source=out / "04_changed.ipynb", NUM_WORKERS=0, **common)
    after = {o["variant"]: o["run_name"] for o in json.loads((art / "ablation" / "ablation.json").read_text())["runs"]}
    assert _text(third).count("already finished") == 2 and after["mine"] != before["mine"]
    assert after["baseline"] == before["baseline"] and after["head_ln"] == before["head_ln"]
    assert (art / "runs" / before["mine"] / "best.pt").exists()  # the old run is kept under its own name
    assert "0.25 * self.shortcut" in json.loads((art / "runs" / after["mine"] / "metrics.json").read_text())["variant_sources"]["mine"]
    studies = ablation.kept_studies(art / "ablation")  # the edited modification made another study: the first one is kept
    first = json.loads((art / "ablation" / "studies" / studies[0] / "ablation.json").read_text())
    assert len(studies) == 2 and {o["variant"]: o["run_name"] for o in first["runs"]} == before

    (out / "nb05").mkdir()
    nb5 = run_notebook("05_report.ipynb", out / "nb05", ARTIFACTS_DIR=params["ARTIFACTS_DIR"])
    report = art / "report" / "report.md"
    text = report.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links and all((report.parent / link).exists() for link in links)
    assert "## 10. Ablation" in text and re.search(r"\| (\*\*)?head_ln(\*\*)?( ★)? \|", text)
    section10 = text.split("## 10. Ablation", 1)[1].split("\n## ", 1)[0]
    assert "| `head_ln` | head: Linear → LayerNorm" in section10 and "| `mine` (yours) |" in section10  # the variants run ...
    assert "class ResidualHead(nn.Module):" in section10 and "def head_ln(" in section10  # ... with their code
    assert "| `bigbatch` |" not in section10  # ... and only those
    assert "| `EPOCHS` | 2 | 1 |" in section10  # the study's overrides of the base run, beside its table
    assert "Your comparison: write it yourself" in section10 and all(q in section10 for q in ablation.COMPARISON_QUESTIONS)
    run = summary["runs"][0]["run_name"]
    ev = json.loads((art / "runs" / run / "eval_test.json").read_text())["metrics"]
    assert f"{100 * ev['i2t_R@1']:.1f}" in text
    assert "report: ARTIFACTS_DIR/report/report.md" in _text(nb5)


def test_notebook_04_says_which_rows_an_override_holds_for_and_reads_the_base_run_from_its_weights(nb01):
    """No silent result in 04: EPOCHS=1 over the 2-epoch baseline of 02 (the finished baseline is reused as it is), then
    the base run's config.json deleted, then edited by hand (WEIGHT_DECAY 0.01 -> 0.05)."""
    _, params, out = nb01
    art = Path(params["ARTIFACTS_DIR"])
    (out / "nb02d").mkdir()  # 02 as a student runs it: RUN_NAME=None, a name derived from the settings, 2 epochs
    run_notebook("02_train_clip.ipynb", out / "nb02d", ARTIFACTS_DIR=params["ARTIFACTS_DIR"], TEXT_MODEL=params["TEXT_MODEL"],
                 LIVE_PLOT=False, **TINY_TRAINING)  # fmt: skip
    base = max((art / "runs").glob("baseline-*/metrics.json"), key=lambda p: p.stat().st_mtime).parent
    try:
        study = dict(ARTIFACTS_DIR=params["ARTIFACTS_DIR"], VARIANTS=["head_ln"], SEEDS=[0], EPOCHS=1, NUM_WORKERS=0)
        (out / "nb04d").mkdir()
        nb = run_notebook("04_ablation.ipynb", out / "nb04d", **study)
        assert "| `EPOCHS` | 2 | 1 | not: baseline (2: reused) |" in _text(nb)  # never "every run, the baseline included"
        assert "| `EPOCHS` | 2 | 1 | not: baseline (2: reused) |" in (art / "ablation" / "ablation.md").read_text()
        (base / "config.json").unlink()
        (out / "nb04e").mkdir()
        nb = run_notebook("04_ablation.ipynb", out / "nb04e", **study)
        assert f"run `{base.name}`" in _text(nb) and "no finished baseline run" not in _text(nb)
        assert "config.json was missing or damaged: rewritten from best.pt" in _text(nb)
        edited = json.loads((base / "config.json").read_text())
        edited["weight_decay"] = 0.05
        (base / "config.json").write_text(json.dumps(edited))
        (out / "nb04f").mkdir()
        nb = run_notebook("04_ablation.ipynb", out / "nb04f", **study)
        assert "WEIGHT_DECAY: 0.05 in the file, 0.01 trained" in _text(nb) and "weight decay 0.01" in _text(nb)
        assert _text(nb).count("already finished") == 2  # the study trained nothing at the edited value
    finally:
        shutil.rmtree(base)  # the newest baseline run otherwise, for any test that runs 04 after this one
