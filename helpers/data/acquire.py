"""Getting COCO 2014 onto local disk, by DATA_SOURCE, in the layout the rest expects.

Sources (see docs/parameters.md, "Data sources"):
- ``"local"``: DATA_DIR already holds train2014/, val2014/, annotations/captions_*2014.json.
- ``"coco"``: the official zips (20 GB); resumable downloads, safe extraction, zips deleted after.
- ``"coco-subset"``: the annotations zip plus a few thousand single images by ``coco_url``,
  threaded, with retries; Karpathy val/test images first, so a quick start is scored on
  the standard protocol (~2 GB instead of 20).
- ``"kaggle"``: the Kaggle COCO 2014 dataset via kagglehub (public: no credentials needed) or
  the kaggle API (credentials from env, kaggle.json or Colab Secrets). Its layout is
  discovered and linked into DATA_DIR; missing caption JSONs come from the official zip.
Every step skips work already done.
"""

from __future__ import annotations

import json
import os
import random
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from ..core.artifacts import first_line
from ..core.config import Config
from ..core.storage import ensure_free_space
from .categories import INSTANCES_FILE, instances_path
from .coco import SPLIT_FOLDERS, DataError, annotation_path, check_layout
from .download import DownloadError, download, extraction_marker, safe_extract
from .splits import karpathy_ids

ANNOTATIONS_ZIP = "annotations/annotations_trainval2014.zip"
INSTANCES_MEMBER = f"annotations/{INSTANCES_FILE}"  # val2014's object annotations (~160 MB): the categories of 03
IMAGE_ZIPS = {"train2014": "zips/train2014.zip", "val2014": "zips/val2014.zip"}
SUBSET_DEFAULTS = {"train": 6000, "val": 1000, "test": 5000}  # ~1.9 GB of JPEGs
AVG_JPEG_BYTES = 165_000


class KaggleCredentialsError(RuntimeError):
    """No Kaggle credentials were found where the kaggle API looks for them."""


def acquire(cfg: Config, data_dir: Path, progress: bool = True, kaggle_fetch: Callable[[str], Path] | None = None) -> Path:
    """Make ``data_dir`` a COCO 2014 layout folder according to ``cfg.data_source``; return it."""
    data_dir = Path(data_dir)
    if cfg.data_source == "local":
        check_layout(data_dir)
        return data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    if cfg.data_source == "coco":
        fetch_annotations(cfg.coco_url, data_dir, progress)
        for folder, rel in IMAGE_ZIPS.items():
            _fetch_zip(f"{cfg.coco_url}/{rel}", data_dir, only=f"{folder}/", progress=progress)
    elif cfg.data_source == "coco-subset":
        fetch_annotations(cfg.coco_url, data_dir, progress)
        fetch_subset(data_dir, cfg.train_images, cfg.val_images, cfg.test_images, cfg.seed, progress)
    elif cfg.data_source == "kaggle":
        fetch = kaggle_fetch or (lambda slug: fetch_kaggle_dataset(slug))
        try:
            root = fetch(cfg.kaggle_dataset)
        except Exception as exc:
            if not _is_offline(exc):
                raise
            raise DownloadError(
                f"Could not reach Kaggle to fetch {cfg.kaggle_dataset} ({first_line(exc, 120)}): this machine has no internet "
                "(the name could not be resolved or the connection was refused). On Kaggle: Settings -> Internet on, or attach "
                "the dataset (Add data). Elsewhere: connect, or set DATA_SOURCE='local' and DATA_DIR to a COCO 2014 copy."
            ) from None
        link_kaggle_layout(root, data_dir, cfg.coco_url, progress)
    check_layout(data_dir)
    return data_dir


