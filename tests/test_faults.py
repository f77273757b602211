"""Fault injection: kills at named moments, flaky storage, a full disk, leaked secrets, unsafe calls."""

import ast
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SLOWDOWN
from httpserver import LocalServer

from helpers.core import env, faults, storage
from helpers.core.storage import read_json, torch_load
from helpers.data import download, image_cache
from helpers.store import runs
from helpers.training import train

KILL_POINTS = [
    "train_step:3",  # in the middle of epoch 1: nothing saved yet
    "train_step:6",  # in the middle of epoch 2
    "validation:2",  # during epoch 2's validation
    "write:checkpoint.pt:2",  # half-way through writing epoch 2's checkpoint
    "after_staged_best:1",  # epoch 1's best weights staged (best.next.pt), its checkpoint not yet written
    "after_checkpoint:2",  # checkpoint of epoch 2 on disk, history.json not yet updated
    "write:history.json:3",  # half-way through the last history write
]


def _train_cmd(cfg_file):
    return [sys.executable, "-m", "helpers.train", "--config", str(cfg_file), "--no-progress"]


def _env(**extra):
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


@pytest.fixture(scope="module")
def reference(workspace):
    cfg, paths = workspace
    cfg = cfg.replace(epochs=3, max_steps_per_epoch=4, run_name="fault-reference")
    return train.train(cfg, paths, progress=False, log=lambda m: None)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_training_killed_at_any_moment_resumes_to_the_same_result(workspace, reference, tmp_path, point):
    cfg, paths = workspace
    name = "fault-" + point.replace(":", "-").replace(".", "-")
    cfg_file = cfg.replace(epochs=3, max_steps_per_epoch=4, run_name=name).save(tmp_path / "cfg.json")
    killed = subprocess.run(
        _train_cmd(cfg_file), cwd=ROOT, env=_env(**{faults.ENV: point}), capture_output=True, text=True, timeout=600 * SLOWDOWN
    )
    assert killed.returncode == -9, f"expected SIGKILL at {point}: {killed.stderr[-2000:]}"
    run = paths.runs_dir / name
    assert not (run / "metrics.json").exists()
    done = subprocess.run(_train_cmd(cfg_file), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600 * SLOWDOWN)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(run.glob(".*.tmp"))  # the killed write's temporary file was cleaned up, never used
    history = read_json(run / "history.json")["epochs"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for a, b in zip(reference.history, history):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4 and abs(a["val_rsum"] - b["val_rsum"]) < 1e-4
    ref_w, got_w = torch_load(reference.run_dir / "checkpoint.pt")["model"], torch_load(run / "checkpoint.pt")["model"]
    assert max((ref_w[k].float() - got_w[k].float()).abs().max().item() for k in ref_w) < 1e-4


@pytest.mark.parametrize("failing", ["best.next.pt", "checkpoint.pt", "rename", "history.json", "metrics.json"])
def test_a_continuation_on_a_full_disk_keeps_the_last_finished_result(workspace, monkeypatch, failing):
    """A finished run continued to more EPOCHS on a disk that fills up at each write of the end of an epoch in turn: the
    error says the disk is full, and going back to the old EPOCHS gives a finished run whose summary, best.pt and
    checkpoint agree; when the new epoch's checkpoint never landed, that is the old result, byte for byte."""
    from helpers.core import storage
    from helpers.training import train as train_module

    def last(history):  # every epoch is the best: each end of epoch writes best.pt (the riskiest path)
        return history[-1]

    monkeypatch.setattr(train_module, "best_record", last)
    monkeypatch.setattr(runs, "best_record", last)
    cfg, paths = workspace
    base = cfg.replace(epochs=1, max_steps_per_epoch=2, run_name=f"disk-{failing.replace('.', '-')}")
    run = runs.RunDir(paths.runs_dir / base.run_name)
    train.train(base, paths, progress=False, log=lambda m: None)
    before = runs.weights_sha256(run.best)

    real_write, real_replace = storage._atomic_write, os.replace

    def full_disk(path, write):
        if path.name == failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, write)

    def failing_rename(src, dst, *args, **kwargs):
        if Path(src).name == "best.next.pt":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *args, **kwargs)

    if failing == "rename":
        monkeypatch.setattr(storage.os, "replace", failing_rename)
    else:
        monkeypatch.setattr(storage, "_atomic_write", full_disk)
    with pytest.raises(OSError, match="No space left"):
        train.train(base.replace(epochs=2), paths, progress=False, log=lambda m: None)
    monkeypatch.setattr(storage.os, "replace", real_replace)
    monkeypatch.setattr(storage, "_atomic_write", real_write)

    again = train.train(base, paths, progress=False, log=lambda m: None)  # back to the old EPOCHS
    metrics = runs.load_metrics(run)  # sealed and describing the current best.pt
    saved = torch_load(run.checkpoint)
    runs.check_own_best(run, saved)  # best.pt is the checkpoint's best epoch
    assert metrics["best_epoch"] == torch_load(run.best)["epoch"] == saved["epoch"] and not run.best_next.exists()
    if failing in ("best.next.pt", "checkpoint.pt"):  # epoch 2 never counted: the finished result as it was
        assert runs.weights_sha256(run.best) == before and metrics["epochs"] == 1 and saved["epoch"] == 1
    assert again.metrics is not None


