import pytest

from helpers.core import config, env
from helpers.core.config import ConfigError


def test_detects_environment_from_variables(monkeypatch):
    for var in ("COLAB_RELEASE_TAG", "COLAB_GPU", "KAGGLE_KERNEL_RUN_TYPE", "KAGGLE_URL_BASE"):
        monkeypatch.delenv(var, raising=False)
    assert env.detect_environment() == "local"
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    assert env.detect_environment() == "kaggle"
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20260801")
    assert env.detect_environment() == "colab"


def test_local_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = env.resolve_paths(config.from_params({}), environment="local")
    assert paths.artifacts_dir == tmp_path / "artifacts" and paths.artifacts_dir.is_dir()
    assert paths.data_dir == tmp_path / "data" / "coco"
    assert paths.text_embeds_path("train").name == "train_text_embeds.pt"


def test_kaggle_defaults_use_working_dir(tmp_path):
    cfg = config.from_params(ARTIFACTS_DIR=str(tmp_path / "a"), CACHE_DIR=str(tmp_path / "c"))
    paths = env.resolve_paths(cfg, environment="kaggle")
    assert str(paths.data_dir).startswith("/kaggle/")


def test_colab_defaults_put_artifacts_on_drive_and_data_local():
    cfg = config.from_params({})
    with pytest.raises(ConfigError, match="DATA_DIR=/content/drive.*local disk"):
        env.resolve_paths(cfg.replace(data_dir="/content/drive/MyDrive/coco"), environment="colab", mount=False)


def test_unwritable_artifacts_dir_names_the_key(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = config.from_params(ARTIFACTS_DIR=str(blocker / "sub"))
    with pytest.raises(ConfigError, match="ARTIFACTS_DIR=.*writable"):
        env.resolve_paths(cfg, environment="local")


def test_hardware_summary(tmp_path):
    paths = env.resolve_paths(config.from_params(ARTIFACTS_DIR=str(tmp_path)), environment="local")
    info = env.hardware_summary(paths)
    for key in ("gpu", "cuda", "torch", "torchvision", "transformers", "cpu_count", "ram_gib", "free_disk_gib"):
        assert key in info
    assert info["cpu_count"] >= 1 and info["ram_gib"] > 0
    line = env.brief(info)
    assert "\n" not in line and f"torch {info['torch']}" in line and f"RAM {info['ram_gib']} GiB" in line
    assert str(tmp_path) not in line  # the paths are printed once, on the ARTIFACTS_DIR line
    gpu = env.brief({**info, "gpu": "Tesla T4", "gpu_memory_gib": 14.7})
    assert "GPU Tesla T4 (14.7 GiB)" in gpu and "none" not in gpu


def test_colab_without_drive_keeps_artifacts_locally_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(env, "COLAB_LOCAL_ARTIFACTS", tmp_path / "clip_coco")
    monkeypatch.setenv(env.NO_DRIVE_ENV, "RuntimeError: credential propagation was unsuccessful")
    cfg = config.from_params(DATA_DIR=str(tmp_path / "coco"), CACHE_DIR=str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="Google Drive is not mounted.*VANISH when the Colab session ends"):
        paths = env.resolve_paths(cfg, environment="colab")
    assert paths.artifacts_dir == tmp_path / "clip_coco" and paths.artifacts_dir.is_dir()
    with pytest.raises(ConfigError, match="on Google Drive, which is not mounted"):
        env.resolve_paths(cfg.replace(artifacts_dir="/content/drive/MyDrive/mine"), environment="colab")
