"""helpers: the tested package behind the five CLIP-on-COCO lab notebooks.

One concern per module: ``config`` (typed run settings), ``env`` (Colab/Kaggle/local paths),
``storage`` (atomic, retried writes), ``coco``/``splits``/``acquire``/``download`` (data),
``image_cache``/``text_tower``/``dataset``/``prepare`` (notebook 01), ``model``/``loss``/``train``/``embed``/
``curves``/``distributed`` (02), ``metrics``/``evaluate``/``qualitative``/``widget``/``zero_shot`` (03),
``variants``/``ablation`` (04), ``report`` (05), ``run_all`` (headless), ``synthetic`` (offline data).
"""

__version__ = "0.1.0"
# The GitHub repository (owner/name): the one place the Colab badges and the bootstrap's clone URL come from
# (tests/test_notebooks.py checks both). A fork changes it here, in the badges and in the bootstrap cell.
REPOSITORY = "clip-coco-lab/clip-coco-lab"