def _cache_job(folder, out, kill=None):
    code = (
        "import sys; from pathlib import Path; from helpers.data import image_cache as ic; "
        f"files = {{int(p.stem.split('_')[-1]): p.name for p in Path({str(folder)!r}).iterdir()}}; "
        f"part = ic.CachePart('val2014', Path({str(folder)!r}), files); "
        f"ic.build_image_cache([part], {str(out)!r}, size=64, shard_size=20, workers=1, progress=False)"
    )
    extra = {faults.ENV: kill} if kill else {}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(**extra), capture_output=True, text=True, timeout=300 * SLOWDOWN)


@pytest.mark.parametrize("kill", ["image_cache_shard:1", "write:val2014-00001.bin"])
def test_image_cache_build_resumes_after_kill(synthetic_coco, tmp_path, kill):
    out = tmp_path / "cache"
    assert _cache_job(synthetic_coco / "val2014", out, kill).returncode == -9
    first = (out / "val2014-00000.bin").stat().st_mtime_ns
    done = _cache_job(synthetic_coco / "val2014", out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "val2014-00000.bin").stat().st_mtime_ns == first  # the finished shard was not rebuilt
    assert len(image_cache.ImageCache(out)) == 60 and not list(out.glob(".*.tmp*"))


def test_caption_cache_resumes_after_kill(prepared, tmp_path):
    cfg = prepared["cfg"].replace(artifacts_dir=str(tmp_path / "art"), caption_part_size=100)
    cfg_file = cfg.save(tmp_path / "cfg.json")
    code = (
        "from helpers.core import config, env; from helpers.data import prepare; "
        f"cfg = config.load({str(cfg_file)!r}); paths = env.resolve_paths(cfg, environment='local'); "
        "data = prepare.scan(paths.data_dir); splits = prepare.build_splits(cfg, paths, data); "
        "print(prepare.cache_captions(cfg, paths, data, splits, device='cpu', progress=False))"
    )
    killed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=_env(**{faults.ENV: "caption_part:2"}), capture_output=True, text=True
    )
    assert killed.returncode == -9
    assert not (tmp_path / "art" / "train_text_embeds.pt").exists()
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300 * SLOWDOWN)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "'parts_reused': 2" in done.stdout  # train: parts 0 and 1 were finished before the kill
    fresh = torch_load(prepared["paths"].text_embeds_path("train"))
    resumed = torch_load(tmp_path / "art" / "train_text_embeds.pt")
    assert torch.equal(fresh["caption_ids"], resumed["caption_ids"])
    assert (fresh["embeddings"].float() - resumed["embeddings"].float()).abs().max() < 2e-3
    assert not (tmp_path / "art" / "text_embeds_parts" / "train").exists()


class FlakyFilesystem:
    """Fails os.replace into ``root`` with Errno 5 (Drive's I/O error) ``failures`` times per target."""

    def __init__(self, monkeypatch, root: Path, failures: int):
        self.root, self.failures, self.seen = str(root), failures, {}
        real = os.replace

        def replace(src, dst, *a, **k):
            if str(dst).startswith(self.root):
                n = self.seen.get(str(dst), 0)
                self.seen[str(dst)] = n + 1
                if n < self.failures:
                    raise OSError(errno.EIO, "Input/output error (injected)")
            return real(src, dst, *a, **k)

        monkeypatch.setattr(storage.os, "replace", replace)
        monkeypatch.setattr(storage.time, "sleep", lambda s: None)