def _is_offline(exc: BaseException) -> bool:
    """Whether an exception (or one it was raised from) says the network is unreachable: DNS failure, refused connection."""
    import socket

    seen: BaseException | None = exc
    while seen is not None:
        names = {cls.__name__ for cls in type(seen).__mro__}
        if isinstance(seen, (socket.gaierror, ConnectionError)) or names & {"ConnectionError", "NameResolutionError", "MaxRetryError"}:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _fetch_zip(url: str, data_dir: Path, only: str | tuple[str, ...] | None, progress: bool) -> None:
    """Download and extract one zip, unless its marker says it is done; delete the zip afterwards."""
    name = url.rsplit("/", 1)[-1]
    marker = data_dir / extraction_marker(name, only)
    if marker.exists():
        return
    zip_path = download(url, data_dir / "downloads" / name, progress=progress)
    safe_extract(zip_path, data_dir, only=only, progress=progress)
    zip_path.unlink()


def fetch_annotations(coco_url: str, data_dir: Path, progress: bool = True) -> None:
    """The captions JSONs and ``instances_val2014.json`` (the object categories of 03's classification) from the official
    annotations zip (241 MB; only those members are extracted). A folder of an older kit that has the captions alone
    gets the instances file on its own; a failure there is a note, not an error (03 then skips classification)."""
    url = f"{coco_url}/{ANNOTATIONS_ZIP}"
    if not all(annotation_path(data_dir, f).exists() for f in SPLIT_FOLDERS):
        have_instances = instances_path(data_dir).exists()  # (a Kaggle copy's, linked): never written through its link
        _fetch_zip(url, data_dir, only="annotations/captions_" if have_instances else ("annotations/captions_", INSTANCES_MEMBER),
                   progress=progress)  # fmt: skip
        return
    if instances_path(data_dir).exists():
        return
    try:
        _fetch_zip(url, data_dir, only=INSTANCES_MEMBER, progress=progress)
    except (DownloadError, OSError) as exc:
        print(f"{INSTANCES_FILE} could not be fetched ({first_line(exc, 120)}): 03 will skip the classification over COCO's "
              f"categories. Re-run this cell when online, or put {INSTANCES_FILE} into {data_dir / 'annotations'}.")


def _images_of(data_dir: Path, folder: str) -> dict[int, dict]:
    doc = json.loads(annotation_path(data_dir, folder).read_text())
    with_caption = {a["image_id"] for a in doc["annotations"]}
    return {img["id"]: img for img in doc["images"] if img["id"] in with_caption}


def fetch_subset(
    data_dir: Path,
    train_images: int | None,
    val_images: int | None,
    test_images: int | None,
    seed: int = 0,
    progress: bool = True,
    threads: int = 16,
) -> dict[str, int]:
    """Download single images by ``coco_url``: a seeded train subset and Karpathy val/test images first."""
    from tqdm.auto import tqdm

    train = _images_of(data_dir, "train2014")
    val = _images_of(data_dir, "val2014")
    n_train = train_images or SUBSET_DEFAULTS["train"]
    chosen = [("train2014", train[i]) for i in sorted(random.Random(seed).sample(sorted(train), min(n_train, len(train))))]
    taken: set[int] = set()
    for split, n in (("val", val_images or SUBSET_DEFAULTS["val"]), ("test", test_images or SUBSET_DEFAULTS["test"])):
        preferred = [i for i in karpathy_ids(split) if i in val]
        if not preferred:  # data without Karpathy ids: any val2014 images
            preferred = sorted(set(val) - taken)
        taken.update(preferred[:n])
        chosen += [("val2014", val[i]) for i in preferred[:n]]
    jobs = []
    for folder, img in chosen:
        dest = data_dir / folder / img["file_name"]
        if not dest.exists():
            jobs.append((img["coco_url"], dest))
    if jobs:
        ensure_free_space(data_dir, len(jobs) * AVG_JPEG_BYTES, f"{len(jobs):,} COCO images")
    failed: list[str] = []
    with ThreadPoolExecutor(threads) as pool:
        futures = {pool.submit(download, url, dest, None, 3, 30.0, False, False): url for url, dest in jobs}
        for fut in tqdm(as_completed(futures), total=len(futures), desc="Downloading images", unit="img", disable=not progress):
            try:
                fut.result()
            except (DownloadError, OSError) as exc:
                failed.append(f"{futures[fut]} ({exc})")
    if failed:
        warnings.warn(f"{len(failed)} of {len(jobs)} images failed to download (e.g. {failed[0]}); re-run to retry them", stacklevel=2)
    return {"requested": len(chosen), "downloaded": len(jobs) - len(failed), "failed": len(failed)}


