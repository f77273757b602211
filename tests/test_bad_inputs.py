"""Bad input, table-driven: every row is what a user tried, and the message fragment they must see.

The troubleshooting table (docs/troubleshooting.md) is checked against the same rows (``readme``), so a
message cannot change without its row there changing too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import ROOT

from helpers.core import artifacts, config, env
from helpers.core.artifacts import ArtifactError
from helpers.core.config import ConfigError
from helpers.core.storage import atomic_torch_save, torch_load
from helpers.data import dataset, prepare
from helpers.data.coco import DataError, load_captions
from helpers.data.image_cache import ImageCache
from helpers.store import runs
from helpers.store.runlock import RunLock, RunLocked
from helpers.study import base_settings, report
from helpers.training import train


@dataclass
class Row:
    case: str  # what was tried
    run: Callable[[pytest.FixtureRequest, Path], Any]
    error: type[BaseException] | None  # None: a warning is expected instead
    match: str  # regex the message must contain
    readme: str  # what docs/troubleshooting.md shows for it


def _headless_train(*sets: str) -> Callable[[pytest.FixtureRequest, Path], Any]:
    def run(request: pytest.FixtureRequest, tmp: Path) -> Any:
        path = config.from_params(ARTIFACTS_DIR=str(tmp / "art")).save(tmp / "run.json")
        return train.main(["--config", str(path), "--no-progress", "--set", *sets])

    return run


def _params(**params: Any) -> Callable[[pytest.FixtureRequest, Path], Any]:
    return lambda request, tmp: config.from_params(params)


def _captions_json(edit: Callable[[dict], Any]) -> Callable[[pytest.FixtureRequest, Path], Any]:
    """Copy the synthetic dataset, rewrite its captions_train2014.json with ``edit``, load it."""

    def run(request: pytest.FixtureRequest, tmp: Path) -> Any:
        coco = Path(shutil.copytree(request.getfixturevalue("synthetic_coco"), tmp / "coco"))
        path = coco / "annotations" / "captions_train2014.json"
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))
        return load_captions(coco, "train2014")

    return run


def _duplicate_conflicting_image(data: dict) -> dict:
    data["images"].append({**data["images"][1], "id": data["images"][0]["id"]})
    return data


def _non_text_captions(data: dict) -> dict:
    for ann, bad in zip(data["annotations"][:3], (None, 12345, ["a", "list"])):
        ann["caption"] = bad
    return data


def _all_train_images_unreadable(request: pytest.FixtureRequest, tmp: Path) -> Any:
    coco = Path(shutil.copytree(request.getfixturevalue("synthetic_coco"), tmp / "coco"))
    for image in (coco / "train2014").iterdir():
        image.write_bytes(b"not a jpeg")
    cfg = config.from_params(DATA_SOURCE="local", DATA_DIR=str(coco), ARTIFACTS_DIR=str(tmp / "art"), IMAGE_SIZE=64)
    paths = env.resolve_paths(cfg, environment="local")
    data = prepare.scan(coco)
    with pytest.warns(UserWarning, match="unreadable"):
        return prepare.cache_images(cfg, paths, data, prepare.build_splits(cfg, paths, data), workers=1, progress=False)


def _copy_artifacts(paths: env.Paths, dest: Path) -> Path:
    """The shared workspace's artifacts with only the run "shared" (other tests' runs would cost seconds to copy)."""
    dest.mkdir(parents=True)
    for item in paths.artifacts_dir.iterdir():
        if item.is_file():
            shutil.copy2(item, dest / item.name)
    shutil.copytree(paths.image_cache_dir, dest / "image_cache")
    shutil.copytree(paths.runs_dir / "shared", dest / "runs" / "shared")
    return dest


def _copy_of_trained(request: pytest.FixtureRequest, tmp: Path) -> tuple[config.Config, env.Paths]:
    cfg, paths, _ = request.getfixturevalue("trained")
    art = _copy_artifacts(paths, tmp / "art")
    cfg = cfg.replace(artifacts_dir=str(art))
    return cfg, env.resolve_paths(cfg, environment="local")


def _truncated_caption_cache(request: pytest.FixtureRequest, tmp: Path) -> Any:
    _, paths = _copy_of_trained(request, tmp)
    path = paths.text_embeds_path("train")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return dataset.load_text_embeds(path)


def _bit_flipped_shard(request: pytest.FixtureRequest, tmp: Path) -> Any:
    _, paths = _copy_of_trained(request, tmp)
    cache = ImageCache(paths.image_cache_dir)
    image_id = cache.image_ids[0]
    _flip_bits_of(cache, image_id)
    return ImageCache(paths.image_cache_dir).load_uint8(image_id)


def _flip_bits_of(cache: ImageCache, image_id: int) -> Path:
    """Overwrite the middle of one cached JPEG with garbage, keeping the shard's size."""
    shard_no, offset, length, _ = cache._locs[image_id]
    shard = cache.cache_dir / cache.shard_files[shard_no]
    blob = bytearray(shard.read_bytes())
    blob[offset + 2 : offset + length] = bytes(length - 2)  # SOI kept, every marker after it zeroed
    shard.write_bytes(bytes(blob))
    return shard


