"""Learning curves: one figure for the live panel during training and for ``loss_curves.png``.

Four panels: train (per-step, smoothed, and per-epoch) and validation loss; in-batch
top-1 accuracy both ways beside validation Recall@1; the learning-rate schedule; the
temperature. A resolution schedule's size changes are marked on every panel. The live panel
redraws in place in Jupyter/Colab and is switched off for headless runs (LIVE_PLOT=False).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..core.figures import save_figure


def _smooth(values: list[float], k: int = 5) -> list[float]:
    out, acc = [], []
    for v in values:
        acc = (acc + [v])[-k:]
        out.append(sum(acc) / len(acc))
    return out


def training_curves_figure(history: list[dict[str, Any]], steps: list[dict[str, float]], title: str = "") -> Any:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax_loss, ax_acc, ax_lr, ax_t = axes.flat
    xs = [s["epoch"] for s in steps]
    epochs = [r["epoch"] for r in history]
    batch = history[-1].get("batch_size") if history else None
    among = f"1 of {batch} in the batch" if batch else "1 of the batch"
    if steps:
        ax_loss.plot(xs, _smooth([s["loss"] for s in steps]), color="tab:blue", alpha=0.35, label="train (steps, smoothed)")
        for key, colour, direction in (("i2t_acc", "tab:blue", "image→text"), ("t2i_acc", "tab:orange", "text→image")):
            percent = _smooth([100 * s[key] for s in steps])
            ax_acc.plot(xs, percent, color=colour, alpha=0.5, label=f"in-batch top-1 {direction} ({among})")
        ax_lr.plot(xs, [s["lr"] for s in steps], color="tab:green")
        ax_t.plot(xs, [s["temperature"] for s in steps], color="tab:red")
    if history:
        ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", color="tab:blue", label="train (epoch mean)")
        ax_loss.plot(epochs, [r["val_loss"] for r in history], "s-", color="tab:purple", label="validation")
        for key, colour, label in (("val_i2t_R@1", "tab:blue", "image→text (all val captions)"),
                                   ("val_t2i_R@1", "tab:orange", "text→image (all val images)")):  # fmt: skip
            ax_acc.plot(epochs, [100 * r[key] for r in history], "s--", color=colour, label=f"val R@1 {label}")
    _mark_training_sizes(axes, history)
    ax_loss.set(title="Symmetric InfoNCE loss", xlabel="epoch", ylabel="loss")
    ax_acc.set(title="Retrieval: in-batch top-1 and val R@1", xlabel="epoch", ylabel="%", ylim=(0, 100))
    ax_lr.set(title="Learning rate", xlabel="epoch", ylabel="lr")
    ax_t.set(title="Temperature τ (1 / logit scale)", xlabel="epoch", ylabel="τ")
    for ax, key in ((ax_lr, "lr"), (ax_t, "temperature")):  # from zero: a constant reads as flat at its value, not as noise
        top = max((s[key] for s in steps), default=0.0)
        if top > 0:
            ax.set_ylim(0, 1.15 * top)
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    for ax in (ax_loss, ax_acc):
        if ax.lines:
            ax.legend(fontsize=8)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _mark_training_sizes(axes: Any, history: list[dict[str, Any]]) -> None:
    """A resolution schedule's spans (TRAIN_SIZES): a dotted line where the training size changes, its size beside it."""
    sizes = [r.get("train_size") for r in history]
    if len(set(sizes) - {None}) < 2:
        return  # one size throughout: nothing to mark
    for i, size in enumerate(sizes):
        if size is None or (i and sizes[i - 1] == size):
            continue
        start = history[i]["epoch"] - 1  # the span starts where the previous epoch ended
        for ax in axes.flat:
            ax.axvline(start, color="grey", linestyle=":", linewidth=1)
        axes.flat[0].annotate(f"train {size} px", (start, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                              textcoords="offset points", fontsize=7, color="grey")  # fmt: skip


def save_training_curves(history: list[dict[str, Any]], steps: list[dict[str, float]], path: str | Path, title: str = "") -> Path:
    import matplotlib.pyplot as plt

    fig = training_curves_figure(history, steps, title)
    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)


def in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ in ("ZMQInteractiveShell", "Shell")


class LivePanel:
    """Redraws the learning curves in place, at most every ``every_s`` seconds."""

    def __init__(self, title: str = "", every_s: float = 5.0):
        from IPython.display import display

        self.title, self.every_s, self._last, self.drawn = title, every_s, 0.0, False
        self.handle = display("training starts…", display_id=True)

    def update(self, trainer: Any, force: bool = False) -> None:
        import matplotlib.pyplot as plt

        if not force and time.monotonic() - self._last < self.every_s:
            return
        self._last = time.monotonic()
        fig = training_curves_figure(trainer.history, trainer.step_log, self.title)
        self.handle.update(fig)
        self.drawn = True
        plt.close(fig)