def _readable_token_file(path: str | os.PathLike | None) -> bool:
    return bool(path) and Path(path).is_file() and bool(Path(path).read_text(encoding="utf-8", errors="replace").strip())


def kaggle_credentials_source() -> str | None:
    """The name of the first place holding Kaggle credentials, never the credentials themselves.

    The sources kagglehub 1.0 and kaggle 2.x accept (kagglehub/config.py, kagglesdk/kaggle_env.py), in
    their order: a Kaggle notebook's token file (``$KAGGLE_API_V1_TOKEN``); ``KAGGLE_API_TOKEN`` (a token,
    or the path of a file holding one); ``~/.kaggle/access_token`` (or ``access_token.txt``);
    ``KAGGLE_USERNAME`` + ``KAGGLE_KEY``; ``kaggle.json`` in ``$KAGGLE_CONFIG_DIR`` or ``~/.kaggle``;
    then Colab Secrets (``KAGGLE_API_TOKEN``, or ``KAGGLE_USERNAME`` + ``KAGGLE_KEY``), which are copied
    into this process's environment, where both libraries read them.
    """
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") and _readable_token_file(os.environ.get("KAGGLE_API_V1_TOKEN")):
        return "kaggle-notebook-token"
    if os.environ.get("KAGGLE_API_TOKEN", "").strip():
        return "KAGGLE_API_TOKEN"
    home = Path.home() / ".kaggle"
    if _readable_token_file(home / "access_token") or _readable_token_file(home / "access_token.txt"):
        return "access_token"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "environment"
    config_dir = Path(os.environ.get("KAGGLE_CONFIG_DIR", home))
    if (config_dir / "kaggle.json").exists():
        return "kaggle.json"
    try:
        from google.colab import userdata  # type: ignore[import-not-found]

        def secret(name: str) -> str | None:
            try:
                return (userdata.get(name) or "").strip() or None
            except Exception:  # a secret that does not exist, or notebook access not granted
                return None

        token, user, key = secret("KAGGLE_API_TOKEN"), secret("KAGGLE_USERNAME"), secret("KAGGLE_KEY")
    except Exception:
        return None
    if token:
        os.environ["KAGGLE_API_TOKEN"] = token
        return "colab-secrets"
    if user and key:
        os.environ["KAGGLE_USERNAME"], os.environ["KAGGLE_KEY"] = user, key
        return "colab-secrets"
    return None


def require_kaggle_credentials() -> str:
    source = kaggle_credentials_source()
    if source is None:
        raise KaggleCredentialsError(
            "No Kaggle credentials found. Any one of these works: an API token (Kaggle > Settings > API > Generate New "
            "Token) in KAGGLE_API_TOKEN or in ~/.kaggle/access_token; kaggle.json (legacy 'Create Legacy API Key') in "
            "~/.kaggle/; KAGGLE_USERNAME and KAGGLE_KEY; or in Colab the Secrets (key icon) KAGGLE_API_TOKEN, or "
            "KAGGLE_USERNAME and KAGGLE_KEY, with notebook access. Or use DATA_SOURCE='coco', which needs no account."
        )
    return source


def _kaggle_api() -> Any:
    """``kaggle``'s API client. Importing kaggle 2.x without credentials calls ``exit(1)``: never let that end the notebook."""
    require_kaggle_credentials()
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except SystemExit as exc:
        raise KaggleCredentialsError(
            f"The kaggle package refused the credentials it found (it exited with status {exc.code}). Check the token or "
            "kaggle.json, or use DATA_SOURCE='coco'."
        ) from None
    api = KaggleApi()
    api.authenticate()
    return api


