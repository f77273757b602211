import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.data import image_cache as ic
from helpers.data.synthetic import add_bad_images


def _part(root, folder="train2014"):
    files = {int(p.stem.split("_")[-1]): p.name for p in (root / folder).iterdir()}
    return ic.CachePart(folder, root / folder, files)


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK", "P"])
def test_prepare_image_any_mode(tmp_path, mode):
    src = Image.new("RGB", (640, 480), (200, 30, 30)).convert(mode)
    path = tmp_path / "x.jpg"
    src.save(path, format="PNG" if mode == "P" else "JPEG")  # P: PNG content named .jpg
    out = Image.open(io.BytesIO(ic.prepare_image(path, 224, 90)))
    assert out.format == "JPEG" and out.mode == "RGB" and out.size == (224, 224)


def _gray16(value):
    return Image.fromarray(np.full((48, 64), value, dtype=np.uint16))  # mode I;16, as a 16-bit PNG opens


def _transparent(mode):
    rgba = Image.new("RGBA", (64, 48), (0, 0, 0, 0))  # fully transparent black: must come out white
    return rgba.convert(mode) if mode != "RGBA" else rgba


@pytest.mark.parametrize(
    ("name", "make", "fmt", "expected_rgb"),
    [
        ("RGB", lambda: Image.new("RGB", (64, 48), (200, 30, 30)), "PNG", (200, 30, 30)),
        ("L", lambda: Image.new("L", (64, 48), 90), "PNG", (90, 90, 90)),
        ("1", lambda: Image.new("1", (64, 48), 1), "PNG", (255, 255, 255)),
        ("P", lambda: Image.new("RGB", (64, 48), (30, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE), "PNG", (30, 200, 30)),
        ("CMYK JPEG", lambda: Image.new("CMYK", (64, 48), (0, 255, 255, 0)), "JPEG", (255, 0, 0)),
        ("16-bit grey PNG", lambda: _gray16(40000), "PNG", (156, 156, 156)),  # 40000 / 257; was clipped to 255
        ("16-bit dark PNG", lambda: _gray16(2570), "PNG", (10, 10, 10)),
        ("32-bit integer TIFF", lambda: Image.fromarray(np.full((48, 64), 51400, dtype=np.int32)), "TIFF", (200, 200, 200)),
        ("RGBA, transparent", lambda: _transparent("RGBA"), "PNG", (255, 255, 255)),
        ("LA, transparent", lambda: _transparent("LA"), "PNG", (255, 255, 255)),
    ],
)
def test_every_pixel_mode_is_decoded_with_the_right_brightness(tmp_path, name, make, fmt, expected_rgb):
    path = tmp_path / "x.jpg"  # whatever the content, COCO names it .jpg
    make().save(path, format=fmt)
    out = np.asarray(Image.open(io.BytesIO(ic.prepare_image(path, 32, 95))), dtype=np.float64)
    assert np.abs(out.reshape(-1, 3).mean(0) - np.array(expected_rgb)).max() < 6, name


def test_floating_point_images_are_counted_unreadable_with_the_reason(tmp_path):
    path = tmp_path / "f.tif"
    Image.fromarray(np.full((48, 64), 0.5, dtype=np.float32)).save(path)
    image_id, data, error = ic._prepare_job((7, str(path), 32, 90))
    assert (image_id, data) == (7, None) and "mode F" in error


def test_resize_policy_is_shorter_side_then_centre_crop(tmp_path):
    im = Image.new("RGB", (400, 200), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 50, 200))  # red strip on the far left: cropped away
    im.save(tmp_path / "w.png")
    out = np.asarray(Image.open(io.BytesIO(ic.prepare_image(tmp_path / "w.png", 100, 95))))
    assert out.shape == (100, 100, 3)
    assert out[:, :, 0].max() < 60  # no red survives the centre crop


def test_bad_images_are_listed_and_skipped(coco_copy, tmp_path):
    bad = add_bad_images(coco_copy)
    part = _part(coco_copy)
    part.files[bad["missing"]] = f"COCO_train2014_{bad['missing']:012d}.jpg"  # still requested
    with pytest.warns(UserWarning, match="skipped 3 unreadable image"):
        manifest = ic.build_image_cache([part], tmp_path / "c", size=64, shard_size=1000, workers=2, progress=False)
    failed = {f["image_id"]: f["error"] for f in ic.failures(manifest)}
    assert set(failed) == {bad["corrupt"], bad["truncated"], bad["missing"]}
    assert failed[bad["missing"]] == "missing file"
    cache = ic.ImageCache(tmp_path / "c")
    for kind in ("grayscale", "cmyk", "png"):
        assert bad[kind] in cache and cache.load_uint8(bad[kind]).shape == (3, 64, 64)
    assert len(cache) == len(part.files) - 3
    with pytest.raises(KeyError, match="not in the image cache"):
        cache.jpeg_bytes(bad["corrupt"])


