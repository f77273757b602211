"""The lab's own code lives in the notebooks' cells tagged ``lab``, and that text is what runs everywhere.

Checked here: each definition the handout asks for is in a lab cell of its notebook (and never rendered as a copy);
the cells reach no part of helpers/; a kernel's edited cell is taken as run; the run identity follows any edit; a
notebook's constants are code, not settings; and ``python -m helpers.train`` executes the notebook's cell, not a copy
(a project whose 02 holds a doubled loss trains with twice the loss)."""

from __future__ import annotations

import ast
import json
import linecache
import os
import shutil
import subprocess
import sys

import nbformat
import pytest
from conftest import ROOT, SLOWDOWN

from helpers.clip.identity import run_identity
from helpers.core import config
from helpers.core.lab import LAB_TAG, LabCell, LabCode

HANDOUT = {  # notebook -> what its sections ask the student to write (issue 33, point 1)
    "01_dataset_prep.ipynb": ("encode_text", "CocoCacheDataset"),
    "02_train_clip.ipynb": ("projection_head", "ClipImageModel", "clip_loss", "training_step"),
    "03_evaluate_clip.ipynb": ("retrieval_ranks", "recall_at_k", "results_csv"),
    "04_ablation.ipynb": ("head_ln", "CaptionSafeAugment"),  # the default study's two handout modifications
}
ALLOWED_IMPORTS = {"torch", "torchvision", "transformers", "tqdm", *sys.stdlib_module_names}


def _lab_cells(name: str) -> list[nbformat.NotebookNode]:
    return [c for c in nbformat.read(ROOT / name, as_version=4).cells if c.cell_type == "code" and LAB_TAG in c.metadata.get("tags", [])]


