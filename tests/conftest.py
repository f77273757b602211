"""Shared fixtures: a synthetic COCO-2014 layout, a tiny text tower, prepared artifacts.

Everything is built offline, once per test session, under pytest's tmp folders.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach the hub

from helpers.core import config, env  # noqa: E402
from helpers.data import prepare  # noqa: E402
from helpers.data.synthetic import all_captions, make_synthetic_coco, make_tiny_text_tower  # noqa: E402


def load_factor() -> float:
    """How many times slower than idle this machine may run the tests now: 1 + the 1-minute load per core
    (CLIP_LAB_TEST_SLOWDOWN sets it). The README's command must pass on a laptop shared with other work, where a
    test that takes 149 s idle took over 900 s at load 5 on 2 cores: a fixed per-test limit fails a correct suite."""
    if os.environ.get("CLIP_LAB_TEST_SLOWDOWN"):
        return max(1.0, float(os.environ["CLIP_LAB_TEST_SLOWDOWN"]))
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        return 1.0
    return 1.0 + load / (os.cpu_count() or 1)


SLOWDOWN = load_factor()  # measured once, when the session starts


def pytest_report_header(config) -> str:
    return f"per-test time limits x{SLOWDOWN:.1f} (1 + load per core, at the start; CLIP_LAB_TEST_SLOWDOWN sets it)"


def pytest_collection_modifyitems(config, items) -> None:
    """Every test's limit (its own ``timeout`` mark, or pyproject's --timeout) scaled by :data:`SLOWDOWN`: a hang is
    still caught, a busy machine no longer fails a correct test."""
    default = float(config.getoption("timeout", 0) or 0)
    for item in items:
        marker = item.get_closest_marker("timeout")
        limit = float(marker.args[0]) if marker and marker.args else default
        if limit > 0:
            item.add_marker(pytest.mark.timeout(limit * SLOWDOWN), append=False)


@pytest.fixture(scope="session")
def synthetic_coco(tmp_path_factory) -> Path:
    """120 train + 60 val images; do not modify (copy it first: see ``coco_copy``)."""
    return make_synthetic_coco(tmp_path_factory.mktemp("coco") / "coco", n_train=120, n_val=60, seed=0)


@pytest.fixture(scope="session")
def tiny_tower(tmp_path_factory, synthetic_coco) -> Path:
    return make_tiny_text_tower(tmp_path_factory.mktemp("tower") / "tiny-clip-text", all_captions(synthetic_coco))


@pytest.fixture
def coco_copy(tmp_path, synthetic_coco) -> Path:
    """A private, writable copy of the synthetic dataset."""
    return Path(shutil.copytree(synthetic_coco, tmp_path / "coco"))


def make_cfg(**params) -> config.Config:
    return config.from_params(params)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, synthetic_coco, tiny_tower):
    """Artifacts of notebook 01's steps on the synthetic data (read-only for tests)."""
    art = tmp_path_factory.mktemp("artifacts")
    cfg = make_cfg(
        DATA_SOURCE="local",
        DATA_DIR=str(synthetic_coco),
        ARTIFACTS_DIR=str(art),
        TEXT_MODEL=str(tiny_tower),
        CACHE_DIR=str(art / "local_cache"),
        IMAGE_SIZE=64,
        SHARD_SIZE=50,
    )
    paths = env.resolve_paths(cfg, environment="local")
    data = prepare.scan(synthetic_coco)
    splits = prepare.build_splits(cfg, paths, data)
    manifest = prepare.cache_images(cfg, paths, data, splits, workers=1, progress=False)
    prepare.cache_captions(cfg, paths, data, splits, device="cpu", progress=False)
    return {"cfg": cfg, "paths": paths, "data": data, "splits": splits, "manifest": manifest}


TRAIN_BASE = dict(
    IMAGE_BACKBONE="resnet18",
    IMAGE_WEIGHTS=None,
    IMAGE_SIZE=64,
    HIDDEN_DIM=128,
    BATCH_SIZE=32,
    LR=1e-3,
    NUM_WORKERS=0,
    LIVE_PLOT=False,
)


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, tiny_tower):
    """Prepared artifacts for a learnable synthetic set: 320 train, 50 val, 50 test images."""
    root = tmp_path_factory.mktemp("train")
    coco = make_synthetic_coco(root / "coco", n_train=320, n_val=100, seed=1)
    cfg = make_cfg(DATA_SOURCE="local", DATA_DIR=str(coco), ARTIFACTS_DIR=str(root / "art"), TEXT_MODEL=str(tiny_tower), **TRAIN_BASE)
    paths = env.resolve_paths(cfg, environment="local")
    data = prepare.scan(coco)
    splits = prepare.build_splits(cfg, paths, data)
    prepare.cache_images(cfg, paths, data, splits, workers=1, progress=False)
    prepare.cache_captions(cfg, paths, data, splits, device="cpu", progress=False)
    return cfg, paths


@pytest.fixture(scope="session")
def trained(workspace):
    """A 4-epoch run named "shared" on the workspace (read-only for tests)."""
    from helpers.training import train

    cfg, paths = workspace
    cfg = cfg.replace(epochs=4, run_name="shared")
    result = train.train(cfg, paths, progress=False, log=lambda m: None)
    return cfg, paths, result
