"""An interactive retrieval explorer for Colab/Jupyter (ipywidgets).

Type a query and move the top-k slider to see the best-matching images; pick a test
image or upload your own to see its scores over the class list. The callbacks are
plain methods (:meth:`Explorer.run_query`, :meth:`Explorer.run_image`) that also
record what they showed, so tests drive them without a browser.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from ..core.figures import wrap_caption
from .qualitative import Hit, RetrievalIndex

UPLOAD_LIMIT_BYTES = 900_000  # Colab drops widget uploads of about 1 MB and more (jupyter-widgets/ipywidgets#3452)


class Explorer:
    def __init__(self, index: RetrievalIndex, classes: list[str], query: str = "a dog playing", k: int = 5, samples: int = 30):
        import ipywidgets as w

        self.index, self.classes = index, list(classes)
        self.last_hits: list[Hit] = []
        self.last_scores: list[tuple[str, float]] = []
        self.last_message = ""
        self.query = w.Text(value=query, description="Query", continuous_update=False, layout=w.Layout(width="60%"))
        self.k = w.IntSlider(value=k, min=1, max=20, description="top-k", continuous_update=False)
        self.image_pick = w.Dropdown(options=[(f"image {i}", i) for i in index.image_ids[:samples]], description="Image")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="Upload")
        self.results = w.Output()
        self.image_out = w.Output()
        self.query.observe(lambda change: self.run_query(), names="value")
        self.k.observe(lambda change: self.run_query(), names="value")
        self.image_pick.observe(lambda change: self.run_image(image_id=change["new"]), names="value")
        self.upload.observe(lambda change: self._on_upload(change["new"]), names="value")
        self.widget = w.VBox(
            [
                w.HTML("<b>Text → image</b>: type a query, press Enter"),
                w.HBox([self.query, self.k]),
                self.results,
                w.HTML(f"<b>Image → class</b> over {', '.join(self.classes)}"),
                w.HBox([self.image_pick, self.upload]),
                w.HTML(f"<small>Uploads: one image under {UPLOAD_LIMIT_BYTES // 1000} KB (Colab drops larger widget uploads); "
                       "downscale or screenshot a large photo first.</small>"),
                self.image_out,
            ]
        )

    def run_query(self) -> list[Hit]:
        """Search, remember the hits, and redraw the result grid."""
        import matplotlib.pyplot as plt

        self.last_hits = self.index.search(self.query.value, self.k.value)
        self.results.clear_output(wait=True)
        with self.results:
            if not self.last_hits:
                print("Type a query.")
                return self.last_hits
            cols = min(5, len(self.last_hits))
            rows = -(-len(self.last_hits) // cols)
            _fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False)
            for ax in axes.flat:
                ax.axis("off")
            for ax, (rank, hit) in zip(axes.flat, enumerate(self.last_hits, 1)):
                ax.imshow(self.index.cache.load_pil(hit.image_id))
                ax.set_title(f"#{rank} cos {hit.score:.3f}\n{wrap_caption(hit.caption, 30, 2)}", fontsize=7)
            plt.show()
        return self.last_hits

    def run_image(self, image_id: int | None = None, image: Image.Image | None = None) -> list[tuple[str, float]]:
        """Class probabilities for a split image (by id) or an uploaded PIL image."""
        import matplotlib.pyplot as plt

        feature = self.index.feature_of(image_id) if image is None else self.index.encode_pil(image)
        shown = self.index.cache.load_pil(image_id) if image is None else image
        self.last_scores = self.index.classify(feature, self.classes)
        self.image_out.clear_output(wait=True)
        with self.image_out:
            _fig, (a, b) = plt.subplots(1, 2, figsize=(8, 2.8), gridspec_kw={"width_ratios": [1, 1.6]})
            a.imshow(shown)
            a.axis("off")
            names, probs = zip(*reversed(self.last_scores))
            b.barh(names, probs)
            for y, p in enumerate(probs):  # the value at the end of each bar
                b.text(min(p + 0.02, 0.9), y, f"{p:.2f}", va="center", fontsize=8)
            b.set_xlim(0, 1)
            b.set_xlabel("probability")
            plt.show()
        return self.last_scores

    def _say(self, message: str) -> None:
        self.last_message = message
        self.image_out.clear_output(wait=True)
        with self.image_out:
            print(message)

    def _on_upload(self, value: Any) -> None:
        files = list(value.values()) if isinstance(value, dict) else list(value)  # ipywidgets 7 vs 8
        if not files:
            return  # the widget was reset: nothing was chosen
        content = bytes(files[0].get("content") or b"")
        name = files[0].get("name") or (next(iter(value)) if isinstance(value, dict) else "the file")
        if not content:
            self._say(f"The upload of {name} arrived empty (0 bytes). Colab drops widget uploads of about 1 MB and more: "
                      f"use an image under {UPLOAD_LIMIT_BYTES // 1000} KB.")
            return
        if len(content) > UPLOAD_LIMIT_BYTES:
            self._say(f"{name} is {len(content) / 1e6:.1f} MB: uploads over {UPLOAD_LIMIT_BYTES // 1000} KB may be cut off in Colab. "
                      "Downscale it (or take a screenshot) and upload again.")
            return
        try:
            image = Image.open(io.BytesIO(content))
            image.load()
        except Exception as exc:
            self._say(f"{name} is not an image Pillow can read ({type(exc).__name__}). Upload a JPEG or PNG.")
            return
        self.last_message = ""
        self.run_image(image=image)

    def show(self) -> None:
        from IPython.display import display

        display(self.widget)
        self.run_query()
        if self.index.image_ids:  # the preselected image is scored at once: the class panel never starts empty
            self.run_image(image_id=self.image_pick.value)