def _deleted_shard(request: pytest.FixtureRequest, tmp: Path) -> Any:
    _, paths = _copy_of_trained(request, tmp)
    next(paths.image_cache_dir.glob("*.bin")).unlink()
    return ImageCache(paths.image_cache_dir)


def _second_training_while_one_runs(request: pytest.FixtureRequest, tmp: Path) -> Any:
    cfg, paths = _copy_of_trained(request, tmp)
    cfg = cfg.replace(run_name="busy", epochs=1, max_steps_per_epoch=1)
    with _lock_holder(paths.runs_dir / "busy"):
        return train.train(cfg, paths, progress=False, log=lambda m: None)


class _lock_holder:
    """Another process that takes the run lock and keeps it until stopped (or SIGKILLed)."""

    def __init__(self, run_dir: Path):
        code = (
            "import sys, time; from helpers.store.runlock import RunLock; "
            "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(300)"
        )
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)  # reaped: its PID no longer runs

    def __enter__(self) -> _lock_holder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()


ROWS = [
    Row("--set LR=NaN", _headless_train("LR=NaN"), ConfigError, r"LR=nan is out of range: 0 < LR < 1", "is out of range"),
    Row("--set LR=Infinity", _headless_train("LR=Infinity"), ConfigError, r"LR=inf is out of range", "is out of range"),
    Row("TEMPERATURE=NaN", _params(TEMPERATURE=float("nan")), ConfigError, r"TEMPERATURE=nan .*0.01 < T.*finite", "out of range"),
    Row("TEMPERATURE=1e-6", _params(TEMPERATURE=1e-6), ConfigError, r"TEMPERATURE=1e-06 is out of range: 0.01 < TEMP", "TEMPERATURE <= 1"),
    Row("TEMPERATURE=1e9", _params(TEMPERATURE=1e9), ConfigError, r"TEMPERATURE=1000000000.0 is out of range", "TEMPERATURE <= 1"),
    Row("--set BATCH_SIZE=1", _headless_train("BATCH_SIZE=1"), ConfigError, r"BATCH_SIZE=1 .*needs >= 2 pairs", "needs >= 2 pairs"),
    Row("VARIANT=head_ln+head_ln", _headless_train("VARIANT=head_ln+head_ln"), ConfigError, r"head_ln given twice", "given twice"),
    Row("QUERIES=[]", _params(QUERIES=[]), ConfigError, r"QUERIES=\[\] is out of range: at least one", "QUERIES=[]"),
    Row("EVAL_SPLIT='train'", _params(EVAL_SPLIT="train"), ConfigError, r"EVAL_SPLIT='train' is not one of", "is not one of"),
    Row("DATA_SOURCE='s3'", _params(DATA_SOURCE="s3"), ConfigError, r"DATA_SOURCE='s3' is not one of", "is not one of"),
    Row("train_text_embeds.pt truncated", _truncated_caption_cache, ArtifactError,
        r"train_text_embeds.pt \(the caption-embedding cache\) is damaged.*re-run 01_dataset_prep.ipynb \(caption cache\)", "is damaged"),
    Row("a cache shard deleted", _deleted_shard, OSError, r"missing or incomplete: re-run 01_dataset_prep.ipynb", "missing or incomplete"),
    Row("a cache shard bit-flipped (same size)", _bit_flipped_shard, ArtifactError,
        r"image-cache shard .*\.bin fails its checksum \(CRC32\).*Re-run 01_dataset_prep.ipynb", "fails its checksum"),
    Row("captions JSON is a list", _captions_json(lambda d: d["annotations"]), DataError, r"found a JSON list", "found a JSON list"),
    Row("duplicate image ids with different files", _captions_json(_duplicate_conflicting_image), DataError,
        r"appear more than once with different file names", "appear more than once"),
    Row("captions that are None, a number, a list", _captions_json(_non_text_captions), None,
        r"dropped 3 caption\(s\): non text caption \(annotation ids", "non text caption"),
    Row("every train image unreadable", _all_train_images_unreadable, DataError,
        r"None of the \d+ train2014 images under .*train2014 could be decoded.*unreadable", "could be decoded"),
    Row("two trainings of one run folder at once", _second_training_while_one_runs, RunLocked, r"busy is in use: training by", "is in use"),
    Row("BASE_RUN names no finished run", lambda request, tmp: base_settings.from_notebook({"ARTIFACTS_DIR": str(tmp), "BASE_RUN": "mine"}),
        FileNotFoundError, r"BASE_RUN='mine' is not a finished run in .*Set BASE_RUN = None", "is not a finished run"),
]  # fmt: skip


