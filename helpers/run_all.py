"""Run the five notebooks headless, in order, with shared parameters (papermill).

    python -m helpers.run_all --demo                       # offline, CPU, synthetic data, a few minutes
    python -m helpers.run_all --artifacts /data/clip_coco --set DATA_SOURCE='"coco"' EPOCHS=10

Executed notebooks are written to ``ARTIFACTS_DIR/executed/``, one progress line per
notebook. A failure stops the run and names the notebook and the cell that failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from .core.env import shown
from .core.markdown import duration

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
}


class NotebookFailed(RuntimeError):
    pass


def make_demo_data(root: Path, n_train: int = 400, n_val: int = 200) -> dict[str, str]:
    """Synthetic COCO layout + tiny text tower under ``root`` (reused when present)."""
    from .data.synthetic import all_captions, make_synthetic_coco, make_tiny_text_tower

    coco, tower = root / "coco", root / "tiny-clip-text"
    if not (coco / "annotations" / "captions_val2014.json").exists():
        make_synthetic_coco(coco, n_train=n_train, n_val=n_val, image_size=(160, 120), seed=0)
    if not (tower / "config.json").exists():
        make_tiny_text_tower(tower, all_captions(coco))
    return {"DATA_DIR": str(coco), "TEXT_MODEL": str(tower)}


def run_notebooks(
    parameters: dict[str, Any], artifacts: Path, notebooks: tuple[str, ...] = NOTEBOOKS, log=print, cell_timeout: int | None = None
) -> Path:
    """Execute ``notebooks`` in order; return the folder of executed copies."""
    import logging

    import papermill as pm

    logging.getLogger("papermill").setLevel(logging.ERROR)  # shared parameters are "unknown" to some notebooks: expected

    out_dir = artifacts / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {**parameters, "ARTIFACTS_DIR": str(artifacts)}
    for i, name in enumerate(notebooks, 1):
        t0 = time.perf_counter()
        log(f"[{i}/{len(notebooks)}] {name} ...")
        try:
            pm.execute_notebook(
                str(ROOT / name),
                str(out_dir / name),
                parameters=params,
                cwd=str(ROOT),
                progress_bar=False,
                kernel_name="python3",
                execution_timeout=cell_timeout,
                extra_arguments=KERNEL_QUIET,
            )
        except pm.PapermillExecutionError as exc:
            raise NotebookFailed(
                f"{name} failed in cell {exc.exec_count} (code cell #{exc.cell_index}): {exc.ename}: {exc.evalue}\n"
                f"See the executed notebook: {out_dir / name}"
            ) from None
        log(f"[{i}/{len(notebooks)}] {name} done in {duration(time.perf_counter() - t0)} -> {shown(out_dir / name, artifacts)}")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true", help="offline demo on synthetic data with a tiny text tower (CPU, minutes)")
    parser.add_argument("--artifacts", default=None, help="ARTIFACTS_DIR (default: ./artifacts, or ./artifacts/demo with --demo)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="parameters for every notebook (JSON values)")
    parser.add_argument("--only", nargs="*", default=None, metavar="NN", help="run only these notebooks, e.g. --only 01 02")
    args = parser.parse_args(argv)

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
    notebooks = tuple(n for n in NOTEBOOKS if args.only is None or n[:2] in args.only)
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
    if report.exists():
        print(f"Report: {shown(report, artifacts)}" + ("  (numbers from SYNTHETIC data)" if args.demo else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
