"""Qualitative retrieval: text queries, zero-shot-style classification, heatmaps, success/failure grids.

Live text (queries, class prompts) goes through ``encode_text``, notebook 01's lab cell as the caption cache
recorded it: the very function that encoded the cached captions, so queries and captions share one space. Images
are one embedding each, so a top-5 never repeats an image.
"""

from __future__ import annotations

import functools
import io
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..clip.metrics import NonFiniteFeatures
from ..core.figures import wrap_caption
from ..core.lab import LabCode
from ..core.provenance import text_tower_id, tower_of
from ..data.dataset import TextCacheMismatch, data_code
from ..data.image_cache import ImageCache, prepare_image
from ..data.text_tower import TextTower, encode_texts, load_text_tower

# Prompt ensembling (as in CLIP's zero-shot classification): average the embeddings of a class
# name in several templates, which is more robust than any single phrasing.
PROMPT_TEMPLATES = (
    "{}",
    "a photo of {}.",
    "a picture of {}.",
    "an image showing {}.",
    "a close-up photo of {}.",
    "a blurry photo of {}.",
)


@dataclass
class Hit:
    image_id: int
    score: float
    caption: str  # a ground-truth caption of the image


class RetrievalIndex:
    """Image embeddings of one split plus the text tower for live queries."""

    def __init__(
        self,
        model: nn.Module,
        image_features: torch.Tensor,
        image_ids: list[int],
        cache: ImageCache,
        captions_by_image: dict[int, list[str]],
        text_model: str | TextTower,
        device: torch.device | str = "cpu",
        encode_text: Any = None,
    ):
        if not torch.isfinite(image_features).all():  # NaN scores would rank arbitrarily in every grid and in the explorer
            raise NonFiniteFeatures(
                "the image features hold NaN or infinity: the model diverged. Retrain it (02_train_clip.ipynb, FORCE_RETRAIN=True) "
                "with a lower LR or WEIGHT_DECAY before querying it."
            )
        self.model, self.image_features, self.image_ids, self.cache = model, image_features.float(), list(image_ids), cache
        self.captions_by_image = captions_by_image
        self.device = torch.device(device)
        self._tower = text_model if isinstance(text_model, TextTower) else None
        self._text_model_name = text_model if isinstance(text_model, str) else text_model.name
        self.scale = float(model.scale().item())
        self.text_space: str | None = None  # the caption caches' tower id (from_eval sets it): live queries must match
        self.encode_text = encode_text or functools.partial(encode_texts, LabCode.shipped())  # from_eval: the caption cache's cell

    @classmethod
    def from_eval(cls, result: Any, text_model: str | TextTower, device: torch.device | str = "cpu") -> RetrievalIndex:
        data = result.data
        loaded = getattr(result, "tower", None)  # evaluate's classification loaded it already: one load per notebook
        if isinstance(text_model, str) and loaded is not None and loaded.name == text_model:
            text_model = loaded
        captions: dict[int, list[str]] = {}
        for k, row in zip(result.text_to_image.tolist(), result.caption_rows):
            captions.setdefault(data.dataset.image_ids[k], []).append(data.text["captions"][row])
        index = cls(data.model, result.image_features, data.dataset.image_ids, data.cache, captions, text_model, device,
                    encode_text=functools.partial(encode_texts, data_code(data.text)))  # fmt: skip
        index.text_space = tower_of(data.text)
        return index

    @property
    def tower(self) -> TextTower:
        if self._tower is None:
            now = text_tower_id(self._text_model_name)  # live queries and cached captions: one text space, or an error
            if self.text_space is not None and now != self.text_space:
                raise TextCacheMismatch(
                    f"TEXT_MODEL={self._text_model_name!r} now holds another text tower ({now}) than the one that encoded the "
                    f"cached captions ({self.text_space}): live queries would land in another text space. Re-run "
                    "01_dataset_prep.ipynb (and retrain), or put the old tower back."
                )
            self._tower = load_text_tower(self._text_model_name, self.device)
        return self._tower

    def encode_queries(self, texts: list[str]) -> torch.Tensor:
        return self.encode_text(texts, self.tower)  # notebook 01's cell that encoded the cached captions

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """Top-k distinct images for a text query, best first."""
        if not query.strip():
            return []
        q = self.encode_queries([query])[0]
        scores = self.image_features @ q
        top = torch.topk(scores, min(k, len(self.image_ids)))
        return [self._hit(int(i), float(s)) for s, i in zip(top.values, top.indices)]

    def _hit(self, row: int, score: float) -> Hit:
        image_id = self.image_ids[row]
        return Hit(image_id, score, (self.captions_by_image.get(image_id) or [""])[0])

    def class_embeddings(self, classes: list[str]) -> torch.Tensor:
        """One unit vector per class: the normalised mean over prompt templates."""
        texts = [t.format(c) for c in classes for t in PROMPT_TEMPLATES]
        emb = self.encode_queries(texts).view(len(classes), len(PROMPT_TEMPLATES), -1).mean(1)
        return torch.nn.functional.normalize(emb, dim=-1)

    def classify(self, image_feature: torch.Tensor, classes: list[str]) -> list[tuple[str, float]]:
        """Softmax over ``scale * cosine`` against each class's prompt ensemble, most likely first."""
        probs = torch.softmax(self.scale * (self.class_embeddings(classes) @ image_feature.float()), dim=0)
        return sorted(zip(classes, probs.tolist()), key=lambda x: -x[1])

    def feature_of(self, image_id: int) -> torch.Tensor:
        return self.image_features[self.image_ids.index(image_id)]

    @torch.no_grad()
    def encode_pil(self, image: Image.Image) -> torch.Tensor:
        """An uploaded image, through the cache's resize/crop policy and the trained tower."""
        from ..data.dataset import normalize_images

        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        prepared = Image.open(io.BytesIO(prepare_image(io.BytesIO(buf.getvalue()), self.cache.image_size, 95)))
        x = torch.from_numpy(np.asarray(prepared).copy()).permute(2, 0, 1).unsqueeze(0)
        self.model.eval()
        param = next(self.model.parameters())
        return self.model.encode_image(normalize_images(x, param.device)).float().cpu()[0]