@pytest.mark.parametrize("row", ROWS, ids=[r.case for r in ROWS])
def test_bad_input_gives_the_expected_message(row: Row, request, tmp_path):
    if row.error is None:
        with pytest.warns(UserWarning, match=row.match):
            row.run(request, tmp_path)
    else:
        with pytest.raises(row.error, match=row.match):
            row.run(request, tmp_path)


@pytest.mark.parametrize("row", ROWS, ids=[r.case for r in ROWS])
def test_readme_troubleshooting_covers_the_row(row: Row):
    table = (ROOT / "docs" / "troubleshooting.md").read_text()
    assert row.readme in table, f"docs/troubleshooting.md lacks a row for {row.case!r} (expected {row.readme!r})"


def test_papermill_parameter_is_validated_before_any_work(tmp_path):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError, match="LR=nan is out of range"):
        pm.execute_notebook(
            str(ROOT / "02_train_clip.ipynb"),
            str(tmp_path / "out.ipynb"),
            parameters={"LR": float("nan"), "ARTIFACTS_DIR": str(tmp_path / "art"), "LIVE_PLOT": False},
            cwd=str(ROOT),
            progress_bar=False,
            kernel_name="python3",
        )
    assert not (tmp_path / "art" / "runs").exists()  # refused before any training folder was made


# ----------------------------------------------------------------------------- damaged artifacts
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])


def _zero(path: Path) -> None:
    path.write_bytes(b"")


def _wrong_shape(path: Path) -> None:
    if path.suffix == ".json":
        path.write_text(json.dumps([1, 2, 3]))
        return
    state = torch_load(path)
    if "embeddings" in state:
        state["embeddings"] = state["embeddings"][:, :3].flatten()  # 1-D: not a [captions, dim] matrix
    else:
        name = next(k for k, v in state["model"].items() if v.ndim == 2)
        state["model"][name] = torch.zeros(3, 3)  # a weight of the wrong shape
    atomic_torch_save(state, path)


READERS: dict[str, tuple[str, Callable[[env.Paths, Path], Any]]] = {
    # kind: (file, the real reader a later notebook uses)
    "text_embeds": ("val_text_embeds.pt", lambda p, run: dataset.load_text_embeds(p.text_embeds_path("val"))),
    "splits": ("splits.json", lambda p, run: prepare.load_splits(p)),
    "manifest": ("image_cache/manifest.json", lambda p, run: ImageCache(p.image_cache_dir)),
    "checkpoint": ("runs/shared/checkpoint.pt", lambda p, run: runs.load_trained(run / "checkpoint.pt")),
    "best": ("runs/shared/best.pt", lambda p, run: runs.load_trained(run / "best.pt")),
    "metrics": ("runs/shared/metrics.json", lambda p, run: artifacts.load_json(run / "metrics.json", "metrics")),
    "eval": ("runs/shared/eval_test.json", lambda p, run: artifacts.load_json(run / "eval_test.json", "eval")),
}


