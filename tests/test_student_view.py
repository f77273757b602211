"""What a student reads: one unit for Recall (percent) in logs, tables and curves, and curves whose x axes agree."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt

from helpers.store import runs
from helpers.store.curves import training_curves_figure
from helpers.training import train


def test_recall_is_read_in_percent_everywhere_and_the_step_curve_ends_where_the_val_points_do(workspace):
    cfg, paths = workspace
    logs: list[str] = []
    result = train.train(cfg.replace(run_name="units", epochs=2, max_steps_per_epoch=3), paths, progress=False, log=logs.append)
    last = result.history[-1]
    epoch_line = next(line for line in logs if line.startswith("epoch 2/2"))
    assert f"rsum {100 * last['val_rsum']:.1f} of 600," in epoch_line
    assert f"image→text {100 * last['val_i2t_R@1']:.1f}%" in epoch_line and "i2t" not in epoch_line
    table = runs.summary_markdown(result)
    assert "out of 600" in table and "(%)" not in table and f"| {100 * last['val_rsum']:.1f} |" in table
    for direction in ("I→T", "T→I"):  # a summary that shows any Recall@K shows all three, both ways
        assert all(f"| {direction} R@{k} |" in table for k in (1, 5, 10))
    assert f"| {100 * last['val_t2i_R@10']:.1f} |" in table and " min of training" not in table
    assert not re.search(r"\| 0\.\d{3} \|", table)  # no fraction left among the Recall columns
    steps = runs.load_history(result.run)["steps"]
    assert steps[-1]["epoch"] == len(result.history)  # the last step of epoch 2 sits at x = 2.0, beside its val point
    fig = training_curves_figure(result.history, steps)
    acc = fig.axes[1]
    assert acc.get_ylabel() == "%" and acc.get_ylim() == (0.0, 100.0)
    labels = [line.get_label() for line in acc.lines]
    assert f"in-batch top-1 image→text (1 of {last['batch_size']} in the batch)" in labels
    assert "val R@1 text→image (all val images)" in labels
    assert max(max(line.get_ydata()) for line in acc.lines) > 1  # plotted in percent, not as fractions
    plt.close(fig)
