import json

import pytest

from helpers.data import coco, splits
from helpers.data.coco import DataError
from helpers.data.synthetic import make_synthetic_coco


def test_load_captions(synthetic_coco):
    table = coco.load_captions(synthetic_coco, "train2014")
    assert len(table.image_files) == 120 and len(table.captions) == 600
    assert all(len(rows) == 5 for rows in table.captions_by_image().values())
    assert table.dropped == {"empty_caption": 0, "unknown_image": 0, "non_text_caption": 0}


def test_bad_captions_are_dropped_and_counted(coco_copy):
    path = coco_copy / "annotations" / "captions_val2014.json"
    doc = json.loads(path.read_text())
    image_id = doc["images"][0]["id"]
    doc["annotations"] += [
        {"id": 900001, "image_id": image_id, "caption": "   "},
        {"id": 900002, "image_id": 424242424, "caption": "a caption of an image nobody has"},
        {"id": 900003, "image_id": image_id, "caption": "un café à côté d'un vélo   rouge ☕"},
        {"id": 900004, "image_id": image_id, "caption": " ".join(["word"] * 300)},
    ]
    path.write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="dropped 1 caption"):
        table = coco.load_captions(coco_copy, "val2014")
    assert table.dropped == {"empty_caption": 1, "unknown_image": 1, "non_text_caption": 0}
    assert "un café à côté d'un vélo rouge ☕" in table.captions  # whitespace collapsed, unicode kept
    assert any(len(c.split()) == 300 for c in table.captions)  # kept; truncated later by the tokenizer


def test_malformed_and_missing_annotations(coco_copy):
    path = coco_copy / "annotations" / "captions_train2014.json"
    path.write_text(path.read_text()[:1000])  # truncated download
    with pytest.raises(DataError, match="not a valid COCO captions file.*re-run"):
        coco.load_captions(coco_copy, "train2014")
    path.unlink()
    with pytest.raises(DataError, match="No captions_train2014.json.*DATA_DIR"):
        coco.load_captions(coco_copy, "train2014")
    with pytest.raises(DataError, match="missing annotations/captions_train2014.json"):
        coco.check_layout(coco_copy)


def test_wrong_data_dir(tmp_path):
    with pytest.raises(DataError, match="does not exist.*set DATA_DIR"):
        coco.check_layout(tmp_path / "nowhere")
    (tmp_path / "train2014").mkdir()
    with pytest.raises(DataError, match="not in COCO 2014 layout: missing val2014"):
        coco.check_layout(tmp_path)


def test_shipped_karpathy_lists():
    val, test = splits.karpathy_ids("val"), splits.karpathy_ids("test")
    assert len(val) == len(set(val)) == 5000 and len(test) == len(set(test)) == 5000
    assert not set(val) & set(test)


def test_deterministic_fallback_split():
    train, val2014 = list(range(1, 101)), list(range(1000, 1050))
    a = splits.make_splits(train, val2014, train_images=40, seed=3)
    b = splits.make_splits(train, val2014, train_images=40, seed=3)
    assert a == b and a.protocol == "deterministic"
    assert len(a.train) == 40 and len(a.val) == 25 and len(a.test) == 25
    assert not set(a.val) & set(a.test) and a.restval == []
    c = splits.make_splits(train, val2014, val_images=10, test_images=15, seed=4)
    assert (len(c.val), len(c.test), len(c.restval)) == (10, 15, 25)
    with pytest.raises(ValueError, match="exceed the 50 usable"):
        splits.make_splits(train, val2014, val_images=40, test_images=40)


def test_karpathy_protocol_used_when_ids_present(tmp_path):
    root = make_synthetic_coco(tmp_path / "k", n_train=10, n_val=20, karpathy=True)
    doc = json.loads((root / "annotations" / "captions_val2014.json").read_text())
    ids = [img["id"] for img in doc["images"]] + [1, 2, 3]  # 3 ids outside both lists -> restval
    s = splits.make_splits(list(range(10)), ids)
    assert s.protocol == "karpathy-subset"
    assert set(s.val) <= set(splits.karpathy_ids("val")) and set(s.test) <= set(splits.karpathy_ids("test"))
    assert (len(s.val), len(s.test), s.restval) == (10, 10, [1, 2, 3])
    full = splits.make_splits([1], splits.karpathy_ids("val") + splits.karpathy_ids("test") + [7])
    assert full.protocol == "karpathy-5k" and full.restval == [7]


def test_identical_duplicate_image_records_are_merged_and_counted(coco_copy):
    import json

    from helpers.data.coco import load_captions

    path = coco_copy / "annotations" / "captions_train2014.json"
    data = json.loads(path.read_text())
    data["images"].append(dict(data["images"][2]))  # the very same record twice
    path.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match=rf"1 duplicate image record\(s\) merged \(ids {data['images'][2]['id']}\)"):
        table = load_captions(coco_copy, "train2014")
    assert len(table.image_files) == len(data["images"]) - 1