@pytest.fixture(scope="module")
def evaluated(trained):
    from helpers.evaluation import evaluate

    cfg, paths, _ = trained
    evaluate.evaluate(cfg.replace(run_name="shared", eval_split="test"), paths, progress=False)
    return trained


@pytest.mark.parametrize("damage", [_truncate, _zero, _wrong_shape], ids=["truncated", "zero bytes", "wrong shape"])
@pytest.mark.parametrize("kind", list(READERS))
def test_every_damaged_artifact_names_the_file_and_the_notebook(evaluated, tmp_path, kind, damage):
    cfg, paths, _ = evaluated
    art = _copy_artifacts(paths, tmp_path / "art")
    copy = env.resolve_paths(cfg.replace(artifacts_dir=str(art)), environment="local")
    file, read = READERS[kind]
    read(copy, copy.runs_dir / "shared")  # intact: reads fine
    damage(art / file)
    with pytest.raises(ArtifactError) as info:
        read(copy, copy.runs_dir / "shared")
    message = str(info.value)
    assert Path(file).name in message and "is damaged" in message
    assert artifacts.KINDS[kind].what in message and artifacts.KINDS[kind].rebuild in message


@pytest.mark.parametrize("damage", [_truncate, _zero, _wrong_shape], ids=["truncated", "zero bytes", "wrong shape"])
def test_damaged_history_is_rewritten_from_the_checkpoint(evaluated, tmp_path, damage):
    _, paths, result = evaluated
    run = Path(shutil.copytree(paths.runs_dir / "shared", tmp_path / "shared"))
    damage(run / "history.json")
    with pytest.warns(UserWarning, match="damaged: rewritten from checkpoint.pt"):
        history = runs.load_history(run)
    assert history["epochs"] == result.history and json.loads((run / "history.json").read_text())["epochs"] == result.history


def test_report_leaves_out_a_damaged_eval_file_and_says_why(evaluated, tmp_path):
    _, paths, _ = evaluated
    art = _copy_artifacts(paths, tmp_path / "art")
    _truncate(art / "runs" / "shared" / "eval_test.json")
    text = report.build_report(art, run_name="shared").path.read_text()
    assert "_Left out of this report:" in text and "eval_test.json (the evaluation results) is damaged" in text


# ----------------------------------------------------------------------------- run lock, variants, cache integrity
def test_lock_of_a_killed_holder_is_taken_over(tmp_path):
    holder = _lock_holder(tmp_path / "run")
    with pytest.raises(RunLocked, match=f"by PID {holder.proc.pid}"):
        RunLock(tmp_path / "run").acquire()
    holder.kill()
    messages: list[str] = []
    lock = RunLock(tmp_path / "run", log=messages.append).acquire()
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert messages and f"process {holder.proc.pid} on this host is no longer running" in messages[0]
    lock.release()
    assert not lock.path.exists()


def test_lock_of_another_host_is_taken_over_only_when_its_heartbeat_stops(tmp_path):
    from helpers.store import runlock

    path = tmp_path / "run" / runs.LOCK
    path.parent.mkdir()
    path.write_text(json.dumps({"pid": 1, "host": "another-colab-vm", "started": "earlier"}))
    with pytest.raises(RunLocked, match="another-colab-vm"):
        RunLock(tmp_path / "run").acquire()
    old = path.stat().st_mtime - runlock.STALE_AFTER_SECONDS - 5
    os.utime(path, (old, old))
    RunLock(tmp_path / "run", log=lambda m: None).acquire().release()


def test_the_same_variant_in_any_spelling_resumes_the_same_run(workspace):
    cfg, paths = workspace
    cfg = cfg.replace(run_name=None, seed=21, epochs=1, max_steps_per_epoch=2)
    first = train.train(cfg.replace(variant="augment+head_ln"), paths, progress=False, log=lambda m: None)
    again = train.train(cfg.replace(variant="head_ln+augment", epochs=2), paths, progress=False, log=lambda m: None)
    assert again.run_dir == first.run_dir and again.resumed_from_epoch == 1
    assert torch_load(first.run_dir / "checkpoint.pt")["arch"]["variant"] == "head_ln+augment"


