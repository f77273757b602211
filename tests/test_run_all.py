"""The headless runner: parameters, progress lines, and failures that name the notebook and cell."""

import logging
import re
import time

import pytest

from helpers import run_all
from helpers.core import config
from helpers.core.config import ConfigError


def test_failure_names_the_notebook_and_the_cell(tmp_path):
    lines = []
    params = {"DATA_SOURCE": "local", "DATA_DIR": str(tmp_path / "no-such-coco"), "LIVE_PLOT": False}
    with pytest.raises(run_all.NotebookFailed, match=r"01_dataset_prep.ipynb failed in cell \d+ .*DataError: DATA_DIR=.*does not exist"):
        run_all.run_notebooks(params, tmp_path / "art", ("01_dataset_prep.ipynb", "02_train_clip.ipynb"), log=lines.append)
    assert lines == ["[1/2] 01_dataset_prep.ipynb ..."]  # notebook 02 never started
    assert (tmp_path / "art" / "executed" / "01_dataset_prep.ipynb").exists()  # kept for inspection


def test_bad_parameters_fail_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="EPOCS"):
        run_all.main(["--artifacts", str(tmp_path / "a"), "--set", "EPOCS=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        run_all.main(["--set", "EPOCHS"])
    assert not (tmp_path / "a").exists()


def test_set_values_are_json_or_strings():
    assert config.parse_sets(["epochs=3", 'VARIANTS=["head_ln"]', "DATA_SOURCE=coco", "IMAGE_WEIGHTS=null"]) == {
        "EPOCHS": 3,
        "VARIANTS": ["head_ln"],
        "DATA_SOURCE": "coco",
        "IMAGE_WEIGHTS": None,
    }


def test_each_notebook_prints_the_two_progress_lines_the_readme_shows(tmp_path):
    import re

    from conftest import ROOT

    lines = []
    run_all.run_notebooks({"LIVE_PLOT": False}, tmp_path / "art", ("05_report.ipynb",), log=lines.append)
    assert len(lines) == 2
    assert lines[0] == "[1/1] 05_report.ipynb ..."
    assert re.fullmatch(r"\[1/1\] 05_report.ipynb done in \d+:\d\d -> executed/05_report.ipynb", lines[1])  # m:ss, relative
    readme = (ROOT / "docs" / "running.md").read_text()
    assert "prints two\nprogress lines, `[2/5] 02_train_clip.ipynb ...`" in readme
    assert "done in 1:35 -> executed/02_train_clip.ipynb" in readme


def test_caption_caching_leaves_no_parts_folder_behind(prepared):
    assert not (prepared["paths"].artifacts_dir / "text_embeds_parts").exists()  # docs/artifacts.md: "the folder is removed at the end"


def test_the_relay_passes_on_what_a_notebook_prints_and_a_line_for_each_silence():
    """What a notebook prints comes through as it runs (indented); a cell that stays quiet for a heartbeat gets a line
    that names the cell, its section heading and the time elapsed, so a long training never looks hung."""
    from conftest import ROOT

    lines = []
    titles = run_all.cell_titles(ROOT / "02_train_clip.ipynb")
    train_cell = next(i for i, t in enumerate(titles, 1) if t.startswith("Train"))
    with run_all.Relay("02_train_clip.ipynb", titles, out=lines.append, heartbeat=0.3) as relay:
        logging.getLogger("papermill").info(f"Executing Cell {train_cell}-----------")
        relay.write("epoch 1/4 ")
        relay.write("loss 3.2\nval rsum")
        time.sleep(1.6)
    assert lines[0] == "    | epoch 1/4 loss 3.2" and lines[-1] == "    | val rsum"  # a partial line is kept until the end
    beats = lines[1:-1]
    assert beats and all(
        re.fullmatch(rf"    … 02_train_clip.ipynb: cell {train_cell}/{len(titles)} \(Train.*\), 0:0\d elapsed", b) for b in beats
    ), beats
    assert not logging.getLogger("papermill").handlers  # the relay leaves papermill's logger as it found it
    relay.acquire()  # what logging.shutdown does to every handler at exit: flush under the handler's lock, no deadlock
    try:
        relay.flush()
    finally:
        relay.release()


def test_an_exported_notebook_keeps_each_bars_final_state_once(tmp_path):
    """The kernel sends every redraw of a bar as its own output: merged and drawn as a terminal would, the bar reads
    100% once, a bar that cleared itself is gone, and the prints and displays around them keep their order."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    cell = new_code_cell("work()")
    cell.outputs = [
        new_output("stream", name="stdout", text="starting\n"),
        new_output("stream", name="stderr", text="\rCaching:   0%|          | 0/600"),
        new_output("stream", name="stderr", text="\rCaching: 100%|##########| 600/600\n"),
        new_output("display_data", data={"text/plain": "a table"}),
        new_output("stream", name="stderr", text="\repoch 1/4:  50%|#####     | 6/12"),
        new_output("stream", name="stderr", text="\r                                  \r"),
        new_output("stream", name="stdout", text="epoch 1/4 done\n"),
    ]
    path = tmp_path / "executed.ipynb"
    nbformat.write(new_notebook(cells=[cell]), path)
    run_all.settle_streams(path)
    outputs = nbformat.read(path, as_version=4).cells[0].outputs
    assert [(o.output_type, o.get("name"), o.get("text")) for o in outputs] == [
        ("stream", "stdout", "starting\n"),
        ("stream", "stderr", "Caching: 100%|##########| 600/600\n"),
        ("display_data", None, None),
        ("stream", "stdout", "epoch 1/4 done\n"),
    ]
