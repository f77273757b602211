import pytest
import torch

from helpers.core.lab import LabCode
from helpers.data import text_tower as tt
from helpers.data.coco import load_captions

LAB = LabCode.shipped()  # the lab's cells, as the notebooks hold them


@pytest.fixture(scope="module")
def tower(tiny_tower):
    return tt.load_text_tower(str(tiny_tower), "cpu")


def _padded_to_77(tower, texts):
    batch = tower.tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return torch.nn.functional.normalize(tower.model(**batch).text_embeds, dim=-1)


def test_cached_embedding_equals_padding_to_77(tower, synthetic_coco):
    texts = load_captions(synthetic_coco, "val2014").captions[:64]
    texts += ["a", "un vélo rouge à côté du café ☕", " ".join(["long"] * 300)]
    stats = tt.EncodeStats()
    fast = LAB.encode_text(texts, tower, batch_size=16, stats=stats)
    ref = _padded_to_77(tower, texts)
    assert fast.shape == (len(texts), tower.dim)
    assert (fast - ref).abs().max() < 1e-5
    assert torch.allclose(fast.norm(dim=-1), torch.ones(len(texts)), atol=1e-5)
    assert stats.captions == len(texts) and stats.truncated == 1
    assert stats.token_reduction > 2.0  # the 300-word caption forces one batch to 77


def test_order_is_preserved_and_batches_do_not_matter(tower):
    texts = ["a red circle on the left", "blue", "there is a green square on the middle and a yellow triangle"]
    one = LAB.encode_text(texts, tower, batch_size=1)
    many = LAB.encode_text(texts, tower, batch_size=3)
    single = LAB.encode_text([texts[2]], tower)
    assert torch.allclose(one, many, atol=1e-5) and torch.allclose(many[2], single[0], atol=1e-5)
    assert not torch.allclose(many[0], many[1])  # the EOS pooling sees the words, not one constant


def test_unnormalised_and_empty(tower):
    raw = LAB.encode_text(["a blue square"], tower, normalize=False)
    assert abs(raw.norm().item() - 1.0) > 1e-3
    assert LAB.encode_text([], tower).shape == (0, tower.dim)


def test_bad_text_model_names_the_fix(tmp_path):
    with pytest.raises(OSError, match="TEXT_MODEL=.*save_pretrained"):
        tt.load_text_tower(str(tmp_path), "cpu")


def test_parameter_count_from_the_config_alone_equals_the_loaded_towers(tower, tiny_tower, tmp_path):
    assert tt.parameter_count(str(tiny_tower)) == sum(p.numel() for p in tower.model.parameters())
    from transformers import CLIPConfig

    CLIPConfig().save_pretrained(tmp_path / "clip")  # the hub's openai/clip-vit-base-patch32: a whole CLIP config, no weights
    assert not list((tmp_path / "clip").glob("*.safetensors"))
    assert tt.parameter_count(str(tmp_path / "clip")) == 63_428_096  # its text transformer (63.2M) and projection (512 x 512)
    assert tt.parameter_count(str(tmp_path / "nothing-here")) is None


def _whole_clip_beside(tower, out):
    """A whole CLIP checkpoint (text and vision halves, as the hub's openai/clip-vit-base-patch32) whose text half is
    ``tower``'s, saved with ``tower``'s tokenizer."""
    from transformers import CLIPConfig, CLIPModel

    text = tower.model.config.to_dict()
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32,
              "patch_size": 16, "projection_dim": text["projection_dim"]}  # fmt: skip
    whole = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=text["projection_dim"]))
    whole.text_model.load_state_dict(tower.model.text_model.state_dict())
    whole.text_projection.load_state_dict(tower.model.text_projection.state_dict())
    whole.save_pretrained(out)
    tower.tokenizer.save_pretrained(out)
    return out


def test_a_whole_clip_checkpoint_loads_its_text_half_without_a_load_report(tower, tmp_path):
    """transformers 5 logs a "LOAD REPORT" table of every vision key it leaves unused (about 200 lines in red on Colab,
    read as an error): the kit loads quietly and checks the loading information itself; the text half is the same."""
    import logging

    from transformers import CLIPTextModelWithProjection

    folder = _whole_clip_beside(tower, tmp_path / "whole")
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # transformers' own handler is bound to the stream of its first use: read its records
    logging.getLogger("transformers").addHandler(handler)
    try:
        CLIPTextModelWithProjection.from_pretrained(folder)  # as transformers loads it: the report is logged (v5)
        reported = [r for r in records if "UNEXPECTED" in r.getMessage()]
        records.clear()
        loaded = tt.load_text_tower(str(folder), "cpu")
        assert not [r for r in records if r.levelno >= logging.WARNING], [r.getMessage()[:200] for r in records]
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    import importlib.util

    if importlib.util.find_spec("transformers.utils.loading_report"):  # transformers 5 logs the report (4 logged one line)
        assert reported
    texts = ["a red circle", "two blue squares"]
    assert torch.allclose(LAB.encode_text(texts, loaded), LAB.encode_text(texts, tower), atol=1e-5)


def test_a_text_tower_with_missing_weights_is_refused_not_randomly_filled(tower, tmp_path):
    """A checkpoint lacking some of the text tower's tensors: transformers would fill them with random values (and every
    caption embedding with them); the kit refuses it and names a tensor."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "partial"
    tower.model.save_pretrained(folder)
    tower.tokenizer.save_pretrained(folder)
    weights = next(folder.glob("*.safetensors"))
    state = load_file(weights)
    save_file({k: v for k, v in state.items() if "text_projection" not in k}, weights, metadata={"format": "pt"})
    with pytest.raises(OSError, match=r"holds no weights for 1 tensor\(s\) of the text tower \(e\.g\. text_projection\.weight\)"):
        tt.load_text_tower(str(folder), "cpu")


def test_zero_shot_from_a_text_only_folder_is_refused_not_a_random_image_tower(tiny_tower, tmp_path):
    """COMPARE_ZERO_SHOT with a local tower saved as a text model alone: transformers read it as an image tower with
    every tensor random, and the zero-shot rows were chance figures under CLIP's name; now it is refused, saying why."""
    import shutil

    from helpers.evaluation.zero_shot import zero_shot_image_features

    text_only = tmp_path / "text-only"
    shutil.copytree(tiny_tower, text_only, ignore=shutil.ignore_patterns("vision"))
    with pytest.raises(OSError, match=r"COMPARE_ZERO_SHOT needs the CLIP image tower .*the local folder holds no image tower"):
        zero_shot_image_features(str(text_only), None, [], torch.device("cpu"))
