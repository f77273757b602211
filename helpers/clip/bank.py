"""The ``bank`` variant's extra negatives: cached training-caption embeddings, drawn afresh every step.

Possible only because the text tower is frozen: the cached embeddings are exactly what the tower
would output now, so the bank never goes stale (unlike MoCo's queue of an updating encoder).
The loss scores the drawn captions as :class:`helpers.clip.loss.Negatives`; this module holds the bank and
decides which bank entries are *not* negatives for an anchor.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset  # the lab's CocoCacheDataset (notebook 01's cell)

from .loss import Negatives

SAME_CAPTION_COSINE = 0.999  # text embeddings this close encode the same words (COCO repeats many captions verbatim)


def bank_positives(image_ids: torch.Tensor, text: torch.Tensor, bank_ids: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """[B, K] True where a bank caption belongs to the anchor's image, or says exactly what the anchor's caption
    says (another image described in the same words is not a negative for it)."""
    dtype = bank.dtype if bank.is_cuda else torch.float32  # fp16 products on the GPU; CPUs are faster in fp32
    same_text = (text.to(dtype) @ bank.to(dtype).t()).float() >= SAME_CAPTION_COSINE
    return (image_ids[:, None] == bank_ids[None, :]) | same_text


class CaptionBank:
    """The ``bank`` variant's extra negatives: cached training-caption embeddings, drawn afresh each step.

    The whole training caption cache is moved to the device once, in fp16 (~424 MB for COCO's
    414k captions); each step draws ``size`` rows from it (with replacement: cheap, and
    repeats are harmless), from a generator seeded by (seed, step, rank), so a resumed run
    draws the same banks. ``size=0`` uses every caption every step.
    """

    def __init__(self, train_set: Dataset, size: int, seed: int, rank: int = 0):
        rows = torch.tensor(train_set.caption_rows)
        self.embeddings = train_set.embeddings[rows].half()
        self.image_ids = torch.tensor(train_set.image_ids)[train_set.caption_image_index]
        self.size, self.seed, self.rank = size, seed, rank
        self.device: torch.device | None = None

    def to(self, device: torch.device) -> CaptionBank:
        self.embeddings, self.image_ids, self.device = self.embeddings.to(device), self.image_ids.to(device), device
        return self

    def __len__(self) -> int:
        return len(self.image_ids)

    def draw(self, step: int, image_ids: torch.Tensor, text: torch.Tensor) -> Negatives:
        """This step's bank as extra negatives of the batch (``image_ids``, ``text``: its images and their captions)."""
        bank, bank_ids = self.rows(step)
        return Negatives(bank, bank_positives(image_ids.to(bank.device), text, bank_ids, bank))  # own captions: never negatives

    def rows(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(embeddings [K, D] fp16, their image ids [K]) for this step."""
        if self.size == 0 or self.size >= len(self):
            return self.embeddings, self.image_ids
        generator = torch.Generator(device=self.embeddings.device).manual_seed(self.seed * 1_000_003 + step * 7919 + self.rank)
        rows = torch.randint(len(self), (self.size,), generator=generator, device=self.embeddings.device)
        return self.embeddings[rows], self.image_ids[rows]
