import json
import os
import shutil
import sys
import zipfile

import pytest
from httpserver import LocalServer

from helpers.core import config
from helpers.data import acquire, download
from helpers.data.coco import check_layout


def _zip_dir(zip_path, root, prefix_filter=None):
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and (prefix_filter is None or rel.startswith(prefix_filter)):
                zf.write(p, rel)


@pytest.fixture
def mirror(tmp_path, synthetic_coco):
    """A COCO-like mirror: annotations zip (with an extra non-caption file), image zips, single images."""
    site = tmp_path / "site"
    (site / "annotations").mkdir(parents=True)
    (site / "zips").mkdir()
    staging = tmp_path / "staging"
    shutil.copytree(synthetic_coco, staging)
    (staging / "annotations" / "instances_train2014.json").write_text("{}")  # must not be extracted
    _zip_dir(site / "annotations" / "annotations_trainval2014.zip", staging, "annotations/")
    for folder in ("train2014", "val2014"):
        _zip_dir(site / "zips" / f"{folder}.zip", staging, f"{folder}/")
        shutil.copytree(synthetic_coco / folder, site / folder)
    with LocalServer(site) as server:
        # captions point at the local server for single-image downloads
        for folder in ("train2014", "val2014"):
            ann = staging / "annotations" / f"captions_{folder}.json"
            doc = json.loads(ann.read_text())
            for img in doc["images"]:
                img["coco_url"] = f"{server.url}/{folder}/{img['file_name']}"
            ann.write_text(json.dumps(doc))
        _zip_dir(site / "annotations" / "annotations_trainval2014.zip", staging, "annotations/")
        yield server, site


def test_download_resumes_after_a_dropped_connection(mirror, tmp_path, capsys):
    server, site = mirror
    size = (site / "zips" / "train2014.zip").stat().st_size
    server.drop_first("/zips/train2014.zip", size // 3)
    out = download.download(f"{server.url}/zips/train2014.zip", tmp_path / "dl" / "train2014.zip", progress=True)
    assert out.read_bytes() == (site / "zips" / "train2014.zip").read_bytes()
    said = capsys.readouterr().out  # a failed try is said, with the wait before the next (a stalled network never looks hung)
    assert "train2014.zip: try 1 of 6 failed (" in said and "trying again in 0.5s" in said
    ranges = [r for m, p, r in server.requests if m == "GET" and p == "/zips/train2014.zip"]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and int(ranges[1][6:-1]) > 0
    assert not (tmp_path / "dl" / "train2014.zip.part").exists()
    n = len(server.requests)
    download.download(f"{server.url}/zips/train2014.zip", out, progress=False)  # complete: skipped
    assert len(server.requests) == n


def test_download_404_names_the_url(mirror, tmp_path):
    server, _ = mirror
    with pytest.raises(download.DownloadError, match="nope.zip.*COCO_URL"):
        download.download(f"{server.url}/nope.zip", tmp_path / "nope.zip", retries=1, progress=False)


def test_zip_slip_is_refused(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("annotations/ok.json", "{}")
        zf.writestr("../../escape.txt", "gotcha")
    with pytest.raises(download.UnsafeArchiveError, match="outside"):
        download.safe_extract(evil, tmp_path / "out", progress=False)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out" / "annotations").exists()
    absolute = tmp_path / "abs.zip"
    with zipfile.ZipFile(absolute, "w") as zf:
        zf.writestr("/etc/passwd-copy", "x")
    with pytest.raises(download.UnsafeArchiveError):
        download.safe_extract(absolute, tmp_path / "out", progress=False)


def test_damaged_zip_member_fails_crc(tmp_path):
    path = tmp_path / "d.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("a.txt", b"A" * 5000)
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"A" * 100) + 50] = ord("B")  # flip one stored byte
    path.write_bytes(bytes(raw))
    with pytest.raises(download.UnsafeArchiveError, match="damaged"):
        download.safe_extract(path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "a.txt").exists()
    with pytest.raises(download.UnsafeArchiveError, match="not a valid zip"):
        (tmp_path / "junk.zip").write_bytes(b"junk")
        download.safe_extract(tmp_path / "junk.zip", tmp_path / "out", progress=False)


