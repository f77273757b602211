import math

import pytest
import torch
import torch.nn.functional as F

from helpers.clip import loss, model
from helpers.core import config
from helpers.core.lab import LabCode

LAB = LabCode.shipped()  # the lab's cells, as the notebooks hold them


def _unit(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g), dim=-1)


def _reference_loss(img, txt, scale):
    """Plain formula: -1/2N sum_i [log softmax_j(s*<i_i,t_j>)_i + log softmax_j(s*<t_i,i_j>)_i]."""
    n = img.shape[0]
    total = 0.0
    for i in range(n):
        row = [scale * float(img[i] @ txt[j]) for j in range(n)]
        col = [scale * float(txt[i] @ img[j]) for j in range(n)]
        total += -(row[i] - math.log(sum(math.exp(v) for v in row)))
        total += -(col[i] - math.log(sum(math.exp(v) for v in col)))
    return total / (2 * n)


@pytest.mark.parametrize("scale", [1.0, 1 / 0.07, 100.0])
def test_clip_loss_matches_reference(scale):
    img, txt = _unit(9, 16, 0), _unit(9, 16, 1)
    assert abs(LAB.clip_loss(img, txt, scale).item() - _reference_loss(img, txt, scale)) < 1e-4


def test_clip_loss_is_symmetric_and_temperature_sharpens():
    img, txt = _unit(16, 32, 2), _unit(16, 32, 3)
    assert torch.isclose(LAB.clip_loss(img, txt, 14.0), LAB.clip_loss(txt, img, 14.0), atol=1e-6)
    # perfect alignment: a lower temperature (higher scale) drives the loss towards 0
    aligned = [LAB.clip_loss(img, img, s).item() for s in (1.0, 10.0, 100.0)]
    assert aligned[0] > aligned[1] > aligned[2] and aligned[2] < 1e-3
    # random pairs at scale 1 sit near chance, log(N)
    assert abs(LAB.clip_loss(img, txt, 1.0).item() - math.log(16)) < 0.2


def test_in_batch_accuracy():
    img = _unit(8, 16, 4)
    assert loss.in_batch_hits(img, img).tolist() == [img.shape[0], img.shape[0]]
    assert loss.in_batch_hits(img, img.roll(1, 0)).tolist() == [0, 0]


@pytest.fixture(scope="module")
def tiny_model():
    cfg = config.from_params(IMAGE_BACKBONE="resnet18", IMAGE_WEIGHTS=None, HIDDEN_DIM=32, LEARNABLE_TEMPERATURE=True)
    return model.build_model(model.model_config(cfg, embed_dim=24), LAB), cfg


def test_model_shapes_norm_and_gradients(tiny_model):
    m, _ = tiny_model
    x = torch.randn(4, 3, 64, 64)
    out = m.encode_image(x)
    assert out.shape == (4, 24) and torch.allclose(out.norm(dim=-1), torch.ones(4), atol=1e-5)
    assert m.encode_image(x, normalize=False).norm(dim=-1).sub(1).abs().max() > 1e-3
    assert isinstance(m.head[1], torch.nn.GELU) and m.head[0].in_features == 512
    assert abs(m.scale().item() - 1 / 0.07) < 1e-3
    text = _unit(4, 24, 5)
    LAB.clip_loss(out, text, m.scale()).backward()
    assert m.head[0].weight.grad is not None and m.trunk.conv1.weight.grad is not None
    assert m.logit_scale.grad is not None


def test_frozen_text_tower_gets_no_gradients(tiny_tower):
    from helpers.data.text_tower import load_text_tower

    tower = load_text_tower(str(tiny_tower), "cpu")
    assert not any(p.requires_grad for p in tower.model.parameters())
    cfg = config.from_params(IMAGE_BACKBONE="resnet18", IMAGE_WEIGHTS=None, HIDDEN_DIM=16)
    m = model.build_model(model.model_config(cfg, tower.dim), LAB)
    img = m.encode_image(torch.randn(2, 3, 32, 32))
    batch = tower.tokenizer(["a red circle", "a blue square"], padding=True, return_tensors="pt")
    text = F.normalize(tower.model(**batch).text_embeds, dim=-1)
    LAB.clip_loss(img, text, m.scale()).backward()
    assert all(p.grad is None for p in tower.model.parameters())
    assert not m.logit_scale.requires_grad  # fixed temperature by default


def test_logit_scale_is_clamped_at_100(tiny_model):
    m, _ = tiny_model
    with torch.no_grad():
        m.logit_scale.fill_(10.0)
    m.clamp_logit_scale()  # the trainer calls it after every optimizer step
    assert abs(m.scale().item() - 100.0) < 1e-3
    with torch.no_grad():
        m.logit_scale.fill_(-1.0)
    m.clamp_logit_scale()
    assert m.scale().item() == pytest.approx(1.0)  # tau never above 1
    with torch.no_grad():
        m.logit_scale.fill_(5.0)
    m.scale().backward()  # no clamp in the forward pass: the gradient is alive above the cap, so it can come down
    assert m.logit_scale.grad is not None and m.logit_scale.grad.item() > 0
    m.logit_scale.grad = None
    with torch.no_grad():
        m.logit_scale.fill_(math.log(1 / 0.07))


def test_rebuild_from_config_dict_and_mismatch(tiny_model):
    m, cfg = tiny_model
    arch = model.model_config(cfg, 24)
    assert all(isinstance(v, (str, int, float, bool, type(None))) for v in arch.values())
    clone = model.build_model(arch, LAB, pretrained=False)
    clone.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 32, 32)
    m.eval(), clone.eval()
    assert torch.allclose(m.encode_image(x), clone.encode_image(x))
    other = {**arch, "hidden_dim": 64}
    with pytest.raises(model.CheckpointMismatch, match="HIDDEN_DIM: checkpoint 32 vs requested 64.*RUN_NAME"):
        model.check_same_architecture(arch, other, "runs/x/checkpoint.pt")
    with pytest.raises(ValueError, match="IMAGE_WEIGHTS='IMAGENET1K_V9'.*IMAGENET1K_V1"):
        model.build_model({**arch, "image_weights": "IMAGENET1K_V9"}, LAB)


def test_parameter_summary(tiny_model):
    m, _ = tiny_model
    text = model.parameter_summary(m)
    trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert f"**{trainable:,}**" in text and "projection head" in text
    with_text = model.parameter_summary(m, text_parameters=63_428_096, text_name="openai/clip-vit-base-patch32")
    frozen = sum(p.numel() for p in m.parameters() if not p.requires_grad)  # the fixed temperature
    assert "| text tower `openai/clip-vit-base-patch32` (CLIP, frozen: its caption embeddings are cached) | 0 | 63,428,096 |" in with_text
    assert f"**{trainable:,}** | **{63_428_096 + frozen:,}** |" in with_text