KAGGLE_INPUT = Path("/kaggle/input")


def attached_kaggle_dataset(slug: str, input_root: Path = KAGGLE_INPUT) -> Path | None:
    """A dataset attached to a Kaggle notebook: ``/kaggle/input/<slug>`` (older notebooks) or
    ``/kaggle/input/datasets/<owner>/<slug>`` (current ones), whichever holds files."""
    owner, _, name = slug.partition("/")
    for candidate in (input_root / name, input_root / "datasets" / owner / name):
        if candidate.is_dir() and any(candidate.iterdir()):
            return candidate
    return None


def fetch_kaggle_dataset(slug: str, method: str = "auto", dest: Path | None = None, input_root: Path = KAGGLE_INPUT) -> Path:
    """Download (or find) a Kaggle dataset; return its root folder."""
    mounted = attached_kaggle_dataset(slug, input_root)
    if mounted is not None:  # on Kaggle with the dataset attached: nothing to download
        return mounted
    if method == "auto":
        try:
            import kagglehub

            method = "kagglehub"
        except ImportError:
            method = "kaggle-api"
    if method == "kagglehub":
        kaggle_credentials_source()  # optional for a public dataset; picks up Colab Secrets if present
        import kagglehub

        return Path(kagglehub.dataset_download(slug))
    api = _kaggle_api()
    dest = dest or Path("/tmp/kaggle") / slug.replace("/", "_")
    api.dataset_download_files(slug, path=str(dest), unzip=True, quiet=False)
    return dest


def discover_layout(root: Path) -> dict[str, Path]:
    """Find train2014/, val2014/ image folders and captions JSONs anywhere under ``root``."""
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for folder in SPLIT_FOLDERS:
            if base.name == folder and folder not in found and any(f.lower().endswith(".jpg") for f in filenames[:50]):
                found[folder] = base
            if f"captions_{folder}.json" in filenames and f"captions_{folder}" not in found:
                found[f"captions_{folder}"] = base / f"captions_{folder}.json"
        if INSTANCES_FILE in filenames and "instances" not in found:
            found["instances"] = base / INSTANCES_FILE
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    return found


def link_kaggle_layout(root: Path, data_dir: Path, coco_url: str, progress: bool = True) -> None:
    """Symlink a discovered Kaggle layout into ``data_dir``; fetch caption JSONs it lacks."""
    found = discover_layout(Path(root))
    missing = [f for f in SPLIT_FOLDERS if f not in found]
    if missing:
        raise DataError(
            f"The Kaggle dataset at {root} has no {', '.join(missing)} image folder. Check KAGGLE_DATASET, or use DATA_SOURCE='coco'."
        )
    for folder in SPLIT_FOLDERS:
        link = data_dir / folder
        if not link.exists():
            link.symlink_to(found[folder].resolve(), target_is_directory=True)
        ann = annotation_path(data_dir, folder)
        if f"captions_{folder}" in found and not ann.exists():
            ann.parent.mkdir(parents=True, exist_ok=True)
            ann.symlink_to(found[f"captions_{folder}"].resolve())
    if "instances" in found and not instances_path(data_dir).exists():
        instances_path(data_dir).parent.mkdir(parents=True, exist_ok=True)
        instances_path(data_dir).symlink_to(found["instances"].resolve())
    if not all(annotation_path(data_dir, f).exists() for f in SPLIT_FOLDERS):
        print("The Kaggle dataset has no caption JSONs: fetching the official annotations zip (241 MB).")
    elif not instances_path(data_dir).exists():
        print(f"The Kaggle dataset has no {INSTANCES_FILE}: fetching it from the official annotations zip (241 MB).")
    fetch_annotations(coco_url, data_dir, progress)