def test_transient_drive_errors_are_retried_and_checkpoints_staged_locally(workspace, tmp_path, monkeypatch):
    cfg, paths = workspace
    drive = tmp_path / "drive"
    for name in ("splits.json", "train_text_embeds.pt", "val_text_embeds.pt"):
        (drive / name).parent.mkdir(parents=True, exist_ok=True)
        (drive / name).write_bytes((paths.artifacts_dir / name).read_bytes())
    os.symlink(paths.image_cache_dir, drive / "image_cache")
    colab_paths = env.Paths("colab", drive, paths.data_dir, paths.cache_dir)
    copies = []
    real_copy = runs.atomic_copy  # the run store writes checkpoints (helpers/store/runs.py: save_checkpoint)
    monkeypatch.setattr(runs, "atomic_copy", lambda src, dst: copies.append((Path(src), Path(dst))) or real_copy(src, dst))
    FlakyFilesystem(monkeypatch, drive / "runs", failures=2)
    with pytest.warns(UserWarning, match="transient OSError"):
        result = train.train(
            cfg.replace(epochs=1, max_steps_per_epoch=2, run_name="flaky"), colab_paths, progress=False, log=lambda m: None
        )
    assert (result.run_dir / "checkpoint.pt").exists() and torch_load(result.run_dir / "checkpoint.pt")["epoch"] == 1
    assert copies and all(str(src).startswith(str(paths.cache_dir)) and str(dst).startswith(str(drive)) for src, dst in copies)


def test_persistent_storage_failure_is_an_error_not_silence(tmp_path, monkeypatch):
    FlakyFilesystem(monkeypatch, tmp_path, failures=100)
    with pytest.warns(UserWarning), pytest.raises(OSError, match="Input/output error"):
        storage.atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert not (tmp_path / "x.json").exists() and not list(tmp_path.glob(".*tmp"))


def test_full_disk_stops_downloads_before_writing(tmp_path, monkeypatch):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "big.zip").write_bytes(os.urandom(200_000))
    monkeypatch.setattr(storage, "free_bytes", lambda path: 50_000)
    with LocalServer(tmp_path / "site") as server:
        with pytest.raises(storage.DiskSpaceError, match="Not enough free disk for downloading big.zip"):
            download.download(f"{server.url}/big.zip", tmp_path / "dl" / "big.zip", progress=False)
        assert not any(m == "GET" for m, _, _ in server.requests)
    assert not list((tmp_path / "dl").glob("*"))


def _python_files():
    return [p for p in ROOT.rglob("*.py") if ".git" not in p.parts and "site-packages" not in p.parts]


def test_every_torch_load_is_weights_only():
    calls = 0
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            is_torch_load = (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            )
            if is_torch_load:
                calls += 1
                kw = {k.arg: k.value for k in node.keywords}
                assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, f"{path}:{node.lineno}"
    assert calls >= 2


def test_no_shell_true_and_no_os_system():
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                for k in node.keywords:
                    assert not (k.arg == "shell" and isinstance(k.value, ast.Constant) and k.value.value is True), f"{path}:{node.lineno}"
                if isinstance(node.func, ast.Attribute) and node.func.attr in ("system", "popen"):
                    assert not (isinstance(node.func.value, ast.Name) and node.func.value.id == "os"), f"{path}:{node.lineno}"


@pytest.mark.parametrize(
    "fault",
    [
        "unreadable image",  # corrupt or truncated JPEG
        "PNG content",
        "CMYK",
        "on disk",  # missing image files
        "not a valid COCO captions file",
        "No captions_train2014.json",
        "unknown image",
        "empty caption",
        "longer than 77 tokens",
        "non-ASCII",
        "DATA_DIR=… does not exist",
        "ARTIFACTS_DIR=… cannot be created",
        "Unknown config key",
        "must be int",
        "different architecture",
        "encoded with TEXT_MODEL",
        "Errno 5",
        "Not enough free disk",
        "disconnect",
    ],
)
def test_readme_troubleshooting_lists_each_fault(fault):
    table = (ROOT / "docs" / "troubleshooting.md").read_text()
    assert fault in table