def _wrap(text: str, width: int = 30, lines: int = 3) -> str:
    return wrap_caption(text, width, lines)


def query_grid(index: RetrievalIndex, queries: list[str], k: int = 5) -> Any:
    """For each query, its top-k distinct images with cosine score and a ground-truth caption."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(queries), k, figsize=(2.8 * k, 3.3 * len(queries)), squeeze=False)
    for r, query in enumerate(queries):
        hits = index.search(query, k)
        for c in range(k):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(hits):
                hit = hits[c]
                ax.imshow(index.cache.load_pil(hit.image_id))
                ax.set_title(f"#{c + 1}  cos {hit.score:.3f}\n{_wrap(hit.caption, 28, 2)}", fontsize=7)
        axes[r][0].text(-0.08, 0.5, f'"{query}"', transform=axes[r][0].transAxes, rotation=90, va="center", ha="right", fontsize=10)
    fig.suptitle("Text → image: top-5 distinct images per query (one embedding per image)", fontsize=11)
    fig.tight_layout()
    return fig


def classification_figure(index: RetrievalIndex, image_ids: list[int], classes: list[str]) -> Any:
    """Each image beside its probabilities over ``classes`` (prompt-ensembled)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(image_ids), 2, figsize=(8, 2.6 * len(image_ids)), squeeze=False, gridspec_kw={"width_ratios": [1, 1.6]})
    for r, image_id in enumerate(image_ids):
        scores = dict(index.classify(index.feature_of(image_id), classes))
        axes[r][0].imshow(index.cache.load_pil(image_id))
        axes[r][0].axis("off")
        axes[r][0].set_title(_wrap((index.captions_by_image.get(image_id) or [""])[0], 36, 2), fontsize=7)
        names = list(reversed(classes))  # the classes in the order given, the first at the top, in every row alike
        probs = [scores[name] for name in names]
        best = max(probs)
        axes[r][1].barh(names, probs, color=["tab:orange" if p == best else "tab:blue" for p in probs])  # the choice stands out
        for y, p in enumerate(probs):  # the value at the end of each bar
            axes[r][1].text(min(p + 0.02, 0.9), y, f"{p:.2f}", va="center", fontsize=7)
        axes[r][1].set_xlim(0, 1)
        axes[r][1].set_xlabel("probability")
    fig.suptitle("Image → its probability for each class (the best in orange; prompt ensembling over templates)", fontsize=11)
    fig.tight_layout()
    return fig


