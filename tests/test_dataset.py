import pytest
import torch

from helpers.core.artifacts import ArtifactError
from helpers.core.lab import LabCode
from helpers.core.storage import atomic_torch_save
from helpers.data import dataset as ds
from helpers.data.image_cache import ImageCache

LAB = LabCode.shipped()  # the lab's cells, as the notebooks hold them


@pytest.fixture(scope="module")
def parts(prepared):
    paths, cfg = prepared["paths"], prepared["cfg"]
    cache = ImageCache(paths.cache_dir)
    text = ds.load_text_embeds(paths.text_embeds_path("train"), cfg.text_model)
    return cache, text, prepared["splits"]


def test_text_cache_format(prepared):
    paths, cfg = prepared["paths"], prepared["cfg"]
    for split in ("train", "val"):
        t = ds.load_text_embeds(paths.text_embeds_path(split))
        n = len(t["captions"])
        assert t["embeddings"].dtype == torch.float16 and t["embeddings"].shape[0] == n
        assert t["caption_ids"].dtype == t["image_ids"].dtype == torch.int64 and len(t["image_ids"]) == n
        assert t["model"] == cfg.text_model and t["normalized"] is True and t["config"]["split"] == split
        assert torch.allclose(t["embeddings"].float().norm(dim=-1), torch.ones(n), atol=2e-3)


def test_train_item_and_epoch_captions(parts):
    cache, text, splits = parts
    d = LAB.CocoCacheDataset(cache, text, splits.train, mode="train", seed=1, normalize=ds.normalize_images)
    image, emb, _, caption = d[3]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and emb.shape == (64,)
    assert caption in [text["captions"][r] for r in d.rows[3]]
    row0 = [d.caption_row(i) for i in range(len(d))]
    d.set_epoch(1)
    row1 = [d.caption_row(i) for i in range(len(d))]
    assert row0 != row1  # a new caption draw per epoch
    d2 = LAB.CocoCacheDataset(cache, text, splits.train, mode="train", seed=1, normalize=ds.normalize_images)
    d2.set_epoch(1)
    assert row1 == [d2.caption_row(i) for i in range(len(d2))]  # ...and reproducible


def test_eval_and_caption_modes(prepared):
    paths, splits = prepared["paths"], prepared["splits"]
    cache = ImageCache(paths.cache_dir)
    text = ds.load_text_embeds(paths.text_embeds_path("val"))
    ev = LAB.CocoCacheDataset(cache, text, splits.test, mode="eval", normalize=ds.normalize_images)
    assert len(ev) == len(splits.test) and ev[0][3] == ev[0][3]
    caps = LAB.CocoCacheDataset(cache, text, splits.test, mode="captions")
    assert len(caps) == 5 * len(splits.test)
    image, _, image_id, caption = caps[7]
    assert image.dtype == torch.uint8 and image_id == ev.image_ids[int(caps.caption_image_index[7])]
    assert caption in text["captions"]


def test_normalize_images_matches_formula():
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    y = ds.normalize_images(x, "cpu", channels_last=True)
    mean = torch.tensor(ds.CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(ds.CLIP_STD).view(1, 3, 1, 1)
    assert torch.allclose(y, (x.float() / 255 - mean) / std, atol=1e-6)
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_loader_order_depends_only_on_seed_and_epoch(parts):
    cache, text, splits = parts
    d = LAB.CocoCacheDataset(cache, text, splits.train, mode="train")

    def order(epoch):
        return torch.cat([b[2] for b in ds.make_loader(d, 16, True, seed=5, epoch=epoch, num_workers=0)]).tolist()

    assert order(2) == order(2) and order(2) != order(3)
    batch = next(iter(ds.make_loader(d, 8, True, num_workers=2)))
    assert batch[0].shape == (8, 3, 64, 64) and batch[0].dtype == torch.uint8 and len(batch[3]) == 8


def test_text_cache_from_another_model_is_refused(prepared, tmp_path):
    path = prepared["paths"].text_embeds_path("train")
    with pytest.raises(ds.TextCacheMismatch, match="encoded with TEXT_MODEL=.*re-run 01_dataset_prep"):
        ds.load_text_embeds(path, expected_model="openai/clip-vit-large-patch14")
    atomic_torch_save({"embeddings": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(ArtifactError, match=r"x.pt \(the caption-embedding cache\) is damaged: missing caption_ids"):
        ds.load_text_embeds(tmp_path / "x.pt")  # a foreign file: the one artifact error, naming the fix


def test_images_missing_from_cache_are_counted(parts):
    cache, text, splits = parts
    with pytest.warns(UserWarning, match="Skipping 2 image"):
        d = LAB.CocoCacheDataset(cache, text, splits.train + [999_999_001, 999_999_002], mode="eval")
    assert len(d) == len(splits.train)


def test_text_embed_width_reads_the_metadata_not_the_cache(prepared, monkeypatch, tmp_path):
    path = prepared["paths"].text_embeds_path("train")
    width = ds.load_text_embeds(path)["embeddings"].shape[1]
    monkeypatch.setattr(ds, "load_text_embeds", lambda *a, **k: pytest.fail("text_embed_width loaded the whole cache"))
    assert ds.text_embed_width(path) == width
    monkeypatch.undo()
    damaged = tmp_path / "train_text_embeds.pt"
    damaged.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="01_dataset_prep"):  # a damaged cache: the loader's error, naming the fix
        ds.text_embed_width(damaged)
