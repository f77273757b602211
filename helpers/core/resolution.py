"""The resolution schedule: the image tower trains at a lower size in its early epochs, at the cached size at the end.

Why: a ResNet's step costs about the square of the image side, so an epoch at 160 px does about half the work of
one at 224 px (a compute-bound GPU such as a T4 runs it close to that much faster). FFCV's ResNet-50 configurations
train at 160-192 px and evaluate at 224-256 px; Touvron et al., "Fixing the train-test resolution discrepancy"
(NeurIPS 2019), is the reference for testing above the training size. The last epochs here train at the cached
size again, so the model meets the evaluation size before it is selected and scored.

``TRAIN_SIZES`` lists the size of each early epoch (``[160, 160, 192]``: epochs 1-2 at 160 px, epoch 3 at 192 px);
every later epoch trains at ``IMAGE_SIZE``. The size is a function of the epoch alone, so a resumed run trains each
epoch at the size an uninterrupted run would. Lower sizes are made on the device from the cached images (one
resize per batch, no second cache). Validation, evaluation and the explorer always see the cached size.
"""

from __future__ import annotations

from collections.abc import Sequence

SIZE_STEP = 8  # every schedule size is a multiple of 8 pixels (160 and 192 for the lab's 224)
MIN_TRAIN_SIZE = 32  # a ResNet downsamples 32x: below 32 px its last feature map is empty
LOW_FRACTION, MID_FRACTION = 0.6, 0.2  # the `lowres` variant: 60% of the epochs at 5/7 of the size, 20% at 6/7


def size_at(epoch: int, sizes: Sequence[int], image_size: int) -> int:
    """The training image size of ``epoch`` (0-based): ``sizes[epoch]``, or the cached size after the schedule."""
    return sizes[epoch] if epoch < len(sizes) else image_size


def schedule_problem(sizes: Sequence[int], image_size: int) -> str | None:
    """Why ``sizes`` cannot be a schedule for images cached at ``image_size`` (None: it can)."""
    for size in sizes:
        if size % SIZE_STEP or not MIN_TRAIN_SIZE <= size <= image_size:
            return (
                f"each size a multiple of {SIZE_STEP} between {MIN_TRAIN_SIZE} and IMAGE_SIZE={image_size} "
                f"(e.g. [160, 160, 192] for 224 px images); got {size}"
            )
    return None


def ramp(epochs: int, image_size: int) -> list[int]:
    """The `lowres` variant's schedule for a run of ``epochs``: the first 60% of the epochs at 5/7 of the cached size
    (160 px for 224), the next 20% at 6/7 (192 px), the rest (at least one epoch) at the cached size."""
    full = max(1, round((1 - LOW_FRACTION - MID_FRACTION) * epochs))
    mid = min(round(MID_FRACTION * epochs), epochs - full)
    low = epochs - full - mid
    return [_rounded(image_size * 5 / 7)] * low + [_rounded(image_size * 6 / 7)] * mid


def _rounded(size: float) -> int:
    return max(MIN_TRAIN_SIZE, SIZE_STEP * round(size / SIZE_STEP))


def work_fraction(sizes: Sequence[int], image_size: int, epochs: int) -> float:
    """The run's pixels against the same epochs all at ``image_size`` (0.65 for the lab's 10-epoch `lowres`): what the
    schedule saves on a compute-bound GPU, where a step's time follows its pixels."""
    return sum((size_at(e, sizes, image_size) / image_size) ** 2 for e in range(epochs)) / epochs


def describe(sizes: Sequence[int], image_size: int, epochs: int) -> str:
    """``"160 px for epochs 1-6, 192 px for 7-8, 224 px for 9-10"`` (a person reads it in the report and notebooks)."""
    return describe_epochs([size_at(epoch, sizes, image_size) for epoch in range(epochs)])


def describe_epochs(per_epoch: Sequence[int]) -> str:
    """The words for the size each epoch trained at, in order (``history.json``'s ``train_size``): a schedule whose every
    epoch is below the cached size is said as such, never as the cached size."""
    spans: list[tuple[int, int, int]] = []  # (size, first epoch, last epoch), 1-based
    for epoch, size in enumerate(per_epoch):
        if spans and spans[-1][0] == size:
            spans[-1] = (size, spans[-1][1], epoch + 1)
        else:
            spans.append((size, epoch + 1, epoch + 1))
    if len(spans) == 1:
        return f"{spans[0][0]} px for every epoch"
    return ", ".join(f"{size} px for epoch{'s' if a != b else ''} {a if a == b else f'{a}-{b}'}" for size, a, b in spans)