def test_source_coco_downloads_and_extracts(mirror, tmp_path):
    server, _ = mirror
    cfg = config.from_params(DATA_SOURCE="coco", COCO_URL=server.url)
    data_dir = acquire.acquire(cfg, tmp_path / "coco", progress=False)
    check_layout(data_dir)
    assert len(list((data_dir / "train2014").glob("*.jpg"))) == 120
    assert not (data_dir / "annotations" / "instances_train2014.json").exists()  # only captions (and val's categories)
    assert (data_dir / "annotations" / "instances_val2014.json").exists()  # 03's classification over categories
    assert not list((data_dir / "downloads").glob("*.zip"))  # zips removed after extraction
    n = len(server.requests)
    acquire.acquire(cfg, tmp_path / "coco", progress=False)  # finished work is skipped
    assert len(server.requests) == n
    (data_dir / "annotations" / "instances_val2014.json").unlink()  # a folder of an older kit: captions alone
    acquire.acquire(cfg, tmp_path / "coco", progress=False)
    assert (data_dir / "annotations" / "instances_val2014.json").exists() and len(server.requests) > n  # fetched on its own


def test_source_coco_subset_fetches_single_images(mirror, tmp_path):
    server, _ = mirror
    cfg = config.from_params(DATA_SOURCE="coco-subset", COCO_URL=server.url, TRAIN_IMAGES=30, VAL_IMAGES=10, TEST_IMAGES=12)
    data_dir = acquire.acquire(cfg, tmp_path / "coco", progress=False)
    assert len(list((data_dir / "train2014").glob("*.jpg"))) == 30
    assert len(list((data_dir / "val2014").glob("*.jpg"))) == 22
    gets = sum(1 for m, p, _ in server.requests if m == "GET" and p.endswith(".jpg"))
    acquire.acquire(cfg, tmp_path / "coco", progress=False)
    assert sum(1 for m, p, _ in server.requests if m == "GET" and p.endswith(".jpg")) == gets


def test_source_kaggle_layout_and_caption_fallback(mirror, tmp_path, synthetic_coco):
    server, _ = mirror
    kaggle_root = tmp_path / "kaggle" / "coco2014"  # jeffaudi/... layout, without caption JSONs
    for folder in ("train2014", "val2014"):
        shutil.copytree(synthetic_coco / folder, kaggle_root / "images" / folder)
    (kaggle_root / "annotations").mkdir()
    (kaggle_root / "annotations" / "instances_val2014.json").write_text("{}")
    cfg = config.from_params(DATA_SOURCE="kaggle", COCO_URL=server.url)
    data_dir = acquire.acquire(cfg, tmp_path / "coco", progress=False, kaggle_fetch=lambda slug: kaggle_root.parent)
    check_layout(data_dir)
    assert (data_dir / "train2014").is_symlink()
    assert any(p.endswith("annotations_trainval2014.zip") for _, p, _ in server.requests)
    assert (data_dir / "annotations" / "instances_val2014.json").resolve() == (kaggle_root / "annotations" / "instances_val2014.json")


@pytest.fixture
def no_kaggle_credentials(monkeypatch, tmp_path):
    """A home, environment and module table with no Kaggle credentials anywhere."""
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_API_V1_TOKEN", "KAGGLE_KERNEL_RUN_TYPE"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))
    monkeypatch.setitem(sys.modules, "google.colab", None)  # not in Colab
    return home


def test_missing_kaggle_credentials(no_kaggle_credentials, tmp_path):
    with pytest.raises(acquire.KaggleCredentialsError, match="KAGGLE_API_TOKEN.*access_token.*kaggle.json.*KAGGLE_USERNAME.*Secrets"):
        acquire.fetch_kaggle_dataset("someone/some-dataset-that-is-not-mounted", method="kaggle-api", input_root=tmp_path / "in")


SECRET = "KGAT_0123456789abcdef-very-secret"


