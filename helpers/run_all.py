"""Run the five notebooks headless, in order, with shared parameters (papermill).

    python -m helpers.run_all --demo                       # offline, CPU, synthetic data, a few minutes
    python -m helpers.run_all --artifacts /data/clip_coco --set DATA_SOURCE='"coco"' EPOCHS=10

Executed notebooks are written to ``ARTIFACTS_DIR/executed/``, one progress line per
notebook. A failure stops the run and names the notebook and the cell that failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .core.env import shown
from .core.markdown import duration
from .core.progress import HEADLESS

ROOT = Path(__file__).resolve().parents[1]
KERNEL_QUIET = ["--IPKernelApp.log_level=ERROR"]  # ipykernel's warning about TCP without encryption, once per notebook
NOTEBOOKS = ("01_dataset_prep.ipynb", "02_train_clip.ipynb", "03_evaluate_clip.ipynb", "04_ablation.ipynb", "05_report.ipynb")

DEMO_PARAMETERS: dict[str, Any] = {
    # a learnable synthetic COCO-layout dataset and a tiny text tower stand in for COCO and CLIP
    "DATA_SOURCE": "local",
    "IMAGE_WEIGHTS": None,
    "IMAGE_BACKBONE": "resnet18",
    "IMAGE_SIZE": 64,
    "HIDDEN_DIM": 128,
    "EPOCHS": 4,
    "BATCH_SIZE": 32,
    "LR": 1e-3,
    "NUM_WORKERS": 0,
    "LIVE_PLOT": False,
    "INTERACTIVE": False,
    "SEEDS": [0],  # VARIANTS: notebook 04's own default, the study a student runs
    "QUERIES": ["a red circle on the left", "a blue square"],
    "CLASSES": ["a red shape", "a blue shape", "a green shape"],
    "COMPARE_ZERO_SHOT": True,  # the tiny tower's random image half (offline): the zero-shot rows' code path, at chance
    "FLICKR30K": True,  # on a generated Flickr-layout folder (make_demo_data): the transfer test's code path, offline
}


class NotebookFailed(RuntimeError):
    pass


HEARTBEAT_SECONDS = 15.0  # the longest silence while a notebook runs: a quiet cell still says it is alive


def cell_titles(notebook: Path) -> list[str]:
    """Per cell of the executed notebook (papermill adds its injected-parameters cell after the ``parameters`` cell): the
    nearest Markdown heading above it, so "cell 19/24 (Train and evaluate every variant)" tells where a run is."""
    import nbformat

    titles, heading = [], "setup"
    for cell in nbformat.read(notebook, as_version=4).cells:
        if cell.cell_type == "markdown":
            lines = [line.lstrip("#").strip() for line in cell.source.splitlines() if line.startswith("#")]
            heading = lines[-1] if lines else heading
        titles.append(heading)
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            titles.append("parameters")
    return titles


class Relay(logging.Handler):
    """Relays a running notebook to the terminal: each line it prints (indented), and after every HEARTBEAT_SECONDS of
    silence a line with the cell it is in and the time elapsed, so a long training never looks hung. It hears which cell
    runs from papermill's log (``log_output``) and what it prints as papermill's ``stdout_file``."""

    def __init__(self, name: str, titles: list[str], out=print, heartbeat: float = HEARTBEAT_SECONDS):
        super().__init__(logging.INFO)
        self.name, self.titles, self.out, self.heartbeat = name, titles, out, heartbeat
        self.cell, self.pending = 0, ""
        self.start = self.last = time.monotonic()
        self.relay_lock, self.done = threading.RLock(), threading.Event()  # logging.Handler's own self.lock is left alone
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> Relay:
        logger = logging.getLogger("papermill")
        self.saved = logger.level, logger.propagate
        logger.setLevel(logging.INFO)
        logger.propagate = False  # papermill's own INFO lines (every output again) stay out of the terminal
        logger.addHandler(self)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        self.flush()
        logger = logging.getLogger("papermill")
        logger.removeHandler(self)
        logger.setLevel(self.saved[0])
        logger.propagate = self.saved[1]

    def emit(self, record: logging.LogRecord) -> None:  # papermill's "Executing Cell 12----": where the notebook is
        message = record.getMessage()
        if message.startswith("Executing Cell "):
            self.cell = int(message.split()[2].rstrip("-") or 0)

    def write(self, text: str) -> None:  # the notebook's stdout, as it prints
        with self.relay_lock:
            self.pending += text.replace("\r", "\n")
            *lines, self.pending = self.pending.split("\n")
            for line in lines:
                if line.strip():
                    self._say(f"    | {line.rstrip()}")

    def flush(self) -> None:
        with self.relay_lock:  # also called by logging at exit, under logging's lock of this handler: a separate one
            if self.pending.strip():
                self._say(f"    | {self.pending.rstrip()}")
            self.pending = ""

    def _say(self, line: str) -> None:
        self.out(line)
        self.last = time.monotonic()

    def _beat(self) -> None:
        while not self.done.wait(1.0):
            with self.relay_lock:
                now = time.monotonic()
                if now - self.last >= self.heartbeat:
                    title = self.titles[self.cell - 1] if 0 < self.cell <= len(self.titles) else "starting"
                    where = f"cell {self.cell}/{len(self.titles)} ({title})" if self.cell else "starting the kernel"
                    self._say(f"    … {self.name}: {where}, {duration(now - self.start)} elapsed")


def selected(only: list[str]) -> tuple[str, ...]:
    """The notebooks ``--only`` names ("03 05", "03,05", "3"), in pipeline order; a name that is none of them stops
    the run before anything starts (it used to match nothing and run no notebook at all, saying "All 0 notebooks ran")."""
    wanted = {part.strip().zfill(2) for value in only for part in value.split(",") if part.strip()}
    unknown = sorted(w for w in wanted if w not in {n[:2] for n in NOTEBOOKS})
    if unknown or not wanted:
        got = ", ".join(unknown) or "none"
        raise SystemExit(f"--only {' '.join(only)}: name notebooks by number, 01 to 05, e.g. --only 03 05 (got {got})")
    return tuple(n for n in NOTEBOOKS if n[:2] in wanted)


def make_demo_data(root: Path, n_train: int = 400, n_val: int = 200) -> dict[str, str]:
    """Synthetic COCO layout + tiny text tower under ``root`` (reused when present)."""
    from .data.flickr import CSV_NAME
    from .data.synthetic import VISION_SUBFOLDER, all_captions, make_synthetic_coco, make_synthetic_flickr, make_tiny_text_tower

    coco, tower, flickr = root / "coco", root / "tiny-clip-text", root / "flickr30k"
    if not (coco / "annotations" / "instances_val2014.json").exists():  # (demo data of an older kit had no instances file)
        make_synthetic_coco(coco, n_train=n_train, n_val=n_val, image_size=(160, 120), seed=0)
    if not (tower / VISION_SUBFOLDER / "config.json").exists():  # (nor an image half for COMPARE_ZERO_SHOT)
        make_tiny_text_tower(tower, all_captions(coco))
    if not (flickr / CSV_NAME).exists():
        make_synthetic_flickr(flickr)
    return {"DATA_DIR": str(coco), "TEXT_MODEL": str(tower), "FLICKR_DIR": str(flickr)}


def settle_streams(notebook: Path) -> None:
    """Each run of stream outputs of one kind in a cell merged into one, and every line that a progress bar redrew
    with ``\r`` reduced to what a terminal shows at the end: an exported notebook keeps a bar's final state, once (the
    kernel sent each redraw as its own output, which some viewers show one by one from the first, 0%)."""
    import nbformat

    if not notebook.exists():
        return
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        merged: list[Any] = []
        for output in cell.get("outputs", []):
            last = merged[-1] if merged else None
            if output.output_type == "stream" and last is not None and last.output_type == "stream" and last.name == output.name:
                last.text += output.text
            else:
                merged.append(output)
        for output in merged:
            if output.output_type == "stream" and "\r" in output.text:
                lines = output.text.split("\n")  # not splitlines(): it splits at "\r" too
                output.text = "".join(_as_drawn(line + "\n") for line in lines[:-1]) + _as_drawn(lines[-1])
        if "outputs" in cell:
            cell.outputs = [o for o in merged if o.output_type != "stream" or o.text]
    nbformat.write(nb, notebook)


def _as_drawn(line: str) -> str:
    """A line as a terminal leaves it: each ``\r`` returns to its start and the next text overwrites from there; a line
    a bar cleared (``leave=False``) is gone."""
    if "\r" not in line:
        return line
    end = "\n" if line.endswith("\n") else ""
    shown = ""
    for part in line.rstrip("\n").split("\r"):
        shown = part + shown[len(part):]
    return shown.rstrip() + end if shown.strip() else ""


def run_notebooks(
    parameters: dict[str, Any], artifacts: Path, notebooks: tuple[str, ...] = NOTEBOOKS, log=print, cell_timeout: int | None = None,
    relay=print,
) -> Path:
    """Execute ``notebooks`` in order; return the folder of executed copies. ``log`` gets two lines per notebook (started,
    done in m:ss); ``relay`` what each prints as it runs, and a line for every HEARTBEAT_SECONDS of silence."""
    import papermill as pm

    logging.getLogger("papermill").setLevel(logging.ERROR)  # shared parameters are "unknown" to some notebooks: expected

    out_dir = artifacts / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {**parameters, "ARTIFACTS_DIR": str(artifacts)}
    before = os.environ.get(HEADLESS)
    os.environ[HEADLESS] = "1"  # the kernels inherit it: text progress bars, whose exported state is their last
    try:
        for i, name in enumerate(notebooks, 1):
            t0 = time.perf_counter()
            log(f"[{i}/{len(notebooks)}] {name} ...")
            try:
                with Relay(name, cell_titles(ROOT / name), out=relay) as relayed:
                    pm.execute_notebook(
                        str(ROOT / name),
                        str(out_dir / name),
                        parameters=params,
                        cwd=str(ROOT),
                        progress_bar=False,
                        log_output=True,  # papermill names each cell as it starts: the relay's "cell 12/24"
                        stdout_file=relayed,
                        kernel_name="python3",
                        execution_timeout=cell_timeout,
                        extra_arguments=KERNEL_QUIET,
                    )
            except pm.PapermillExecutionError as exc:
                raise NotebookFailed(
                    f"{name} failed in cell {exc.exec_count} (code cell #{exc.cell_index}): {exc.ename}: {exc.evalue}\n"
                    f"See the executed notebook: {out_dir / name}"
                ) from None
            finally:
                settle_streams(out_dir / name)
            log(f"[{i}/{len(notebooks)}] {name} done in {duration(time.perf_counter() - t0)} -> {shown(out_dir / name, artifacts)}")
    finally:
        if before is None:
            os.environ.pop(HEADLESS, None)
        else:
            os.environ[HEADLESS] = before
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true", help="offline demo on synthetic data with a tiny text tower (CPU, minutes)")
    parser.add_argument("--artifacts", default=None, help="ARTIFACTS_DIR (default: ./artifacts, or ./artifacts/demo with --demo)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="parameters for every notebook (JSON values)")
    parser.add_argument("--only", nargs="*", default=None, metavar="NN", help="run only these notebooks, e.g. --only 01 02")
    args = parser.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)  # piped (`| tee`, CI logs): each progress line as it happens

    from .core.config import from_params, parse_sets

    artifacts = Path(args.artifacts or ("artifacts/demo" if args.demo else "artifacts")).absolute()
    overrides = parse_sets(args.set)
    from_params(overrides)  # a misspelt or mistyped key fails here, before anything runs
    params: dict[str, Any] = {"LIVE_PLOT": False, "INTERACTIVE": False}  # headless: no live panel, no widgets
    if args.demo:
        print("DEMO MODE: synthetic COCO-layout data and a tiny random text tower, on the CPU, offline.")
        print("All Recall@K numbers it prints come from SYNTHETIC data: they test the pipeline, not the model.\n")
        params.update(DEMO_PARAMETERS)
        params.update(make_demo_data(artifacts.parent / f"{artifacts.name}_data"))
    params.update(overrides)
    from_params(params)
    notebooks = NOTEBOOKS if args.only is None else selected(args.only)
    print(f"ARTIFACTS_DIR: {artifacts} (the paths below are relative to it)")
    t0 = time.perf_counter()
    try:
        out = run_notebooks(params, artifacts, notebooks, cell_timeout=1800 if args.demo else None)
    except NotebookFailed as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    print(f"\nAll {len(notebooks)} notebooks ran in {duration(time.perf_counter() - t0)}. Executed notebooks: "
          f"{shown(out, artifacts)}/")  # fmt: skip
    report = artifacts / "report" / "report.md"
    if report.exists() and "05_report.ipynb" in notebooks:
        print(f"Report: {shown(report, artifacts)}" + ("  (numbers from SYNTHETIC data)" if args.demo else ""))
    elif report.exists():  # --only without 05: the report on disk predates what just ran
        print(f"The report at {shown(report, artifacts)} was written before this run and does not include it: "
              "add 05 (--only ... 05) to rebuild it.")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
