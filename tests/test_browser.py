"""Notebook 03's explorer in a real browser: JupyterLab, headless Chromium (Debian's package), a live kernel.

The widget callbacks are tested without a browser elsewhere (tests/test_evaluate.py). Here the
whole chain runs as a student sees it: notebook 03 with its parameters injected, every cell run
by JupyterLab, then a query typed into the text box and the top-k slider moved, and the result
grid must change each time. Skipped, with the reason, where Chromium, JupyterLab or Playwright is
missing; ``.ci/run`` installs all three, so CI runs it on both stacks.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [  # the machine's network is closed: no background connections, no sandbox as root
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _missing() -> str | None:
    if CHROMIUM is None:
        return "no Chromium (Debian: apt-get install chromium; .ci/run installs it)"
    for module, package in (("playwright", "playwright"), ("jupyterlab", "jupyterlab")):
        try:
            __import__(module)
        except ImportError:
            return f"no {package} (pip install {package}; .ci/run installs it)"
    return None


REQUIRED = bool(os.environ.get("CLIP_LAB_REQUIRE_BROWSER"))  # set by .ci/run: there a missing piece fails the test
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_missing() is not None and not REQUIRED, reason=_missing() or "")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """``jupyter lab`` on 127.0.0.1 serving ``root``, with the app object exposed to the page's scripts."""

    def __init__(self, root: Path, log: Path):
        self.port, self.token = _free_port(), "browser-test-token"
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={self.port}", "--ip=127.0.0.1",
            f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={self.token}", "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly", *(["--allow-root"] if os.geteuid() == 0 else []),
        ]  # fmt: skip
        env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".jupyter-config"), "JUPYTER_RUNTIME_DIR": str(root / ".jupyter-runtime"),
               "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
        self.log = log.open("w")
        self.proc = subprocess.Popen(args, cwd=root, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def __enter__(self) -> JupyterLab:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2)
                return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"JupyterLab did not start: see {self.log.name}")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


KERNEL_IDLE = """() => {
    const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const kernel = panel && panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
    return !!kernel && kernel.status === 'idle';
}"""


def _grid_src(page) -> str:
    """The result grid: the first image inside the explorer's first Output widget (a matplotlib PNG)."""
    return page.locator(".widget-output img, .jupyter-widgets-output-area img").first.get_attribute("src") or ""


def test_explorer_in_jupyterlab_answers_a_typed_query_and_the_slider(trained, tiny_tower, tmp_path):
    if _missing():
        pytest.fail(f"CLIP_LAB_REQUIRE_BROWSER is set, but there is {_missing()}")
    from playwright.sync_api import sync_playwright

    _, paths, _ = trained
    art = tmp_path / "art"  # a copy (hard links): notebook 03 writes its results into the run folder
    shutil.copytree(paths.artifacts_dir, art, copy_function=os.link)
    work = tmp_path / "lab"
    work.mkdir()
    (work / "helpers").symlink_to(ROOT / "helpers")  # the bootstrap cell finds helpers/ next to the notebook
    parameters = dict(
        ARTIFACTS_DIR=str(art), TEXT_MODEL=str(tiny_tower), RUN_NAME="shared", QUERIES=["a red circle"], NUM_WORKERS=0, INTERACTIVE=True
    )
    pm.execute_notebook(str(ROOT / "03_evaluate_clip.ipynb"), str(work / "explorer.ipynb"), parameters=parameters, prepare_only=True)

    with JupyterLab(work, tmp_path / "jupyterlab.log") as lab, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{lab.url}/lab/tree/explorer.ipynb?token={lab.token}")
        page.wait_for_function(KERNEL_IDLE, timeout=120_000)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        query = page.locator(".widget-text input").first
        query.wait_for(state="visible", timeout=300_000)
        page.locator(".widget-output img, .jupyter-widgets-output-area img").first.wait_for(timeout=120_000)
        first = _grid_src(page)

        query.fill("a blue square on the left")
        query.press("Enter")  # continuous_update=False: the value is sent on Enter
        page.wait_for_function(
            "(old) => { const img = document.querySelector('.widget-output img, .jupyter-widgets-output-area img'); "
            "return !!img && img.getAttribute('src') !== old; }",
            arg=first,
            timeout=60_000,
        )
        after_query = _grid_src(page)

        readout = page.locator(".widget-slider .widget-readout").first  # the slider's editable value
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type("2")
        page.keyboard.press("Enter")
        page.wait_for_function(
            "(old) => { const img = document.querySelector('.widget-output img, .jupyter-widgets-output-area img'); "
            "return !!img && img.getAttribute('src') !== old; }",
            arg=after_query,
            timeout=60_000,
        )
        final = _grid_src(page)
        shown_k = readout.inner_text().strip()
        page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
        browser.close()
    assert len({first, after_query, final}) == 3 and all(src.startswith("data:image/png") for src in (first, after_query, final))
    assert shown_k == "2"


def test_the_report_preview_of_notebook_05_shows_every_figure(trained, tmp_path):
    """Notebook 05 executed, rendered to HTML as nbconvert does, opened in Chromium: every figure has loaded."""
    if _missing():
        pytest.fail(f"CLIP_LAB_REQUIRE_BROWSER is set, but there is {_missing()}")
    import nbformat
    from nbconvert import HTMLExporter
    from playwright.sync_api import sync_playwright

    from helpers.core import figures
    from helpers.evaluation import evaluate, qualitative

    cfg, paths, _ = trained
    art = tmp_path / "art"
    shutil.copytree(paths.artifacts_dir, art, copy_function=os.link)
    cfg = cfg.replace(artifacts_dir=str(art), run_name="shared", eval_split="test")
    from helpers.core import env

    result = evaluate.evaluate(cfg, env.resolve_paths(cfg, environment="local"), device="cpu", progress=False)
    index = qualitative.RetrievalIndex.from_eval(result, cfg.text_model)
    figures.save_figure(qualitative.query_grid(index, ["a red circle"], k=3), result.data.run.figures("test") / "text_queries.png")
    executed = tmp_path / "05.ipynb"
    parameters = {"ARTIFACTS_DIR": str(art), "RUN_NAME": "shared"}
    pm.execute_notebook(str(ROOT / "05_report.ipynb"), str(executed), parameters=parameters, cwd=str(ROOT))
    html, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    page_file = tmp_path / "elsewhere" / "05.html"  # far from ARTIFACTS_DIR: relative links could not resolve
    page_file.parent.mkdir()
    page_file.write_text(html)
    expected = len(list((art / "report" / "figures").glob("*.png")))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all(".jp-OutputArea img", "els => els.map(e => [e.alt, e.naturalWidth])")  # outputs only
        browser.close()
    assert expected >= 2 and len(images) == expected, (expected, images)
    assert all(width > 0 for _, width in images), images  # every figure decoded, none shown as alt text