@pytest.mark.parametrize("name", sorted(HANDOUT))
def test_each_handout_definition_is_a_lab_cell_of_its_notebook_and_never_a_rendered_copy(name):
    defined = {n.name for c in _lab_cells(name) for n in ast.parse(c.source).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert set(HANDOUT[name]) <= defined, set(HANDOUT[name]) - defined
    for notebook in ROOT.glob("0*.ipynb"):
        for cell in nbformat.read(notebook, as_version=4).cells:
            if cell.cell_type == "code" and "show_source" in cell.source:
                assert not any(f"{n})" in cell.source or f"{n}." in cell.source for n in HANDOUT[name]), (notebook.name, cell.source)


def test_lab_cells_import_only_the_standard_library_torch_torchvision_and_transformers():
    for name in ("01_dataset_prep.ipynb", "02_train_clip.ipynb", "03_evaluate_clip.ipynb", "04_ablation.ipynb"):
        for cell in _lab_cells(name):
            for node in ast.walk(ast.parse(cell.source)):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                    assert all(m.split(".")[0] in ALLOWED_IMPORTS for m in modules), (name, cell.id, modules)


def test_the_shipped_code_is_the_notebooks_text_and_runs():
    lab = LabCode.shipped()
    on_disk = {f"02:{c.id}": c.source for c in _lab_cells("02_train_clip.ipynb")}
    assert {k: v for k, v in lab.sources().items() if k.startswith("02:")} == on_disk
    assert lab.clip_loss.__code__.co_filename.startswith("<lab cell 02:clip-loss")  # executed from the notebook's text
    with pytest.raises(Exception, match="no lab cell defines"):
        _ = lab.not_a_lab_function


def _as_a_kernel_ran(source: str, filename: str) -> dict:
    """What IPython does with a cell: its text in linecache under a file name of its own, executed in the namespace."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict = {}
    exec(compile(source, filename, "exec"), namespace)
    return namespace


def test_a_kernels_edited_cell_is_taken_as_run_and_names_a_new_run():
    shipped = LabCode.shipped()
    cell = shipped.cell("02:clip-loss")
    edited = cell.source.replace("return 0.5 * (", "return 2 * 0.5 * (") + "\nLOSS_FACTOR = 2  # a constant of the student's\n"
    namespace = _as_a_kernel_ran(shipped.cell("02:projection-head").source, "/tmp/ipykernel_1/111.py")
    namespace.update(_as_a_kernel_ran(edited, "/tmp/ipykernel_1/222.py"), EPOCHS=3)  # the model cell: not run in this kernel
    lab = LabCode.from_kernel(namespace)
    edited = edited.rstrip("\n")  # a cell's text in one spelling, without a final newline (the .ipynb's)
    assert lab.cell("02:clip-loss").source == edited and lab.edited() == {"02:clip-loss": edited}
    assert lab.cell("02:training-step").source == shipped.cell("02:training-step").source  # not run here: the notebook's
    cfg = config.from_notebook(namespace)  # LOSS_FACTOR and the cells' F, MAX_LOGIT_SCALE are code, not unknown settings
    assert cfg.epochs == 3 and cfg.lab.edited() == {"02:clip-loss": edited}
    assert run_identity(cfg)["lab_code"] != run_identity(config.from_params(EPOCHS=3))["lab_code"]
    import torch

    img = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    assert cfg.lab.clip_loss(img, img, 10.0).item() == pytest.approx(2 * shipped.clip_loss(img, img, 10.0).item(), rel=1e-6)


def test_a_comment_is_a_new_identity_and_a_stored_record_rebuilds_its_own_cells():
    shipped = LabCode.shipped()
    commented = LabCode(LabCell(c.notebook, c.cell_id, c.source + "\n# my note") if c.key == "02:training-step" else c
                        for c in shipped.cells)  # fmt: skip
    assert commented.digest() != shipped.digest() and commented.digest(("03",)) == shipped.digest(("03",))
    again = LabCode.from_record(commented.sources())
    assert again.digest() == commented.digest() and again.cell("03:recall-at-k").source == shipped.cell("03:recall-at-k").source


def test_python_m_helpers_train_runs_the_notebooks_cell_not_a_copy(tmp_path, trained):
    """A copy of the project whose 02 notebook doubles the loss: ``python -m helpers.train`` there logs twice the first
    loss of the same settings trained here (the session's shared run: the same seed, weights and first batch), and its
    run records the cell as it ran."""
    cfg, paths, result = trained
    project = tmp_path / "project"
    shutil.copytree(ROOT / "helpers", project / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    for notebook in ROOT.glob("0*.ipynb"):
        shutil.copy(notebook, project / notebook.name)
    nb = nbformat.read(project / "02_train_clip.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.get("id") == "clip-loss")
    cell.source = cell.source.replace("return 0.5 * (", "return 2 * 0.5 * (")
    nbformat.write(nb, project / "02_train_clip.ipynb")

    run_cfg = cfg.replace(epochs=1, max_steps_per_epoch=2, run_name="lab-copy")
    cmd = [sys.executable, "-m", "helpers.train", "--config", str(run_cfg.save(tmp_path / "copy.json")), "--no-progress"]
    out = subprocess.run(cmd, cwd=project, env={**os.environ, "PYTHONPATH": str(project)}, capture_output=True, text=True,
                         timeout=600 * SLOWDOWN)  # fmt: skip
    run = paths.runs_dir / "lab-copy"
    try:
        assert out.returncode == 0, out.stderr[-3000:]
        assert "return 2 * 0.5 * (" in json.loads((run / "metrics.json").read_text())["lab_code"]["02:clip-loss"]  # as it ran
        assert "return 2 * 0.5 * (" not in json.loads(result.run.metrics.read_text())["lab_code"]["02:clip-loss"]
        first = [json.loads((r / "history.json").read_text())["steps"][0]["loss"] for r in (result.run.path, run)]
        assert first[1] == pytest.approx(2 * first[0], rel=1e-4)
    finally:  # the shared workspace keeps only its own runs (other tests pick the newest finished one)
        shutil.rmtree(run, ignore_errors=True)


def test_the_core_imports_nothing_above_it_by_any_route_and_holds_no_variant_registry():
    """helpers/core: no import of another helpers folder (relative or absolute), no importlib or __import__, no register
    of variant records; importing every core module loads nothing of helpers above it."""
    for path in sorted((ROOT / "helpers" / "core").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1 and not (node.module or "").startswith("helpers."), (path.name, node.module)
                assert node.module != "importlib", path.name
            if isinstance(node, ast.Import):  # importlib.metadata (versions of installed packages) imports nothing
                assert not any(a.name.startswith("helpers") or a.name == "importlib" for a in node.names), path.name
            if isinstance(node, ast.Name):
                assert node.id not in ("__import__", "import_module"), path.name
            if isinstance(node, ast.FunctionDef):
                assert node.name not in ("register", "unregister"), path.name
    modules = [f"helpers.core.{p.stem}" for p in sorted((ROOT / "helpers" / "core").glob("*.py")) if p.stem != "__init__"]
    above = "sorted(m for m in sys.modules if m.startswith('helpers.') and not m.startswith('helpers.core'))"
    probe = f"import sys, {', '.join(modules)}; print({above})"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300 * SLOWDOWN)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr[-2000:]


def _with_edit(key: str, old: str, new: str) -> LabCode:
    """The shipped lab code with one cell's ``old`` text replaced by ``new`` (as a student's edit in a kernel)."""
    shipped = LabCode.shipped()
    cell = shipped.cell(key)
    assert old in cell.source, (key, old)
    return LabCode(c if c is not cell else LabCell(c.notebook, c.cell_id, c.source.replace(old, new, 1)) for c in shipped.cells)


STEP_SLIPS = {  # an edit of 02's training-step cell, and the message that must name it (not a bare torch traceback)
    "raises": ("features = model(images)  #", "features = model(images.t())  #",
               r"Your code raised RuntimeError on the first training step, in `training_step`, line \d+ of the lab cell "
               r"`training-step` of 02_train_clip\.ipynb"),
    "nan": ("set_to_none=True)\n    return value, features", "set_to_none=True)\n    return value * float('nan'), features",
            r"The training step \(notebook 02's cell `training-step`, edited\) returned a loss of nan on the first step"),
    "returns": ("set_to_none=True)\n    return value, features", "set_to_none=True)\n    return value",
                r"The training step \(notebook 02's cell `training-step`\) returned a float: the trainer needs"),
}  # fmt: skip


@pytest.mark.parametrize("slip", sorted(STEP_SLIPS))
def test_a_slip_in_02s_step_cell_is_named_with_its_cell_and_line(workspace, slip):
    from helpers.core.config import with_lab
    from helpers.core.lab import YourCodeError
    from helpers.training import train

    cfg, paths = workspace
    old, new, message = STEP_SLIPS[slip]
    edited = _with_edit("02:training-step", old, new)
    try:
        with pytest.raises(YourCodeError, match=message):
            train.train(with_lab(cfg.replace(epochs=1, max_steps_per_epoch=1, run_name=f"slip-{slip}"), edited), paths,
                        progress=False, log=lambda m: None)  # fmt: skip
    finally:  # the shared workspace keeps only its own runs
        shutil.rmtree(paths.runs_dir / f"slip-{slip}", ignore_errors=True)


R_AT_K = 'out[f"{name}_R@{k}"] = (ranks < k).float().mean().item()'
EVAL_SLIPS = {  # an edit of 03's recall-at-k or results-csv cell, and the message that must name it (never a table of nonsense)
    "percent": (R_AT_K, R_AT_K.replace("= (", "= 100 * ("),
                r"Your `recall_at_k` \(the lab cell `recall-at-k` of 03_evaluate_clip\.ipynb\) returned i2t_R@1 = [\d.]+; "
                r"Recall@K is a fraction"),
    "no rsum": ('    out["rsum"] = ', '    out["total"] = ', r"returned a dict without rsum"),
    "wrong rsum": ('for d in ("i2t", "t2i") for k in ks)', 'for d in ("i2t",) for k in ks)',
                   r"rsum [\d.]+; it is the sum of the Recall@K both ways"),
    "swapped": ("    return i2t, t2i.cpu()", "    return t2i.cpu(), i2t",
                r"Your `retrieval_ranks` \(the lab cell `recall-at-k`.*\) returned image->text ranks of shape \(\d+,\); "
                r"the kit needs one rank per query"),
    "raises": ("    out: dict[str, float] = {}", "    out: dict[str, float] = {}\n    ks = ks / 0",
               r"Your code raised TypeError in `recall_at_k`, in `recall_at_k`, line \d+ of the lab cell `recall-at-k`"),
    "csv bytes": ("    return buf.getvalue()", "    return buf.getvalue().encode()",
                  r"Your `results_csv` \(the lab cell `results-csv` of 03_evaluate_clip\.ipynb\) returned a bytes; "
                  r"the kit writes the text"),
}  # fmt: skip


@pytest.mark.parametrize("slip", sorted(EVAL_SLIPS))
def test_a_slip_in_03s_cells_is_named_and_writes_no_result(trained, slip):
    """A student's edit of 03's Recall@K or CSV cell that returns what no table can hold (percent for a fraction, a missing
    or wrong rsum, swapped ranks, bytes) or raises: 03 names the cell and what came back, and writes no results file."""
    from helpers.core.config import with_lab
    from helpers.core.lab import YourCodeError
    from helpers.evaluation import evaluate

    cfg, paths, result = trained
    old, new, message = EVAL_SLIPS[slip]
    edited = _with_edit(next(c.key for c in LabCode.shipped().cells if c.notebook == "03" and old in c.source), old, new)
    before = {p.name: p.stat().st_mtime_ns for p in result.run_dir.iterdir()}
    with pytest.raises(YourCodeError, match=message):
        evaluate.evaluate(with_lab(cfg.replace(eval_split="val"), edited), paths, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in result.run_dir.iterdir()} == before  # no eval_val.json/.csv of the slip


ENCODING_SLIPS = {  # an edit of 01's caption-encoding cell
    "not normalised": ("emb = torch.nn.functional.normalize(emb, dim=-1)", "emb = 2 * emb",
                       r"Your `encode_text` \(the lab cell `caption-encoding` of 01_dataset_prep\.ipynb\) returned embeddings of length"),
    "half width": ("\n    return out", "\n    return out[:, : tower.dim // 2]",
                   r"returned a tensor of shape \(3, \d+\) \(torch.float32\); the kit needs one floating-point embedding per text"),
}  # fmt: skip


@pytest.mark.parametrize("slip", sorted(ENCODING_SLIPS))
def test_a_slip_in_01s_caption_encoding_is_named(tiny_tower, slip):
    """The caption encoding feeds the caches, 03's prompts and live queries and Flickr30k: what it returns is checked
    (shape, finite, unit length) wherever the kit calls it."""
    from helpers.core.lab import YourCodeError
    from helpers.data.text_tower import encode_texts, load_text_tower

    old, new, message = ENCODING_SLIPS[slip]
    edited = _with_edit("01:caption-encoding", old, new)
    tower = load_text_tower(str(tiny_tower), "cpu")
    texts = ["a red circle", "a blue square", "two green triangles"]
    assert encode_texts(LabCode.shipped(), texts, tower).shape == (3, tower.dim)  # the shipped cell passes its own check
    with pytest.raises(YourCodeError, match=message):
        encode_texts(edited, texts, tower)


def test_a_lab_function_defined_again_in_a_cell_of_its_own_is_refused_not_mixed():
    """recall_at_k redefined in a scratch cell after 03's lab cell ran: the run would record the lab cell's text and
    score with a mix (or the reverse), so the kernel's cells are refused with the cell to edit instead."""
    from helpers.core.lab import LabCodeError

    shipped = LabCode.shipped()
    lab_cell = shipped.cell("03:recall-at-k").source
    namespace = _as_a_kernel_ran(lab_cell, "/tmp/ipykernel_2/301.py")
    scratch = "def recall_at_k(i2t_ranks, t2i_ranks, ks=(1, 5, 10)):\n    return {}\n"
    namespace.update(_as_a_kernel_ran(scratch, "/tmp/ipykernel_2/302.py"))
    with pytest.raises(LabCodeError, match=r"the lab cell `recall-at-k` of 03_evaluate_clip\.ipynb defines `retrieval_ranks`, "
                                           r"`recall_at_k`, but this kernel has .* from different cells"):  # fmt: skip
        LabCode.from_kernel(namespace)
    alone = _as_a_kernel_ran(scratch, "/tmp/ipykernel_2/303.py")  # a restarted kernel that ran only the scratch cell
    with pytest.raises(LabCodeError, match=r"The cell this kernel ran for `recall_at_k` does not define `retrieval_ranks`"):
        LabCode.from_kernel(alone)
    edited = lab_cell.replace("ks=(1, 5, 10)", "ks=(1, 5, 10, 50)")  # the lab cell itself edited and run: taken as run
    assert LabCode.from_kernel(_as_a_kernel_ran(edited, "/tmp/ipykernel_2/304.py")).edited(("03",)) == {"03:recall-at-k": edited}


ITEM = "return self.image(image_index), self.embeddings[row].float(),"
DATASET_SLIPS = {  # an edit of 01's dataset cell, recorded by 01, and the message 02 gives before any step
    "swapped": (ITEM, "return self.embeddings[row].float(), self.image(image_index),",
                r"Your `CocoCacheDataset` \(the lab cell `dataset` of 01_dataset_prep\.ipynb\) returned, for its first item, a tensor "
                r"of shape \(\d+,\) \(torch\.float32\) as the image"),
    "narrow": ("self.embeddings[row].float(),", "self.embeddings[row].float()[:8],",
               r"a tensor of shape \(8,\) \(torch\.float32\) as the caption"),
    "raises": ("    def __getitem__(self, index):\n", "    def __getitem__(self, index):\n        index = index + len(self)\n",
               r"Your code raised IndexError reading the Dataset's first item, in `caption_row`, line \d+ of the lab cell `dataset`"),
}  # fmt: skip


def _private_artifacts(prepared, tmp_path):
    from helpers.core import env

    art = tmp_path / "art"
    shutil.copytree(prepared["paths"].artifacts_dir, art, ignore=shutil.ignore_patterns("local_cache"))
    cfg = prepared["cfg"].replace(artifacts_dir=str(art), cache_dir=str(tmp_path / "local_cache"))
    return cfg, env.resolve_paths(cfg, environment="local")


def test_an_edit_of_01s_dataset_cell_reaches_training_without_re_encoding(prepared, tmp_path, capsys):
    """The caption caches record 01's Dataset cell; 01 run again with only that cell edited once said "up to date" and
    kept the old cell, so 02 trained with the old Dataset and named the run by it. Now 01 records the edit (the embeddings
    stay as they were) and the configured run is a new one."""
    import torch

    from helpers.core.config import with_lab
    from helpers.data import prepare
    from helpers.data.dataset import with_data_code
    from helpers.store.runs import RunDir

    cfg, paths = _private_artifacts(prepared, tmp_path)
    before = torch.load(paths.text_embeds_path("train"), weights_only=True)
    old_run = RunDir.for_config(paths, cfg).name
    edited = _with_edit("01:dataset", "    def set_epoch(self, epoch):", "    def set_epoch(self, epoch):  # mine")
    capsys.readouterr()
    prepare.cache_captions(with_lab(cfg, edited), paths, prepared["data"], prepared["splits"], device="cpu", progress=False)
    assert "train_text_embeds.pt: the dataset cell changed: recorded beside the embeddings" in capsys.readouterr().out
    after = torch.load(paths.text_embeds_path("train"), weights_only=True)
    assert torch.equal(after["embeddings"], before["embeddings"]) and after["lab_code"]["01:dataset"] == edited.cell("01:dataset").source
    assert with_data_code(cfg, paths).lab.cell("01:dataset").source == edited.cell("01:dataset").source  # what 02 trains with
    assert RunDir.for_config(paths, cfg).name != old_run  # another Dataset: another run


@pytest.mark.parametrize("slip", sorted(DATASET_SLIPS))
def test_a_slip_in_01s_dataset_cell_is_named_before_the_first_step(prepared, tmp_path, slip):
    from helpers.core.config import with_lab
    from helpers.core.lab import YourCodeError
    from helpers.data import prepare
    from helpers.training import train

    cfg, paths = _private_artifacts(prepared, tmp_path)
    old, new, message = DATASET_SLIPS[slip]
    edited = with_lab(cfg, _with_edit("01:dataset", old, new))
    prepare.cache_captions(edited, paths, prepared["data"], prepared["splits"], device="cpu", progress=False)  # 01 records it
    run = cfg.replace(epochs=1, max_steps_per_epoch=1, image_backbone="resnet18", image_weights=None, batch_size=8, num_workers=0)
    with pytest.raises(YourCodeError, match=message):
        train.train(run, paths, progress=False, log=lambda m: None)
