"""A fine-tuned checkpoint keeps its own head; another input size is allowed where the family's stride
allows it; class names must match the class count. Each mistake is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import msmlp
from msmlp.errors import InputError
from msmlp.models.checkpoint import read_state_dict
from msmlp.models.variant import check_input_size, checkpoint_classes, deploy_variant, resolve_classes
from msmlp.models.weights import load_for_deploy
from msmlp.optionspec import parse_input_size

REFERENCE = Path(__file__).resolve().parents[2] / "reference"


@pytest.mark.parametrize("name", ["msmlp_micro", "s2mlpv2_micro"])
def test_a_ten_class_checkpoint_loads_with_its_own_head(name):
    path = REFERENCE / f"{name}_digits.pth"
    state = read_state_dict(path)
    assert checkpoint_classes(name, state) == 10
    model = load_for_deploy(name, path)
    assert model.deploy_config.num_classes == 10 and model.head.out_features == 10
    assert model.weights_info["source"] == "checkpoint"
    torch.testing.assert_close(model.head.weight, state["head.weight"])  # loaded, not drawn
    with torch.no_grad():
        assert model(torch.zeros(2, *model.deploy_config.input_size)).shape == (2, 10)


def test_num_classes_must_agree_with_the_checkpoint():
    state = read_state_dict(REFERENCE / "msmlp_micro_digits.pth")
    assert resolve_classes("msmlp_micro", state, 10) == 10
    with pytest.raises(
        InputError, match=r"--num-classes 7 disagrees with checkpoint .* head.weight has 10 rows"
    ):
        resolve_classes("msmlp_micro", state, 7)
    assert resolve_classes("msmlp_micro", None, 7) == 7  # no checkpoint: synthetic weights, 7 outputs
    assert resolve_classes("msmlp_micro", None, None) == 1000
    with pytest.raises(InputError, match="--num-classes 0 must be a positive integer"):
        resolve_classes("msmlp_micro", None, 0)


def test_a_headless_state_dict_falls_back_and_the_strict_load_names_the_gap(tmp_path):
    state = read_state_dict(REFERENCE / "msmlp_micro_digits.pth")
    del state["head.weight"], state["head.bias"]
    torch.save(state, tmp_path / "headless.pth")
    with pytest.raises(InputError, match="2 missing keys: head.weight, head.bias"):
        load_for_deploy("msmlp_micro", tmp_path / "headless.pth")


@pytest.mark.parametrize(
    ("text", "size"), [("256", (256, 256)), ("256x320", (256, 320)), (" 96 X 128 ", (96, 128))]
)
def test_input_size_text(text, size):
    assert parse_input_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "256x", "x256", "-64", "64x64x3", "２５６", "1.5"])
def test_bad_input_size_text_is_one_line(text):
    with pytest.raises(InputError, match=r"--input-size .* must be SIDE or HEIGHTxWIDTH in pixels"):
        parse_input_size(text)


def test_input_size_must_be_a_multiple_of_the_family_stride():
    assert check_input_size("msmlp_micro", (96, 128)) == (96, 128)
    assert check_input_size("s2mlpv2_micro", (140, 112)) == (140, 112)
    with pytest.raises(InputError, match="multiple of its total stride 32 \\(e.g. 96\\)"):
        check_input_size("msmlp_micro", (100, 100))
    with pytest.raises(InputError, match="s2mlpv2 model must be a positive multiple of its total stride 14"):
        check_input_size("s2mlpv2_micro", (112, 7))


@pytest.mark.parametrize(("name", "size"), [("msmlp_micro", (96, 128)), ("s2mlpv2_micro", (140, 112))])
def test_both_shift_forms_agree_at_another_size(name, size):
    """The deployment form (Slice/Concat with static sizes, what is traced) computes the reference
    form's values at a size other than the registered one."""
    sliced = msmlp.create_model(name, num_classes=10)
    reference = msmlp.create_model(name, num_classes=10, shift_form="reference")
    reference.load_state_dict(sliced.state_dict())
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(sliced(x), reference(x), rtol=1e-4, atol=1e-5)


def test_deploy_variant_records_classes_size_and_labels():
    names = tuple(f"digit {i}" for i in range(10))
    config = deploy_variant("msmlp_micro", num_classes=10, input_size=(96, 128), labels=names)
    assert (config.num_classes, config.input_size, config.labels) == (10, (3, 96, 128), names)
    assert msmlp.get_config("msmlp_micro").labels == ()  # the registered config is untouched
    assert type(config).from_dict(config.to_dict()) == config
    with pytest.raises(InputError, match="--labels names 3 classes but the model has 10 outputs"):
        deploy_variant("msmlp_micro", num_classes=10, labels=("a", "b", "c"))
