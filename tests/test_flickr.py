"""Flickr30k transfer: a generated Flickr-layout folder served over real HTTP, downloaded once, prepared into
ARTIFACTS_DIR, scored with the published rows beside it, reused by a later session; missing parts named."""

from __future__ import annotations

import shutil
import zipfile

import pytest
from httpserver import LocalServer

from helpers.data import flickr
from helpers.data.coco import DataError
from helpers.data.download import DownloadError
from helpers.data.synthetic import make_synthetic_flickr
from helpers.evaluation import evaluate, transfer
from helpers.store.runs import load_eval


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    make_synthetic_flickr(root / "hf", n_images=30)
    with LocalServer(root) as server:
        yield server, root / "hf"


@pytest.fixture
def scored_run(trained, tmp_path, site):
    """The shared run, scored on COCO by 03, with FLICKR30K on and the files on the local server."""
    cfg, paths, _ = trained
    server, _ = site
    cfg = cfg.replace(flickr30k=True, flickr_url=f"{server.url}/hf", flickr_dir=str(tmp_path / "raw"))
    result = evaluate.evaluate(cfg, paths, device="cpu", progress=False)
    try:
        yield cfg, paths, result
    finally:  # the shared run and ARTIFACTS_DIR as they were
        for name in ("eval_flickr30k.json", "eval_flickr30k.csv"):
            (result.data.run.path / name).unlink(missing_ok=True)
        shutil.rmtree(flickr.folder(paths), ignore_errors=True)


def test_transfer_is_downloaded_once_prepared_scored_and_reused(scored_run, site):
    cfg, paths, result = scored_run
    server, _ = site
    record = transfer.evaluate_transfer(cfg, paths, result.data, progress=False)
    assert record["num_images"] == 30 and record["num_captions"] == 150 and 0.0 <= record["metrics"]["rsum"] <= 6.0
    assert record["prepared"]["image_size"] == result.data.cache.image_size and record["prepared"]["synthetic"] is True
    assert load_eval(result.data.run, "flickr30k")["metrics"] == record["metrics"]  # sealed, scoring the current weights
    table = transfer.transfer_markdown(record)
    assert "| 78.9 | 94.9 | 98.2 | 58.8 | 83.6 | 90.0 |" in table and "| 80.0 | 95.0 | 97.9 | 57.4 | 83.2 | 90.0 |" in table
    assert "SYNTHETIC" in table and "30 SYNTHETIC images (not Flickr30k)" in table
    assert "[published‡, not re-measured]" in table  # its own footnote marks: the COCO table's asterisks come just before
    assert "\n‡ open_clip, `docs/openclip_retrieval_results.csv` (commit 89fb801, row `RN50,openai`)" in table
    csv_text = (result.data.run.path / "eval_flickr30k.csv").read_text()
    assert csv_text.startswith("model,protocol,image_to_text_R@1_%") and "Flickr30k 1k test (Karpathy)" in csv_text
    gets = [p for m, p, _ in server.requests if m == "GET"]
    assert sorted(gets) == ["/hf/images_flickr_1k_test.zip", "/hf/test_1k_flickr.csv"]

    # a later session: the raw download is gone (local disk), the prepared set on Drive is read, nothing is fetched
    stamp = (flickr.folder(paths) / flickr.RECORD).stat().st_mtime_ns
    shutil.rmtree(flickr.raw_dir(cfg, paths))
    again = transfer.evaluate_transfer(cfg, paths, result.data, progress=False)
    assert again["metrics"] == record["metrics"] and [p for m, p, _ in server.requests if m == "GET"] == gets  # none fetched
    assert (flickr.folder(paths) / flickr.RECORD).stat().st_mtime_ns == stamp


def test_a_prepared_set_edited_after_it_was_written_is_prepared_again(scored_run, site, capsys):
    """flickr30k.json is sealed and records the digest of the caption embeddings beside it: an edited record, or caption
    embeddings from elsewhere, are never scored; the set is prepared again and says why."""
    import torch

    from helpers.core.storage import atomic_write_json, read_json

    cfg, paths, result = scored_run
    first = transfer.evaluate_transfer(cfg, paths, result.data, progress=False)
    record_path, text_path = flickr.folder(paths) / flickr.RECORD, flickr.folder(paths) / "text_embeds.pt"
    record = read_json(record_path)
    atomic_write_json(record_path, {**record, "images": 1})  # a hand edit
    capsys.readouterr()
    assert transfer.evaluate_transfer(cfg, paths, result.data, progress=False)["metrics"] == first["metrics"]
    assert "changed after they were prepared: preparing it again" in capsys.readouterr().out
    text = torch.load(text_path, weights_only=True)
    text["embeddings"] = text["embeddings"].flip(0)  # another set's embeddings, the same shape
    torch.save(text, text_path)
    assert transfer.evaluate_transfer(cfg, paths, result.data, progress=False)["metrics"] == first["metrics"]
    assert "changed after they were prepared: preparing it again" in capsys.readouterr().out
    from helpers.core.provenance import is_sealed
    from helpers.core.storage import sha256_file

    again = read_json(record_path)
    assert is_sealed(again) and again["text_sha256"] == sha256_file(text_path) == record["text_sha256"]  # encoded anew, alike