def similarity_heatmap(index: RetrievalIndex, text_features: torch.Tensor, text_to_image: torch.Tensor, n: int = 10, seed: int = 0) -> Any:
    """Cosine similarity of N images against one caption of each: the diagonal should stand out."""
    import matplotlib.pyplot as plt

    rng = random.Random(seed)
    rows = sorted(rng.sample(range(len(index.image_ids)), min(n, len(index.image_ids))))
    first_caption = {}
    for j, i in enumerate(text_to_image.tolist()):
        first_caption.setdefault(i, j)
    sims = (index.image_features[rows] @ text_features[[first_caption[r] for r in rows]].t()).numpy()
    n_rows = len(rows)
    fig, ax = plt.subplots(figsize=(1.0 * n_rows + 3.5, 0.8 * n_rows + 2))
    im = ax.imshow(sims, cmap="viridis")
    labels = [_wrap((index.captions_by_image.get(index.image_ids[r]) or [""])[0], 26, 2) for r in rows]
    ax.set_xticks(range(n_rows), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks([])
    for a, r in enumerate(rows):  # each row's image as a thumbnail left of it: the reader sees what is being matched
        thumb = ax.inset_axes((-1.02 / n_rows - 0.01, 1 - (a + 1) / n_rows, 1.0 / n_rows, 1.0 / n_rows))
        thumb.imshow(index.cache.load_pil(index.image_ids[r]))
        thumb.set_axis_off()
    for a in range(n_rows):
        for b in range(n_rows):
            ax.text(
                b, a, f"{sims[a, b]:.2f}", ha="center", va="center", fontsize=6, color="white" if sims[a, b] < sims.max() * 0.7 else "black"
            )
    ax.set_xlabel("one caption of each image")
    fig.colorbar(im, ax=ax, label="cosine similarity")
    ax.set_title("Image–caption cosine similarity (matching pairs on the diagonal)")
    fig.tight_layout()
    return fig


def success_failure_grids(
    index: RetrievalIndex,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    captions: list[str],
    n: int = 4,
    k: int = 3,
    seed: int = 0,
) -> tuple[Any, Any]:
    """Text→image examples where the right image ranks first (successes) and outside the top 5 (failures)."""
    import matplotlib.pyplot as plt

    order = list(range(len(captions)))
    random.Random(seed).shuffle(order)
    sample = order[: min(len(order), 2000)]
    sims = text_features[sample] @ index.image_features.t()
    own = sims.gather(1, text_to_image[sample].unsqueeze(1))
    ranks = ((sims >= own).sum(1) - 1).tolist()
    successes = [j for j, r in zip(sample, ranks) if r == 0][:n]
    failures = [j for j, r in zip(sample, ranks) if r >= 5][:n]
    figs = []
    for title, chosen in (
        ("Successes: the caption's image ranks first", successes),
        ("Failures: the caption's image is not in the top 5", failures),
    ):
        cols = k + 2  # the query, its top k, the true image with its rank
        fig, axes = plt.subplots(max(1, len(chosen)), cols, figsize=(2.5 * cols, 3.3 * max(1, len(chosen))), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for r, j in enumerate(chosen):
            truth = int(text_to_image[j])
            axes[r][0].text(0.5, 0.5, _wrap(captions[j], 22, 6), ha="center", va="center", fontsize=8, wrap=True)
            axes[r][0].set_title("query", fontsize=8, fontweight="bold")
            scores = text_features[j] @ index.image_features.t()
            top = torch.topk(scores, k).indices.tolist()
            for c, row in enumerate(top):
                axes[r][c + 1].imshow(index.cache.load_pil(index.image_ids[row]))
                ok = row == truth
                axes[r][c + 1].set_title(
                    f"#{c + 1}{' ✓' if ok else ''}  cos {scores[row]:.2f}\n"
                    + _wrap((index.captions_by_image.get(index.image_ids[row]) or [""])[0], 28, 2),
                    fontsize=7,
                    color="green" if ok else "black",
                )
            rank = int((scores > scores[truth]).sum()) + 1  # 1 = first; ties count in the caption's favour
            axes[r][-1].imshow(index.cache.load_pil(index.image_ids[truth]))
            axes[r][-1].set_title(f"true image: rank {rank:,} of {len(index.image_ids):,}\ncos {scores[truth]:.2f}", fontsize=7,
                                  color="green")  # fmt: skip
        if not chosen:
            axes[0][0].text(0, 0.5, "no such example in the sample", fontsize=9)
        fig.suptitle(title + f" (text → image over {len(index.image_ids):,} images)", fontsize=11)
        fig.tight_layout(rect=(0, 0, 1, 0.97), h_pad=1.6)  # room for the title, and between a row's titles and the images above
        figs.append(fig)
    return figs[0], figs[1]
