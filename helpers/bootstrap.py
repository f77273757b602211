"""What the notebooks' first cell does once it has found (or cloned) the repository: the rest of the setup.

Why a module: the first cell of every notebook is a collapsed Colab form of twelve lines, and a student should meet
the lab, not a page of setup, when they open it. The cell itself only finds ``helpers/`` beside the notebook (a
project folder copied to Drive is used as is), or clones the repository on Colab and Kaggle; everything after that
(mounting Drive, installing the requirements) lives here, read, tested and changed once instead of in five copies.

Standard library only: this runs before ``requirements.txt`` is installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

INSTALLED_MARK = ".clip-lab-installed"  # in the clone: requirements.txt was installed in this session's environment
PLATFORM_PACKAGES = ("torch", "torchvision", "ipywidgets")  # Colab's builds match its CUDA and its widget frontend


def hosted() -> bool:
    """Colab or Kaggle: a fresh environment per session, where the kit installs its own requirements."""
    return "COLAB_RELEASE_TAG" in os.environ or "KAGGLE_KERNEL_RUN_TYPE" in os.environ


def setup(project_dir: str | os.PathLike) -> None:
    """Mount Drive in Colab, install ``requirements.txt`` once per hosted session (never replacing the platform's
    packages), put the project on ``sys.path`` and say where ``helpers`` comes from. Locally the environment is the
    student's: nothing is installed."""
    project_dir = Path(project_dir)
    mount_drive()
    if hosted() and not (project_dir / INSTALLED_MARK).exists():  # once per session: a second run does nothing slow
        install_requirements(project_dir / "requirements.txt")
        (project_dir / INSTALLED_MARK).touch()
    if str(project_dir) not in sys.path:
        sys.path.insert(0, str(project_dir))
    # returns nothing: the cell's last line must not echo a value. A clone elsewhere is named; the usual case is one word
    print("helpers beside this notebook" if project_dir.absolute() == Path.cwd().absolute() else f"helpers from {project_dir}")


def mount_drive() -> None:
    """In Colab, mount Google Drive at /content/drive (the artifacts live in MyDrive/clip_coco). Consent declined: the
    reason goes into ``CLIP_LAB_NO_DRIVE``, and helpers.core.env keeps the artifacts on local disk and says so."""
    if "COLAB_RELEASE_TAG" not in os.environ or Path("/content/drive/MyDrive").exists() or os.environ.get("CLIP_LAB_NO_DRIVE"):
        return
    try:
        from google.colab import drive  # only in Colab

        drive.mount("/content/drive")
    except Exception as exc:  # consent declined, or no Drive: keep going on local disk, loudly
        os.environ["CLIP_LAB_NO_DRIVE"] = f"{type(exc).__name__}: {exc}"
        print(f"WARNING: Google Drive not mounted ({exc}): artifacts will VANISH when this session ends.", file=sys.stderr)


def install_requirements(requirements: Path) -> None:
    """``pip install -r requirements``, after a dry run proves it replaces none of :data:`PLATFORM_PACKAGES`."""
    report = Path(tempfile.mkdtemp()) / "pip-report.json"
    pip = [sys.executable, "-m", "pip", "install", "-q", "-r", str(requirements)]
    subprocess.run([*pip, "--dry-run", "--report", str(report)], check=True)
    planned = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in json.loads(report.read_text())["install"]}
    replaced = {name: planned[name] for name in PLATFORM_PACKAGES if name in planned}
    if replaced:
        raise RuntimeError(
            f"Installing requirements.txt would replace this platform's {', '.join(f'{n} (with {v})' for n, v in replaced.items())}. "
            "Colab's own builds match its CUDA and its widget frontend; a replacement breaks them. Nothing was installed: "
            "fix the version bounds in requirements.txt."
        )
    subprocess.run(pip, check=True)
