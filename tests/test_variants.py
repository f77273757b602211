"""Every ablation variant builds and trains; augmentation is caption-safe; restval adds data."""

import pytest
import torch

from helpers.clip import model, variants
from helpers.core import config, env
from helpers.core.config import ConfigError
from helpers.core.lab import LabCode
from helpers.data import prepare
from helpers.data.synthetic import make_synthetic_coco
from helpers.store import runs
from helpers.training import train

LAB = LabCode.shipped()  # the lab's cells, as the notebooks hold them


def quiet(cfg, paths):
    return train.train(cfg, paths, progress=False, log=lambda m: None)


@pytest.mark.parametrize(
    "variant",  # every built-in record (restval needs its own cached images: its own test below), and one combination
    [name for name in variants.records() if name != "restval"] + ["head_ln+optim+augment"],
)
def test_every_variant_trains(workspace, variant):
    cfg, paths = workspace
    epochs = 2 if variant == "lowres" else 1  # one epoch leaves lowres nothing to change (refused: the next test)
    result = quiet(cfg.replace(variant=variant, epochs=epochs, max_steps_per_epoch=3, run_name=None), paths)
    assert result.run_dir.name.startswith(variants.canonical(variant) + "-resnet18")
    assert result.history[0]["train_loss"] > 0 and "val_rsum" in result.history[0]
    loaded, state = runs.load_trained(result.run_dir / "best.pt")
    assert state["arch"]["variant"] == variants.canonical(variant)  # stored in one spelling
    assert loaded.encode_image(torch.randn(2, 3, 64, 64)).shape == (2, 64)


@pytest.mark.parametrize("settings", [{"epochs": 1}, {"epochs": 3, "train_sizes": [48, 56]}, {"batch_size": 256, "variant": "bigbatch"}])
def test_a_variant_that_changes_nothing_for_the_settings_is_refused_in_02_and_04(workspace, settings, tmp_path):
    """lowres with one epoch or under an explicit TRAIN_SIZES, bigbatch at batch 256: the baseline under another name.
    02 refuses it before any folder is made; 04 refuses it before the study trains anything."""
    from helpers.core.config import ConfigError
    from helpers.study import base_settings

    cfg, paths = workspace
    asked = cfg.replace(**{"variant": "lowres", **settings}, run_name=None)
    before = sorted(p.name for p in paths.runs_dir.iterdir()) if paths.runs_dir.exists() else []
    with pytest.raises(ConfigError, match=rf"VARIANT='{asked.variant}' changes nothing with these settings .*leave it out of VARIANTS"):
        quiet(asked, paths)
    assert (sorted(p.name for p in paths.runs_dir.iterdir()) if paths.runs_dir.exists() else []) == before
    art = tmp_path / "art"  # 04 with no baseline run yet: the lab's defaults, and these settings written in the notebook
    namespace = {"ARTIFACTS_DIR": str(art), "BASE_RUN": None, "VARIANTS": [asked.variant], "SEEDS": [0], "LIVE_PLOT": False,
                 **{k.upper(): v for k, v in settings.items() if k != "variant"}}  # fmt: skip
    with pytest.raises(ConfigError, match="changes nothing with these settings"):
        base_settings.from_notebook(namespace)


def test_variant_code_is_what_it_claims(workspace):
    cfg, _ = workspace

    def build(v):
        return model.build_model(model.model_config(cfg.replace(variant=v), 64), LAB, pretrained=False)

    assert isinstance(build("head_ln").head[1], torch.nn.LayerNorm) and isinstance(build("head_ln").head[3], torch.nn.Dropout)
    assert isinstance(build("head_bn").head[1], torch.nn.BatchNorm1d)
    assert isinstance(build("attn_pool").trunk.avgpool.pool, variants.AttentionPool2d)
    base = build("baseline")
    assert [type(m) for m in base.head] == [torch.nn.Linear, torch.nn.GELU, torch.nn.Linear]  # baseline untouched


