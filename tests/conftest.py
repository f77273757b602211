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
