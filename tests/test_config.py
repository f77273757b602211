import json

import pytest

from helpers.core import config
from helpers.core.config import ConfigError


def test_defaults_follow_the_lab():
    cfg = config.from_params({})
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.optimizer) == (1e-4, 64, 10, "adamw")
    assert cfg.text_model == "openai/clip-vit-base-patch32" and cfg.image_size == 224


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"'EPOCS'.*Did you mean EPOCHS\?"):
        config.from_params({"EPOCS": 3})


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("EPOCHS", "3", "EPOCHS must be int"),
        ("EPOCHS", 2.5, "EPOCHS must be int"),
        ("EPOCHS", True, "EPOCHS must be int"),
        ("LR", "1e-4", "LR must be float"),
        ("AMP", 1, "AMP must be bool"),
        ("TRAIN_IMAGES", "1000", "TRAIN_IMAGES must be int or None"),
        ("QUERIES", ["ok", 3], "QUERIES must be a list of str"),
        ("DATA_SOURCE", "s3", "DATA_SOURCE='s3' is not one of"),
        ("OPTIMIZER", "AdamW", "OPTIMIZER='AdamW' is not one of"),
        ("BATCH_SIZE", 0, "BATCH_SIZE must be positive"),
        ("CACHE_QUALITY", 101, "CACHE_QUALITY must be between"),
    ],
)
def test_wrong_types_and_values_name_the_key(key, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config.from_params({key: value})


def test_int_is_accepted_for_float_and_stored_as_float():
    cfg = config.from_params(GRAD_CLIP=1)
    assert cfg.grad_clip == 1.0 and isinstance(cfg.grad_clip, float)


def test_keys_are_case_insensitive_but_not_duplicated():
    assert config.from_params({"epochs": 2}).epochs == 2
    with pytest.raises(ConfigError, match="given twice"):
        config.from_params({"epochs": 2, "EPOCHS": 3})


def test_from_notebook_takes_uppercase_globals_only():
    ns = {"EPOCHS": 2, "SEED": 7, "cfg": object(), "json": json, "_HIDDEN": 1, "print": print}
    cfg = config.from_notebook(ns)
    assert (cfg.epochs, cfg.seed) == (2, 7)
    with pytest.raises(ConfigError, match="EPOCHZ"):
        config.from_notebook({"EPOCHZ": 2})


def test_a_code_cells_own_constants_are_not_settings_and_a_parameter_anywhere_still_is():
    """A kernel's history (IPython's ``In``): the parameters cell, then a modification cell that defines a class and
    assigns ``BIAS`` and imports ``F``. ``BIAS`` is the code's, not an unknown setting; ``EPOCHS`` written in that cell
    is still the setting (never dropped silently); a misspelt parameter in the parameters cell is still refused."""
    parameters = "EPOCHS = 2\nSEED = 7\n"
    modification = "import torch.nn.functional as F\nBIAS = -10.0\nEPOCHS = 3\n\n\nclass Head:\n    pass\n"
    ns = {"In": ["", parameters, modification], "EPOCHS": 3, "SEED": 7, "BIAS": -10.0, "F": json}
    cfg = config.from_notebook(ns)
    assert (cfg.epochs, cfg.seed) == (3, 7)
    with pytest.raises(ConfigError, match="BIAS"):  # the same name in a cell of assignments only: a misspelt setting
        config.from_notebook({"In": ["", parameters + "BIAS = 1\n"], "EPOCHS": 2, "BIAS": 1})
    with pytest.raises(ConfigError, match="EPOCHZ"):
        config.from_notebook({"In": ["", "EPOCHZ = 2\n", modification], "EPOCHZ": 2})


def test_json_round_trip(tmp_path):
    cfg = config.from_params(EPOCHS=3, QUERIES=["a cat"], TRAIN_IMAGES=None, ARTIFACTS_DIR=tmp_path)
    path = cfg.save(tmp_path / "cfg.json")
    data = json.loads(path.read_text())
    assert data["epochs"] == 3 and data["artifacts_dir"] == str(tmp_path)  # a str, never a Path
    assert config.load(path) == cfg
    assert config.load(path, EPOCHS=5).epochs == 5


def test_load_rejects_non_object_and_missing(tmp_path):
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        config.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.json")


def test_replace_revalidates():
    cfg = config.from_params({})
    assert cfg.replace(epochs=4).epochs == 4
    with pytest.raises(ConfigError):
        cfg.replace(epochs="4")