def test_training_side_flags(workspace):
    cfg, paths = workspace
    flags_cfg = cfg.replace(variant="optim+disc_lr+freeze_bn", epochs=2, run_name="flags")
    random_trunk = train.Trainer(flags_cfg, paths, progress=False, log=lambda m: None)
    state = random_trunk.new_state(flags_cfg.batch_size, flags_cfg.lr, pretrained=False)
    assert random_trunk.overrides == {
        "lr_schedule": {"requested": "constant", "resolved": "cosine"}, "grad_clip": {"requested": None, "resolved": 1.0},
        "learnable_temperature": {"requested": False, "resolved": True},
    }  # fmt: skip
    assert {g["lr_mult"] for g in state.optimizer.param_groups} == {1.0}  # IMAGE_WEIGHTS=None: nothing to protect
    # a trunk named for ImageNet weights (not downloaded here: pretrained=False) learns at 0.1x
    t = train.Trainer(flags_cfg.replace(image_weights="IMAGENET1K_V1"), paths, progress=False, log=lambda m: None)
    assert t.cfg.learnable_temperature and t.cfg.lr_schedule == "cosine" and t.cfg.grad_clip == 1.0
    t.state = t.new_state(t.cfg.batch_size, t.cfg.lr, pretrained=False)
    mults = {g["lr_mult"] for g in t.state.optimizer.param_groups}
    assert mults == {0.1, 1.0}
    trunk_group = next(g for g in t.state.optimizer.param_groups if g["lr_mult"] == 0.1)
    assert trunk_group["lr"] < t.cfg.lr  # warmup starts low, and the trunk is at 0.1x
    assert t.variant.warmup(0, 100) == 5
    t.model.train()
    for hook in t.variant.each("on_train_mode"):
        hook(t.model)
    assert not t.model.trunk.bn1.training and t.model.head.training


def test_augmentation_is_caption_safe():
    image = torch.zeros(3, 64, 64, dtype=torch.uint8)
    image[0, :, :20] = 255  # a red band on the left
    aug = LAB.CaptionSafeAugment()  # notebook 04's cell
    torch.manual_seed(0)
    for _ in range(20):
        out = aug(image)
        assert out.shape == image.shape and out.dtype == torch.uint8
        red = out[0].float()
        assert red[:, :32].mean() > red[:, 32:].mean()  # never flipped: the red stays on the left
        assert (out[1] < 40).all() and (out[2] < 40).all()  # never recoloured: red stays red


def test_bad_variant_names():
    from helpers.clip.identity import run_identity

    with pytest.raises(ConfigError, match="is not a variant"):  # the form: checked when the settings are read
        config.from_params(VARIANT="head ln")
    with pytest.raises(ConfigError, match="unknown variant.*'head_xx'.*student-modification"):  # the names: when a run is
        run_identity(config.from_params(VARIANT="head_xx"))  # resolved (its name, its identity, its plan)
    with pytest.raises(ConfigError, match="head_ln and head_bn both replace the head; they are alternatives"):
        run_identity(config.from_params(VARIANT="head_ln+head_bn"))
    with pytest.raises(ConfigError, match="unknown variant"):
        variants.canonical("flip")
    assert variants.canonical("augment+head_ln") == variants.canonical("head_ln+augment") == "head_ln+augment"
    assert run_identity(config.from_params(VARIANT="augment+head_ln")) == run_identity(config.from_params(VARIANT="head_ln+augment"))


def test_restval_needs_cached_images_then_adds_them(workspace, tmp_path, tiny_tower):
    cfg, paths = workspace
    with pytest.raises(ConfigError, match="INCLUDE_RESTVAL=True"):
        train.Trainer(cfg.replace(variant="restval", run_name="rv"), paths, progress=False)
    coco = make_synthetic_coco(tmp_path / "coco", n_train=40, n_val=60, seed=2)
    cfg2 = cfg.replace(data_dir=str(coco), artifacts_dir=str(tmp_path / "art"), val_images=20, test_images=20, include_restval=True)
    paths2 = env.resolve_paths(cfg2, environment="local")
    data = prepare.scan(coco)
    splits = prepare.build_splits(cfg2, paths2, data)
    prepare.cache_images(cfg2, paths2, data, splits, workers=1, progress=False)
    prepare.cache_captions(cfg2, paths2, data, splits, device="cpu", progress=False)
    t = train.Trainer(cfg2.replace(variant="restval", epochs=1, max_steps_per_epoch=1), paths2, progress=False, log=lambda m: None)
    assert len(t.train_set) == 40 + 20 and not set(splits.restval) & (set(splits.val) | set(splits.test))
    _, emb, image_id, caption = t.train_set[len(t.train_set) - 1]
    assert image_id in splits.restval and caption and emb.shape == (64,)
    # all of val2014 for a restval run: the 20 restval images it trained on are never scored
    from helpers.evaluation import evaluate

    t.fit()
    record = evaluate.evaluate(cfg2.replace(variant="restval", eval_split="val2014", run_name=t.run_name), paths2, "cpu", False).record
    assert record["num_images"] == 40 and record["scored_images"]["excluded_because_trained_on"] == 20
    assert record["scored_images"]["seen_in_training"] == 0 and record["scored_images"]["used_for_model_selection"] == 20
    base = t.run_name.replace("restval", "baseline")
    quiet(cfg2.replace(epochs=1, max_steps_per_epoch=1, run_name=base), paths2)
    record = evaluate.evaluate(cfg2.replace(eval_split="val2014", run_name=base), paths2, "cpu", False).record
    assert record["num_images"] == 60 and record["scored_images"]["excluded_because_trained_on"] == 0  # the baseline never saw restval
