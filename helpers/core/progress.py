"""Progress bars that read well live and once exported.

In a notebook with a frontend (Colab, JupyterLab) ``tqdm.auto`` draws a widget that redraws in place. A notebook run
headless (``python -m helpers.run_all``, which sets ``CLIP_LAB_HEADLESS=1`` for its kernels) has no frontend, and a
widget's saved output is its *first* state: the executed notebook kept a frozen ``epoch 1/4: 0%|  | 0/12`` per epoch.
There, every ``tqdm.auto`` bar (the kit's and the lab cells' alike) becomes tqdm's text bar, whose saved stream ends at
its final state, or is cleared for a bar that does not stay (``leave=False``).
"""

from __future__ import annotations

import os
from typing import Any

HEADLESS = "CLIP_LAB_HEADLESS"


def text_bars_when_headless() -> bool:
    """In a headless kernel, make ``tqdm.auto.tqdm`` the text bar (redrawn at most every 5 s, so the saved stream stays
    short); returns whether it did. Called when ``helpers`` is first imported (the setup cell), before any bar."""
    if os.environ.get(HEADLESS) != "1":
        return False
    import tqdm.auto
    from tqdm.std import tqdm as text_bar

    class HeadlessBar(text_bar):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("mininterval", 5.0)
            super().__init__(*args, **kwargs)

    tqdm.auto.tqdm = HeadlessBar
    return True
