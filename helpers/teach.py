"""What the notebooks show to teach: the real source of the model, loss and metric, and toy examples.

Why: the lab's sections are the model, the loss and Recall@K, and a student must be able to
read them in the notebook itself. The package stays the single tested implementation; these
helpers *display* it (``show_source``) and run it on examples small enough to check by hand.
Every toy example calls the same functions training and evaluation call.
"""

from __future__ import annotations

import inspect
import math
import textwrap
from typing import Any

import torch
import torch.nn.functional as F

from .core import markdown


def source_markdown(obj: Any) -> str:
    """The source of a function or class as a fenced Python block, with where it lives."""
    module = inspect.getmodule(obj)
    where = f"{module.__name__}.{obj.__qualname__}" if module else obj.__qualname__
    source = textwrap.dedent(inspect.getsource(obj)).rstrip()  # a method reads from column 0, like a function
    return f"`{where}`\n\n```python\n{source}\n```"


def variant_code_markdown(variants: list[str], lab: Any = None) -> str:
    """The code of every modification the ``variants`` use, each under its name (helpers.clip.variants.code_markdown):
    read from the records that train them, a student's own included; ``lab``: the study's lab code (04's cells)."""
    from .clip.variants import code_markdown

    return code_markdown(variants, lab)


def show_source(obj: Any) -> None:
    """Render ``source_markdown(obj)`` as a highlighted code block in Jupyter/Colab (plain text elsewhere)."""
    try:
        from IPython.display import Markdown, display

        display(Markdown(source_markdown(obj)))
    except ImportError:  # pragma: no cover - outside IPython
        print(source_markdown(obj))


def _orthonormal(n: int, dim: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(dim, n, generator=torch.Generator().manual_seed(seed)))
    return q.t()  # n orthonormal rows


def toy_loss_table(clip_loss: Any, batch: int = 4, dim: int = 512, temperature: float = 0.07, seed: int = 0) -> str:
    """``clip_loss`` (notebook 02's cell, the one that trains) on a toy batch: aligned pairs give ~0, random pairs about
    log B."""

    scale = 1.0 / temperature
    captions = _orthonormal(batch, dim, seed)
    aligned = clip_loss(captions.clone(), captions, scale).item()  # each image equals its own caption
    generator = torch.Generator().manual_seed(seed + 1)
    draws = [clip_loss(F.normalize(torch.randn(batch, dim, generator=generator), dim=-1), captions, scale).item() for _ in range(100)]
    shuffled = sum(draws) / len(draws)
    swapped = clip_loss(captions.roll(1, dims=0), captions, scale).item()  # each image equals another pair's caption
    return "\n".join(
        [
            f"Toy batch: B = {batch} pairs, {dim}-d unit vectors, τ = {temperature} (scale {scale:.1f}).",
            "",
            markdown.table(
                ["image features", "loss", "read it as"],
                [
                    ["equal to their own captions", f"{aligned:.4f}", "every positive wins: close to 0"],
                    ["random (mean of 100 draws)", f"{shuffled:.4f}",
                     f"no information: near log B = {math.log(batch):.4f} (chance); random {dim}-d vectors are nearly orthogonal"],
                    ["equal to *another* pair's caption", f"{swapped:.4f}", "confidently wrong: far above chance"],
                ],
                numeric=(1,),
            ),
        ]
    )


def temperature_table(
    similarities: tuple[float, ...] = (0.8, 0.6, 0.4, 0.2), temperatures: tuple[float, ...] = (1.0, 0.1, 0.07, 0.01)
) -> str:
    """Softmax over one anchor's cosine similarities at several τ: small τ concentrates on the top candidates."""
    sims = torch.tensor(similarities)
    rows = [[f"{tau:g} ({1 / tau:.0f})", *(f"{p:.3f}" for p in torch.softmax(sims / tau, dim=0).tolist())] for tau in temperatures]
    lines = [
        "One anchor's cosine similarities to its positive (first) and three negatives; softmax(cos / τ):",
        "",
        markdown.table(["τ (scale 1/τ)", *(f"cos {s:.1f}" for s in similarities)], rows, numeric=range(1, len(similarities) + 1)),
    ]
    lines += [
        "",
        "At τ = 1 the four candidates look almost alike (the loss barely separates them); at τ = 0.07 the positive takes "
        "most of the mass and the hardest negative (cos 0.6) dominates what remains; at τ = 0.01 the softmax is nearly "
        "a hard max, and its gradients become spiky. CLIP starts at 0.07 and never goes below 0.01.",
    ]
    return "\n".join(lines)


