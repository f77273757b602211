import errno
import os
from pathlib import Path

import pytest
import torch

from helpers.core import storage


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    storage.atomic_write_json(target, {"v": 1})

    def boom(*a, **k):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(RuntimeError):
        storage.atomic_write_json(target, {"v": 2})
    monkeypatch.undo()
    assert storage.read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind
    assert oct(target.stat().st_mode & 0o777) != "0o600"


def test_transient_eio_is_retried_then_succeeds():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise OSError(errno.EIO, "Input/output error")
        return "ok"

    with pytest.warns(UserWarning, match="transient"):
        assert storage.with_retries(flaky, "test", base_delay=0.001) == "ok"
    assert len(calls) == 3


def test_permanent_errors_are_not_retried():
    calls = []

    def missing():
        calls.append(1)
        raise FileNotFoundError(errno.ENOENT, "nope")

    with pytest.raises(FileNotFoundError):
        storage.with_retries(missing, "test", base_delay=0.001)
    assert len(calls) == 1


def test_ensure_free_space_names_the_fix(tmp_path):
    with pytest.raises(storage.DiskSpaceError, match="Not enough free disk.*DATA_DIR"):
        storage.ensure_free_space(tmp_path, 1 << 62, "a huge thing")
    storage.ensure_free_space(tmp_path / "not" / "yet", 1, "a tiny thing")  # nearest existing parent


def test_torch_load_is_weights_only(tmp_path):
    good = storage.atomic_torch_save({"w": torch.ones(2), "cfg": {"lr": 1e-4}}, tmp_path / "good.pt")
    assert storage.torch_load(good)["cfg"] == {"lr": 1e-4}
    torch.save({"path": Path("/x")}, tmp_path / "bad.pt")  # a PosixPath pickles as a global
    with pytest.raises(Exception, match="(?i)weights_only|unsupported global"):
        storage.torch_load(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="run the notebook"):
        storage.torch_load(tmp_path / "absent.pt")


def test_atomic_copy_and_sha(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(100_000))
    dst = storage.atomic_copy(src, tmp_path / "sub" / "dst.bin")
    assert storage.sha256_file(dst) == storage.sha256_file(src)
