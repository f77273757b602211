"""helpers: the tested package behind the five CLIP-on-COCO lab notebooks, in folders that mirror the lab.

Each folder imports only from the folders below it (an import-linter ``layers`` contract in pyproject.toml,
checked in CI by ``lint-imports``):

    study       04 ablation, 05 report
    evaluation  03 Recall@K, qualitative retrievals, zero-shot, the widget
    training    02 the resumable trainer and its run folder
    clip        the model, the loss and the metric the lab grades, and the ablation's variants
    data        01 COCO, splits, the image and caption caches
    core        settings, paths, atomic storage, the artifact reader, provenance

Beside them, ``bootstrap`` (the notebooks' first cell hands over to it) and the entry points:
``doctor`` (``python -m helpers.doctor``), ``run_all`` (``python -m helpers.run_all``),
``train`` (``python -m helpers.train``) and ``teach`` (what the notebooks show).
"""

__version__ = "0.1.0"
# The GitHub repository (owner/name): the one place the Colab badges and the bootstrap's clone URL come from
# (tests/test_notebooks.py checks both). A fork changes it here, in the badges and in the bootstrap cell.
REPOSITORY = "clip-coco-lab/clip-coco-lab"

if __import__("os").environ.get("CLIP_LAB_HEADLESS") == "1":  # python -m helpers.run_all's kernels (core/progress.py):
    from .core.progress import text_bars_when_headless  # text bars, whose exported state is their last, not a frozen 0%

    text_bars_when_headless()
