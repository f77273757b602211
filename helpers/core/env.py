"""Where the notebook runs (Colab, Kaggle, local) and where its files go.

Why one place: every notebook must find the same ARTIFACTS_DIR in a fresh session
after a disconnect. Artifacts persist on Drive (Colab) or /kaggle/working (Kaggle);
data and the working copy of the image cache stay on fast local disk, because Drive
is slow and times out on folders of many small files.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from .config import Config, ConfigError

COLAB_DRIVE_ROOT = Path("/content/drive")
COLAB_DEFAULT_ARTIFACTS = COLAB_DRIVE_ROOT / "MyDrive" / "clip_coco"
COLAB_LOCAL_ARTIFACTS = Path("/content/clip_coco")  # when Drive access is declined: gone when the session ends
NO_DRIVE_ENV = "CLIP_LAB_NO_DRIVE"  # set by the bootstrap cell when Drive could not be mounted


def detect_environment() -> str:
    """Return ``"colab"``, ``"kaggle"`` or ``"local"``."""
    if "COLAB_RELEASE_TAG" in os.environ or "COLAB_GPU" in os.environ:
        return "colab"
    if "KAGGLE_KERNEL_RUN_TYPE" in os.environ or "KAGGLE_URL_BASE" in os.environ:
        return "kaggle"
    return "local"


def mount_drive() -> bool:
    """Mount Google Drive in Colab (asks for consent once per session); False when it cannot be mounted."""
    if (COLAB_DRIVE_ROOT / "MyDrive").exists():
        return True
    if os.environ.get(NO_DRIVE_ENV):
        return False
    try:
        from google.colab import drive  # type: ignore[import-not-found]

        drive.mount(str(COLAB_DRIVE_ROOT))
    except Exception as exc:  # consent declined, or Drive unavailable
        os.environ[NO_DRIVE_ENV] = f"{exc.__class__.__name__}: {exc}"
        return False
    return (COLAB_DRIVE_ROOT / "MyDrive").exists()


def warn_no_drive(artifacts: Path) -> None:
    import warnings

    warnings.warn(
        f"Google Drive is not mounted ({os.environ.get(NO_DRIVE_ENV) or 'access declined'}): artifacts go to {artifacts} on "
        "this VM's disk and VANISH when the Colab session ends (caches, checkpoints, results). To keep them, re-run the "
        "first cell and allow Drive access, or set ARTIFACTS_DIR to a mounted folder.",
        stacklevel=3,
    )


@dataclass(frozen=True)
class Paths:
    """Resolved locations for one run."""

    environment: str
    artifacts_dir: Path  # persistent: caches, checkpoints, metrics, figures
    data_dir: Path  # raw COCO (local disk)
    cache_dir: Path  # local working copy of the prepared image cache

    @property
    def image_cache_dir(self) -> Path:
        """The persistent image cache (a few large shards plus a manifest)."""
        return self.artifacts_dir / "image_cache"

    @property
    def runs_dir(self) -> Path:
        return self.artifacts_dir / "runs"

    def text_embeds_path(self, split: str) -> Path:
        return self.artifacts_dir / f"{split}_text_embeds.pt"

    @property
    def splits_path(self) -> Path:
        return self.artifacts_dir / "splits.json"

    @classmethod
    def for_artifacts(cls, artifacts_dir: str | os.PathLike) -> Paths:
        """Paths for reading an existing ARTIFACTS_DIR only (the report): no raw data, no local cache copy."""
        artifacts = Path(artifacts_dir)
        return cls("local", artifacts, artifacts / "coco", artifacts / "image_cache")


def resolve_paths(cfg: Config, environment: str | None = None, mount: bool = True) -> Paths:
    """Fill in default locations for this environment and create the folders."""
    env = environment or detect_environment()
    if env == "colab":
        artifacts = Path(cfg.artifacts_dir or COLAB_DEFAULT_ARTIFACTS)
        wants_drive = cfg.artifacts_dir is None or cfg.artifacts_dir.startswith(str(COLAB_DRIVE_ROOT))
        if mount and wants_drive and not mount_drive():
            if cfg.artifacts_dir is not None:
                raise ConfigError(f"ARTIFACTS_DIR={cfg.artifacts_dir} is on Google Drive, which is not mounted: allow Drive access "
                                  "(re-run the first cell) or set ARTIFACTS_DIR to a local folder")  # fmt: skip
            artifacts = COLAB_LOCAL_ARTIFACTS
            warn_no_drive(artifacts)
        data = Path(cfg.data_dir or "/content/coco")
        cache = Path(cfg.cache_dir or "/content/image_cache")
    elif env == "kaggle":
        artifacts = Path(cfg.artifacts_dir or "/kaggle/working/clip_coco")
        data = Path(cfg.data_dir or "/kaggle/temp/coco")
        cache = Path(cfg.cache_dir or "/kaggle/temp/image_cache")
    else:
        artifacts = Path(cfg.artifacts_dir or "artifacts").absolute()
        data = Path(cfg.data_dir or "data/coco").absolute()
        cache = Path(cfg.cache_dir) if cfg.cache_dir else artifacts / "image_cache"
    if _is_on_drive(data):
        raise ConfigError(
            f"DATA_DIR={data} is on Google Drive, which is far too slow for 120k images and times out. "
            "Set DATA_DIR to local disk, e.g. '/content/coco' (the default in Colab)."
        )
    for path, key in ((artifacts, "ARTIFACTS_DIR"), (cache, "CACHE_DIR")):
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{key}={path} cannot be created ({exc.strerror}): set {key} to a writable folder") from exc
        if not os.access(path, os.W_OK):
            raise ConfigError(f"{key}={path} is not writable: set {key} to a writable folder")
    return Paths(environment=env, artifacts_dir=artifacts, data_dir=data, cache_dir=cache.absolute())


def shown(path: str | os.PathLike, base: Paths | str | os.PathLike) -> str:
    """``path`` as a person reads it in a notebook: relative to ARTIFACTS_DIR (``base``: the Paths, or the folder itself),
    whose own location is printed once (``runs/<run>/eval_test.json``); a path elsewhere stays whole."""
    root = base.artifacts_dir if isinstance(base, Paths) else Path(base)
    try:
        return Path(path).absolute().relative_to(root.absolute()).as_posix()
    except ValueError:
        return str(path)


def _is_on_drive(path: Path) -> bool:
    return str(path.absolute()).startswith(str(COLAB_DRIVE_ROOT) + "/")


def hardware_summary(paths: Paths | None = None) -> dict[str, object]:
    """GPU, CUDA, library versions, CPUs, RAM and free disk: recorded with every run."""
    import torch

    info: dict[str, object] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "ram_gib": round(_total_ram_bytes() / 2**30, 1),
        "cuda_available": torch.cuda.is_available(),
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "gpu_count": torch.cuda.device_count(),
    }
    if torch.cuda.is_available():
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    for module in ("torchvision", "transformers", "PIL", "numpy"):
        info[module] = _version_of(module)
    if paths is not None:
        from .storage import free_bytes

        info["environment"] = paths.environment
        info["free_disk_gib"] = {
            "artifacts_dir": round(free_bytes(paths.artifacts_dir) / 2**30, 1),
            "data_dir": round(free_bytes(paths.data_dir) / 2**30, 1),
        }
    return info


def _version_of(module: str) -> str | None:
    """The installed version of a third-party package (read from its metadata: nothing is imported)."""
    import importlib.metadata

    try:
        return importlib.metadata.version({"PIL": "pillow"}.get(module, module))
    except importlib.metadata.PackageNotFoundError:
        return None


def _total_ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def brief(info: dict[str, object]) -> str:
    """One line of :func:`hardware_summary` for a notebook's first output: the facts that decide the session (the full
    record goes into every run's metrics.json)."""
    gpu = f"{info['gpu']} ({info.get('gpu_memory_gib')} GiB)" if info.get("gpu") else "none (CPU only)"
    disk = info.get("free_disk_gib") or {}
    free = f" · free disk {min(disk.values())} GiB" if disk else ""
    return f"GPU {gpu} · torch {info['torch']} · {info['cpu_count']} CPUs · RAM {info['ram_gib']} GiB{free}"


def default_num_workers(requested: int | None) -> int:
    """Loader workers: one per core up to 4 (Colab has 2 vCPUs); 0 in a notebook on macOS/Windows."""
    if requested is not None:
        return requested
    if sys.platform != "linux":
        return 0
    return max(1, min(4, os.cpu_count() or 1))