def test_cache_round_trip_matches_direct_decode(synthetic_coco, tmp_path):
    part = _part(synthetic_coco, "val2014")
    ic.build_image_cache([part], tmp_path / "c", size=64, shard_size=25, workers=1, progress=False)
    cache = ic.ImageCache(tmp_path / "c")
    assert len(cache.shard_files) == 3  # 60 images in shards of 25
    image_id = sorted(part.files)[7]
    direct = torch.from_numpy(np.asarray(Image.open(io.BytesIO(ic.prepare_image(part.folder / part.files[image_id], 64, 90))))).permute(
        2, 0, 1
    )
    assert torch.equal(cache.load_uint8(image_id), direct)
    assert np.asarray(cache.load_pil(image_id)).shape == (64, 64, 3)


def test_rebuild_skips_finished_shards_and_redoes_broken_ones(synthetic_coco, tmp_path):
    part = _part(synthetic_coco, "val2014")
    local, publish = tmp_path / "local", tmp_path / "drive"
    ic.build_image_cache([part], local, size=64, shard_size=25, workers=1, publish_dir=publish, progress=False)
    mtimes = {p.name: p.stat().st_mtime_ns for p in publish.glob("*.bin")}
    (publish / "val2014-00001.bin").write_bytes(b"half a shard")  # a torn copy
    ic.build_image_cache([part], local, size=64, shard_size=25, workers=1, publish_dir=publish, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in publish.glob("*.bin")}
    assert after["val2014-00000.bin"] == mtimes["val2014-00000.bin"]
    assert after["val2014-00002.bin"] == mtimes["val2014-00002.bin"]
    assert after["val2014-00001.bin"] != mtimes["val2014-00001.bin"]
    assert len(ic.ImageCache(publish)) == 60


def test_changed_settings_rebuild(synthetic_coco, tmp_path):
    part = _part(synthetic_coco, "val2014")
    ic.build_image_cache([part], tmp_path, size=64, shard_size=100, workers=1, progress=False)
    with pytest.warns(UserWarning, match="other settings"):
        manifest = ic.build_image_cache([part], tmp_path, size=48, shard_size=100, workers=1, progress=False)
    assert manifest["image_size"] == 48 and ic.ImageCache(tmp_path).load_uint8(sorted(part.files)[0]).shape == (3, 48, 48)


def test_restore_cache_to_local_disk(synthetic_coco, tmp_path):
    part = _part(synthetic_coco, "val2014")
    ic.build_image_cache([part], tmp_path / "drive", size=64, shard_size=30, workers=1, progress=False)
    local = ic.restore_cache(tmp_path / "drive", tmp_path / "local", progress=False)
    assert len(ic.ImageCache(local)) == 60
    stamp = (local / "val2014-00000.bin").stat().st_mtime_ns
    ic.restore_cache(tmp_path / "drive", local, progress=False)  # second restore copies nothing
    assert (local / "val2014-00000.bin").stat().st_mtime_ns == stamp
    with pytest.raises(FileNotFoundError, match="run 01_dataset_prep"):
        ic.restore_cache(tmp_path / "empty", tmp_path / "x", progress=False)


def test_incomplete_shard_is_rejected_by_reader(synthetic_coco, tmp_path):
    part = _part(synthetic_coco, "val2014")
    ic.build_image_cache([part], tmp_path, size=64, shard_size=100, workers=1, progress=False)
    shard = tmp_path / "val2014-00000.bin"
    os.truncate(shard, shard.stat().st_size // 2)
    with pytest.raises(OSError, match="missing or incomplete"):
        ic.ImageCache(tmp_path)


def test_no_space_stops_before_writing(synthetic_coco, tmp_path, monkeypatch):
    monkeypatch.setattr("helpers.core.storage.free_bytes", lambda path: 10_000)
    with pytest.raises(OSError, match="Not enough free disk"):
        ic.build_image_cache([_part(synthetic_coco, "val2014")], tmp_path / "c", size=64, workers=1, progress=False)
    assert not list((tmp_path / "c").glob("*.bin"))