def test_a_checkpoint_with_an_old_spelling_still_resumes(workspace):
    cfg, paths = workspace
    cfg = cfg.replace(run_name="old-spelling", variant="head_ln+augment", epochs=1, max_steps_per_epoch=2)
    first = train.train(cfg, paths, progress=False, log=lambda m: None)
    state = torch_load(first.run_dir / "checkpoint.pt")
    state["arch"]["variant"] = "augment+head_ln"  # as an earlier version stored it
    atomic_torch_save(state, first.run_dir / "checkpoint.pt")
    assert train.train(cfg.replace(epochs=2), paths, progress=False, log=lambda m: None).resumed_from_epoch == 1


def _prepare(cfg: config.Config, coco: Path, **changes: Any) -> tuple[env.Paths, dict]:
    cfg = cfg.replace(**changes)
    paths = env.resolve_paths(cfg, environment="local")
    data = prepare.scan(coco)
    manifest = prepare.cache_images(cfg, paths, data, prepare.build_splits(cfg, paths, data), workers=1, progress=False)
    return paths, manifest


def test_notebook_01_rebuilds_a_bit_flipped_shard(prepared, tmp_path):
    cfg = prepared["cfg"].replace(artifacts_dir=str(tmp_path / "art"), cache_dir=str(tmp_path / "local"))
    coco = Path(cfg.data_dir)
    paths, _ = _prepare(cfg, coco)
    cache = ImageCache(paths.image_cache_dir)
    image_id = cache.image_ids[0]
    shard = _flip_bits_of(cache, image_id)
    size = shard.stat().st_size
    _prepare(cfg, coco)  # the up-to-date check hashes every shard: this one is rebuilt
    assert shard.stat().st_size == size
    assert ImageCache(paths.image_cache_dir).load_uint8(image_id).shape[0] == 3
    assert ImageCache(paths.cache_dir).load_uint8(image_id).shape[0] == 3  # and the local copy replaced


def test_a_changed_shard_size_keeps_the_cache_layout(prepared, tmp_path):
    cfg = prepared["cfg"].replace(artifacts_dir=str(tmp_path / "art"), cache_dir=str(tmp_path / "local"))
    coco = Path(cfg.data_dir)
    paths, manifest = _prepare(cfg, coco, shard_size=50)
    shards = sorted(manifest["parts"]["train2014"]["shards"])
    assert len(shards) >= 2
    (paths.image_cache_dir / f"{shards[1]}.bin").unlink()
    paths, rebuilt = _prepare(cfg, coco, shard_size=30)  # SHARD_SIZE changed after the cache was built
    assert sorted(rebuilt["parts"]["train2014"]["shards"]) == shards and rebuilt["parts"]["train2014"]["shard_size"] == 50
    cache = ImageCache(paths.image_cache_dir)
    assert len(cache) == sum(s["count"] for p in manifest["parts"].values() for s in p["shards"].values())
    assert np.all([cache.load_uint8(i).shape[0] == 3 for i in cache.image_ids[::25]])


def test_a_second_notebook_01_on_the_same_artifacts_dir_names_the_first_and_writes_nothing(prepared):
    """Two 01s at once used to remove each other's temporary files (a raw FileNotFoundError): the second now stops at
    its first long step, naming the first, and the first's lock is released when it ends."""
    import socket
    import subprocess
    import sys

    from helpers.data import prepare

    cfg, paths, data, splits = prepared["cfg"], prepared["paths"], prepared["data"], prepared["splits"]
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    lock = paths.artifacts_dir / prepare.PREPARE_LOCK
    try:
        lock.write_text(json.dumps({"pid": first.pid, "host": socket.gethostname(), "purpose": "notebook 01 (caching images)",
                                    "started": "a minute ago"}))  # fmt: skip
        before = {p: p.stat().st_mtime_ns for p in paths.artifacts_dir.rglob("*") if p.is_file() and p != lock}
        for step in (prepare.cache_images, prepare.cache_captions):
            with pytest.raises(RunLocked, match=rf"in use: notebook 01 \(caching images\) by PID {first.pid} .*Wait for that notebook 01"):
                step(cfg, paths, data, splits, progress=False)
        assert {p: p.stat().st_mtime_ns for p in paths.artifacts_dir.rglob("*") if p.is_file() and p != lock} == before
    finally:
        first.kill()
        first.wait()
        lock.unlink(missing_ok=True)
    prepare.cache_captions(cfg, paths, data, splits, device="cpu", progress=False)  # alone again: it runs (up to date)
    assert not lock.exists()  # released at the end