def test_the_report_says_an_edited_transfer_record_is_left_out_never_that_transfer_is_off(scored_run, tmp_path):
    """An eval_flickr30k.json edited after 03 wrote it: the report's transfer section leaves it out and says why, with the
    setting that scores it again (FLICKR30K=True), instead of "off" (the problem was once listed nowhere)."""
    import json

    from helpers.study import report

    cfg, paths, result = scored_run
    transfer.evaluate_transfer(cfg, paths, result.data, progress=False)
    art = tmp_path / "art"
    shutil.copytree(paths.artifacts_dir, art)
    record_path = art / "runs" / result.data.run.name / "eval_flickr30k.json"
    record = json.loads(record_path.read_text())
    record["metrics"]["i2t_R@1"] = 0.99
    record_path.write_text(json.dumps(record))
    built = report.build_report(art, result.data.run.name)
    section = built.path.read_text().split("### Transfer: Flickr30k's 1k test split", 1)[1].split("\n## ", 1)[0]
    assert "eval_flickr30k.json was edited after it was written" in section and "FLICKR30K=True" in section
    assert "transfer: off" not in section and "| 99.0 |" not in section and any("eval_flickr30k.json" in m for m in built.missing)


def test_an_unreachable_archive_says_what_is_missing_and_how_to_skip(scored_run, site):
    cfg, paths, result = scored_run
    _, hf = site
    (hf / flickr.ZIP_NAME).unlink()  # the server answers 404 for the images
    with pytest.raises(DownloadError, match=r"images_flickr_1k_test\.zip.*FLICKR30K=False") as caught:
        transfer.evaluate_transfer(cfg, paths, result.data, progress=False)
    assert str(flickr.raw_dir(cfg, paths)) in str(caught.value)
    assert "FLICKR_URL" in str(caught.value) and "COCO_URL" not in str(caught.value)  # the setting that chose the address
    assert not (flickr.folder(paths) / flickr.RECORD).exists()  # nothing half-prepared counts


def test_an_archive_without_some_images_names_them(scored_run, site):
    cfg, paths, result = scored_run
    _, hf = site
    with zipfile.ZipFile(hf / flickr.ZIP_NAME) as full:
        members = [(m, full.read(m)) for m in full.namelist()]
    with zipfile.ZipFile(hf / flickr.ZIP_NAME, "w") as partial:
        for name, data in members[3:]:
            partial.writestr(name, data)
    lost = [name.split("/")[-1] for name, _ in members[:3]]
    with pytest.raises(DataError, match=rf"3 of the 30 test images are missing .*{lost[0]}"):
        transfer.evaluate_transfer(cfg, paths, result.data, progress=False)


def test_a_caption_list_without_its_columns_is_named(tmp_path):
    (tmp_path / flickr.CSV_NAME).write_text("image,caption\n1.jpg,a dog\n")
    with pytest.raises(DataError, match="no 'filename' and 'raw' columns"):
        flickr.read_split(tmp_path / flickr.CSV_NAME)
    make_synthetic_flickr(tmp_path / "ok", n_images=4)
    split = flickr.read_split(tmp_path / "ok" / flickr.CSV_NAME)
    assert len(split.files) == 4 and all(len(c) == 5 for c in split.captions.values())


def test_a_folder_of_ones_own_is_used_without_any_download(scored_run, site, tmp_path):
    """FLICKR_DIR holding the caption list and the extracted images (no archive, no marker): nothing is fetched."""
    cfg, paths, result = scored_run
    server, hf = site
    own = tmp_path / "own"
    own.mkdir()
    shutil.copy(hf / flickr.CSV_NAME, own / flickr.CSV_NAME)
    with zipfile.ZipFile(hf / flickr.ZIP_NAME) as archive:
        archive.extractall(own)
    record = transfer.evaluate_transfer(cfg.replace(flickr_dir=str(own), flickr_url=f"{server.url}/nowhere"), paths, result.data,
                                        progress=False)  # fmt: skip
    assert record["num_images"] == 30 and not server.requests