@pytest.mark.parametrize("source", ["KAGGLE_API_TOKEN", "access_token", "kaggle-notebook-token", "colab-secrets", "colab-legacy"])
def test_every_credential_source_kagglehub_and_kaggle_accept(no_kaggle_credentials, monkeypatch, tmp_path, capsys, source):
    import types

    home = no_kaggle_credentials
    if source == "KAGGLE_API_TOKEN":
        monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    elif source == "access_token":
        (home / ".kaggle" / "access_token").write_text(SECRET + "\n")
    elif source == "kaggle-notebook-token":
        (tmp_path / "token").write_text(SECRET)
        monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
        monkeypatch.setenv("KAGGLE_API_V1_TOKEN", str(tmp_path / "token"))
    else:  # a stand-in google.colab with Secrets
        secrets = {"KAGGLE_API_TOKEN": SECRET} if source == "colab-secrets" else {"KAGGLE_USERNAME": "student", "KAGGLE_KEY": SECRET}

        def get(name):
            if name not in secrets:
                raise KeyError(name)  # what Colab raises for a secret that does not exist
            return secrets[name]

        colab = types.ModuleType("google.colab")
        colab.userdata = types.SimpleNamespace(get=get)
        monkeypatch.setitem(sys.modules, "google.colab", colab)
    found = acquire.require_kaggle_credentials()
    assert found == ("colab-secrets" if source.startswith("colab") else source)
    if source == "colab-secrets":
        assert os.environ["KAGGLE_API_TOKEN"] == SECRET  # where kaggle and kagglehub read it
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err


def test_an_exiting_kaggle_import_becomes_a_clear_error(no_kaggle_credentials, monkeypatch, tmp_path):
    fake = tmp_path / "fake" / "kaggle"
    (fake / "api").mkdir(parents=True)
    (fake / "__init__.py").write_text("raise SystemExit(1)  # what kaggle 2.0.2 does on import without usable credentials\n")
    (fake / "api" / "__init__.py").write_text("")
    (fake / "api" / "kaggle_api_extended.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))
    for name in [m for m in sys.modules if m == "kaggle" or m.startswith("kaggle.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    with pytest.raises(acquire.KaggleCredentialsError, match="refused the credentials it found.*DATA_SOURCE='coco'"):
        acquire.fetch_kaggle_dataset("someone/not-attached", method="kaggle-api", input_root=tmp_path / "in")


@pytest.mark.parametrize("layout", ["kaggle/input/<slug>", "kaggle/input/datasets/<owner>/<slug>"])
def test_an_attached_kaggle_dataset_is_found_in_both_layouts(tmp_path, layout):
    root = tmp_path / "input"
    folder = root / "coco-2014" if layout == "kaggle/input/<slug>" else root / "datasets" / "someone" / "coco-2014"
    (folder / "coco2014").mkdir(parents=True)
    assert acquire.fetch_kaggle_dataset("someone/coco-2014", method="kaggle-api", input_root=root) == folder
    assert acquire.attached_kaggle_dataset("someone/other", root) is None


def test_kaggle_credentials_are_found_but_never_shown(no_kaggle_credentials, monkeypatch, tmp_path, capsys):
    secret = "0123456789abcdef-very-secret"
    monkeypatch.setenv("KAGGLE_USERNAME", "student")
    monkeypatch.setenv("KAGGLE_KEY", secret)
    assert acquire.require_kaggle_credentials() == "environment"
    monkeypatch.delenv("KAGGLE_KEY")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    (tmp_path / "kaggle.json").write_text(json.dumps({"username": "student", "key": secret}))
    assert acquire.kaggle_credentials_source() == "kaggle.json"
    out = capsys.readouterr()
    assert secret not in out.out + out.err


def test_layout_discovery_finds_nested_folders(tmp_path):
    root = tmp_path / "x"
    for rel in ("a/b/train2014/1.jpg", "c/val2014/2.jpg", "d/captions_train2014.json"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    found = acquire.discover_layout(root)
    assert found["train2014"] == root / "a/b/train2014" and found["val2014"] == root / "c/val2014"
    assert found["captions_train2014"] == root / "d/captions_train2014.json" and "captions_val2014" not in found
