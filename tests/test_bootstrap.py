"""The bootstrap cell, run as a student would meet it: simulated Colab and Kaggle, a local git repository
standing in for GitHub. Also: the badges and the clone URL come from one setting, and requirements.txt
never replaces Colab's torch, torchvision or ipywidgets (pip's own dry run, against the installed stack)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import ROOT, SLOWDOWN

import helpers

NOTEBOOKS = ("01_dataset_prep.ipynb", "02_train_clip.ipynb", "03_evaluate_clip.ipynb", "04_ablation.ipynb", "05_report.ipynb")
BOOTSTRAP = next(c.source for c in nbformat.read(ROOT / NOTEBOOKS[0], as_version=4).cells if c.cell_type == "code")

STAND_IN_COLAB = '''
class _Drive:
    @staticmethod
    def mount(path):
        raise RuntimeError("credential propagation was unsuccessful")  # what Colab raises when consent is declined
drive = _Drive()
'''


def _git_repo(root: Path, requirements: str = "pip>=1\n") -> Path:
    """A stand-in for the GitHub repository: helpers/ (the real bootstrap module) and requirements.txt, committed."""
    (root / "helpers").mkdir(parents=True)
    (root / "helpers" / "__init__.py").write_text('"""stand-in"""\n')
    (root / "helpers" / "bootstrap.py").write_text((ROOT / "helpers" / "bootstrap.py").read_text())
    (root / "requirements.txt").write_text(requirements)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "init"]):
        subprocess.run([*git, *cmd], cwd=root, check=True, capture_output=True)
    return root


def _run(tmp: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    cell = tmp / "bootstrap_cell.py"
    probe = "import helpers\nprint('IMPORTED', helpers.__file__)\nprint('NO_DRIVE', os.environ.get('CLIP_LAB_NO_DRIVE'))\n"
    cell.write_text(BOOTSTRAP + "\n" + probe)
    fake = tmp / "fake_modules" / "google" / "colab"
    fake.mkdir(parents=True, exist_ok=True)
    (fake.parent / "__init__.py").write_text("")
    (fake / "__init__.py").write_text(STAND_IN_COLAB)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("COLAB_", "KAGGLE_", "CLIP_LAB_"))}
    base["PYTHONPATH"] = str(tmp / "fake_modules")
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, str(cell)], cwd=cwd, env={**base, **env}, capture_output=True, text=True, timeout=300 * SLOWDOWN)


def test_simulated_colab_clones_once_installs_once_and_survives_declined_drive(tmp_path):
    repo = _git_repo(tmp_path / "github")
    content = tmp_path / "content"
    env = {"COLAB_RELEASE_TAG": "release-colab_20260801", "CLIP_LAB_HOME": str(content), "CLIP_LAB_REPO": str(repo)}
    first = _run(tmp_path, content, **env)
    assert first.returncode == 0, first.stderr[-2000:]
    clone = content / "clip-coco-lab"
    assert f"helpers from {clone}" in first.stdout and f"IMPORTED {clone / 'helpers' / '__init__.py'}" in first.stdout
    assert (clone / ".clip-lab-installed").exists()
    assert "WARNING: Google Drive not mounted" in first.stderr and "VANISH" in first.stderr
    assert "NO_DRIVE RuntimeError: credential propagation was unsuccessful" in first.stdout  # helpers.core.env falls back to local disk
    # a second run does nothing slow: no clone, no pip (an uninstallable requirement would fail if pip ran)
    (clone / "requirements.txt").write_text("this-package-does-not-exist-anywhere==0.0.1\n")
    second = _run(tmp_path, content, **env)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"helpers from {clone}" in second.stdout


def test_an_interrupted_clone_is_replaced(tmp_path):
    repo = _git_repo(tmp_path / "github")
    content = tmp_path / "content"
    (content / "clip-coco-lab" / ".git").mkdir(parents=True)  # what a disconnect during `git clone` leaves
    out = _run(tmp_path, content, COLAB_RELEASE_TAG="x", CLIP_LAB_HOME=str(content), CLIP_LAB_REPO=str(repo))
    assert out.returncode == 0, out.stderr[-2000:]
    assert (content / "clip-coco-lab" / "helpers" / "__init__.py").exists()


def test_a_failing_clone_names_the_url_and_how_to_set_it(tmp_path):
    content = tmp_path / "content"
    missing = tmp_path / "no-such-repository"
    out = _run(tmp_path, content, COLAB_RELEASE_TAG="x", CLIP_LAB_HOME=str(content), CLIP_LAB_REPO=str(missing))
    assert out.returncode != 0
    assert f"Could not clone {missing}" in out.stderr and "os.environ['CLIP_LAB_REPO']" in out.stderr


def test_simulated_kaggle_clones_into_working(tmp_path):
    repo = _git_repo(tmp_path / "github")
    working = tmp_path / "kaggle" / "working"
    out = _run(tmp_path, working, KAGGLE_KERNEL_RUN_TYPE="Interactive", CLIP_LAB_HOME=str(working), CLIP_LAB_REPO=str(repo))
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"helpers from {working / 'clip-coco-lab'}" in out.stdout and "Google Drive" not in out.stderr


def test_locally_the_message_is_true_and_cloning_works_when_asked(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    out = _run(tmp_path, elsewhere)
    assert out.returncode != 0 and "Cannot find the helpers/ package" in out.stderr and "set CLIP_LAB_REPO" in out.stderr
    repo = _git_repo(tmp_path / "github")
    cloned = _run(tmp_path, elsewhere, CLIP_LAB_REPO=str(repo))
    assert cloned.returncode == 0 and f"helpers from {elsewhere / 'clip-coco-lab'}" in cloned.stdout
    assert not (elsewhere / "clip-coco-lab" / ".clip-lab-installed").exists()  # locally the environment is yours: no pip


def test_the_bootstrap_refuses_to_replace_the_platforms_packages(tmp_path):
    repo = _git_repo(tmp_path / "github", requirements="ipywidgets<7.7\n")  # no installed stack satisfies it
    content = tmp_path / "content"
    out = _run(tmp_path, content, COLAB_RELEASE_TAG="x", CLIP_LAB_HOME=str(content), CLIP_LAB_REPO=str(repo))
    assert out.returncode != 0
    assert re.search(r"would replace this platform's ipywidgets \(with 7\.6\.\d+\)", out.stderr) and "Nothing was installed" in out.stderr
    assert not (content / "clip-coco-lab" / ".clip-lab-installed").exists()


def test_requirements_never_replace_the_installed_torch_torchvision_or_ipywidgets(tmp_path):
    """In CI's second pass this environment *is* Colab's pinned stack (requirements-colab.txt)."""
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "-q", "--report", str(report), "-r", str(ROOT / "requirements.txt")]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300 * SLOWDOWN)
    planned = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert not {"torch", "torchvision", "ipywidgets"} & set(planned), planned


def test_badges_and_clone_url_come_from_one_repository():
    url = f"https://github.com/{helpers.REPOSITORY}.git"
    assert f'os.environ.get("CLIP_LAB_REPO", "{url}")' in BOOTSTRAP
    readme = (ROOT / "README.md").read_text()
    for name in NOTEBOOKS:
        badge = f"(https://colab.research.google.com/github/{helpers.REPOSITORY}/blob/main/{name})"
        assert badge in readme, name
        first = nbformat.read(ROOT / name, as_version=4).cells[0]
        assert first.cell_type == "markdown" and badge in first.source, name
    assert len(re.findall(r"colab\.research\.google\.com/github/([^/]+/[^/]+)/", readme)) == len(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_notebook_carries_the_same_bootstrap(name):
    assert next(c.source for c in nbformat.read(ROOT / name, as_version=4).cells if c.cell_type == "code") == BOOTSTRAP


def test_the_bootstrap_is_a_collapsed_form_whose_logic_lives_in_a_module():
    cells = [next(c for c in nbformat.read(ROOT / n, as_version=4).cells if c.cell_type == "code") for n in NOTEBOOKS]
    for cell in cells:
        assert cell.source.startswith("# @title ") and '{ display-mode: "form" }' in cell.source.splitlines()[0]
        assert cell.metadata.get("cellView") == "form"  # Colab: collapsed, only the title shows
        assert cell.metadata.get("jupyter", {}).get("source_hidden") is True  # JupyterLab: the input collapsed
    assert "from helpers import bootstrap" in BOOTSTRAP and "bootstrap.setup(project_dir)" in BOOTSTRAP
    assert "pip" not in BOOTSTRAP  # installing (and refusing to replace the platform's torch) is helpers/bootstrap.py's
    assert len(BOOTSTRAP.splitlines()) <= 12  # the rest is helpers/bootstrap.py's


def test_the_bootstrap_module_needs_only_the_standard_library():
    """It runs before requirements.txt is installed: every import must be in the standard library."""
    import ast

    tree = ast.parse((ROOT / "helpers" / "bootstrap.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported - {"google"} <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)  # google.colab: Colab's own


def test_the_bootstrap_defines_no_uppercase_globals():
    """config.from_notebook reads every UPPERCASE global as a parameter: the bootstrap must add none."""
    import ast

    assigns = [node for node in ast.walk(ast.parse(BOOTSTRAP)) if isinstance(node, ast.Assign)]
    names = {t.id for node in assigns for t in node.targets if isinstance(t, ast.Name)}
    assert not [n for n in names if n.isupper()], names