def toy_recall_example(retrieval_ranks: Any, recall_at_k: Any) -> tuple[str, dict[str, float]]:
    """Three images with two captions each, scored by notebook 03's ``retrieval_ranks`` and ``recall_at_k`` (the cell that
    scores every split); returns (explanation, metrics).

    The features are chosen by hand so the ranked lists can be checked with a pencil: caption 1
    (of image 0) lies closest to image 2, so image 2 misses at K = 1 and caption 1 finds image 2
    first; caption 4 (of image 2) lies closer to image 1.
    """
    images = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    captions = F.normalize(
        torch.tensor(
            [
                [1.0, 0.1, 0.0],  # caption 0 of image 0
                [0.5, 0.0, 0.87],  # caption 1 of image 0: closer to image 2 than to image 0
                [0.0, 1.0, 0.1],  # caption 2 of image 1
                [0.1, 0.8, 0.0],  # caption 3 of image 1
                [0.0, 0.9, 0.7],  # caption 4 of image 2: closer to image 1 than to image 2
                [0.0, 0.6, 0.8],  # caption 5 of image 2
            ]
        ),
        dim=-1,
    )
    owner = torch.tensor([0, 0, 1, 1, 2, 2])
    sims = images @ captions.t()
    lines = ["**Image → text** (a hit at K when *any* of the image's captions is in its top K):", ""]
    for i in range(3):
        order = sims[i].argsort(descending=True).tolist()
        ranked = ", ".join(f"c{j}{'✓' if owner[j] == i else ''} ({sims[i, j]:.2f})" for j in order)
        first = next(r for r, j in enumerate(order) if owner[j] == i)
        lines.append(f"- image {i}: {ranked} → K=1 {'hit' if first < 1 else 'miss'}, K=2 {'hit' if first < 2 else 'miss'}")
    lines += ["", "**Text → image** (a hit at K when the caption's own image is in its top K):", ""]
    for j in range(6):
        order = sims[:, j].argsort(descending=True).tolist()
        ranked = ", ".join(f"i{i}{'✓' if i == owner[j] else ''} ({sims[i, j]:.2f})" for i in order)
        rank = order.index(int(owner[j]))
        lines.append(f"- caption {j}: {ranked} → K=1 {'hit' if rank < 1 else 'miss'}, K=2 {'hit' if rank < 2 else 'miss'}")
    metrics = recall_at_k(*retrieval_ranks(images, captions, owner, 3, torch.device("cpu")), ks=(1, 2))
    lines += [
        "",
        f"`recall_at_k` on the same features: image→text R@1 = {100 * metrics['i2t_R@1']:.1f}%, "
        f"R@2 = {100 * metrics['i2t_R@2']:.1f}%; text→image R@1 = {100 * metrics['t2i_R@1']:.1f}%, "
        f"R@2 = {100 * metrics['t2i_R@2']:.1f}% (the share of hits above; it returns fractions, every table shows percent).",
    ]
    return "\n".join(lines), metrics


def caption_tokens_table(tokenizer: Any, captions: list[str]) -> str:
    """How a batch of captions becomes model input: tokens, padding to the batch's longest, attention mask."""
    batch = tokenizer(captions, padding="longest", truncation=True, max_length=77)
    lines = [
        f"A batch of {len(captions)} captions, padded to its longest ({len(batch['input_ids'][0])} tokens, never more than 77):",
        "",
    ]
    for caption, ids, mask in zip(captions, batch["input_ids"], batch["attention_mask"]):
        tokens = tokenizer.convert_ids_to_tokens(ids)
        rows = [["token", *(f"`{t}`" for t in tokens)], ["id", *map(str, ids)], ["attention mask", *map(str, mask)]]
        lines += [f"**{caption!r}**", "", markdown.table(["position", *map(str, range(len(ids)))], rows), ""]
    lines.append(
        "Mask 0 marks padding. CLIP's text transformer is causal and reads its embedding at the end-of-text token, so "
        "padding after it never changes the result: that is why the cache pads each batch to its longest caption only."
    )
    return "\n".join(lines)
