from __future__ import annotations

import pytest

import msmlp
from msmlp.errors import InputError
from msmlp.models.registry import DeployConfig

FULL = ["msmlp_base", "msmlp_small", "msmlp_tiny", "s2mlpv2_medium", "s2mlpv2_small"]


def test_list_models_and_families():
    names = msmlp.list_models()
    assert set(FULL) <= set(names)
    assert {"msmlp_micro", "s2mlpv2_micro"} <= set(names)
    assert msmlp.list_models("msmlp*") == ["msmlp_base", "msmlp_micro", "msmlp_small", "msmlp_tiny"]
    assert msmlp.list_models("s2mlpv2*") == ["s2mlpv2_medium", "s2mlpv2_micro", "s2mlpv2_small"]
    assert msmlp.list_models("nothing*") == []


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("s2mlpv2_smal", "s2mlpv2_small"), ("msmlp-tiny", "msmlp_tiny"), ("MSMLP_BASE", "msmlp_base")],
)
def test_unknown_name_suggests_closest(name, suggestion):
    with pytest.raises(InputError, match=rf"unknown model '{name}'; did you mean .*{suggestion}"):
        msmlp.create_model(name)


def test_unknown_name_without_close_match_lists_models():
    with pytest.raises(InputError, match="known models: msmlp_base"):
        msmlp.get_config("zzzz")


@pytest.mark.parametrize("name", FULL)
def test_deploy_config_of_full_models(name):
    cfg = msmlp.get_config(name)
    assert cfg.input_size == (3, 224, 224)
    assert cfg.num_classes == 1000
    assert cfg.interpolation == "bicubic" and 0 < cfg.crop_pct <= 1
    assert len(cfg.mean) == len(cfg.std) == 3
    assert cfg.family == name.split("_")[0]
    assert 1 <= cfg.min_batch <= cfg.max_batch
    assert DeployConfig.from_dict(cfg.to_dict()) == cfg


def test_model_carries_its_config_and_name():
    m = msmlp.create_model("s2mlpv2_micro")
    assert m.model_name == "s2mlpv2_micro"
    assert m.deploy_config == msmlp.get_config("s2mlpv2_micro")
    assert not m.training


def test_num_classes_override_updates_config():
    m = msmlp.create_model("msmlp_micro", num_classes=10)
    assert m.head.out_features == 10
    assert m.deploy_config.num_classes == 10
