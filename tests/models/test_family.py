"""Each registered model resolves its family's declaration: every residual block found and grouped,
the declared layer scales and FP32 norms present, every declared shift form buildable."""

from __future__ import annotations

import pytest
import torch

import msmlp
from msmlp.models.family import family_layout
from msmlp.models.registry import get_family
from msmlp.models.weights import block_contributions

# residual blocks per model: the depths in each family file
BLOCKS = {
    "msmlp_micro": 4,
    "msmlp_tiny": 18,
    "msmlp_small": 36,
    "msmlp_base": 36,
    "s2mlpv2_micro": 4,
    "s2mlpv2_small": 18,
    "s2mlpv2_medium": 24,
}


@pytest.mark.parametrize("name", msmlp.list_models())
def test_every_model_resolves_its_family_declaration(name):
    spec = get_family(msmlp.get_config(name).family)
    with torch.device("meta"):  # the module tree only: no weights are allocated
        model = msmlp.create_model(name)
    layout = family_layout(model, spec)
    assert len(layout.blocks) == BLOCKS[name]
    groups = {
        layout.group(f"{b}.{child}")
        for b in layout.blocks
        for child, _ in model.get_submodule(b).named_children()
    }
    assert {g.rsplit("/", 1)[1] for g in groups} == {"mix", "mlp"}
    declared_scales = sum(len(b.layer_scales) for b in spec.blocks)
    assert len(layout.layer_scales) == declared_scales * len(layout.blocks)
    assert layout.fp32_modules and all(layout.keeps_fp32(p) for p in layout.fp32_modules)
    assert layout.group("head") == "head" and layout.group("") == "graph"


@pytest.mark.parametrize("name", msmlp.list_models(test=True))
def test_every_declared_shift_form_builds_and_agrees(name, contributing):
    forms = get_family(msmlp.get_config(name).family).shift_forms
    assert forms[0] == "sliced"  # the deployment form first
    x = torch.randn(1, *msmlp.get_config(name).input_size)
    with torch.no_grad():
        outputs = [contributing(name, shift_form=form)(x) for form in forms]
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0], rtol=1e-5, atol=1e-5)
    assert min(block_contributions(contributing(name), x).values()) > 0.05
