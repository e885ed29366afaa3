"""S2-MLPv2: the paper's table, the shift semantics inside the model, and split attention."""

from __future__ import annotations

import pytest
import torch

import msmlp
from msmlp.models.complexity import complexity
from msmlp.models.s2mlpv2 import SplitAttention

# paper: Small/7 25M params 6.9B FLOPs(MACs); Medium/7 55M, 16.3B
SIZES = {"s2mlpv2_small": (25.11, 25, 6.9), "s2mlpv2_medium": (55.27, 55, 16.3)}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_params_and_macs_match_the_paper(name):
    exact, paper, gmacs = SIZES[name]
    c = complexity(msmlp.create_model(name), (3, 224, 224))
    assert abs(c.params_m - exact) / exact < 0.001
    assert abs(c.params_m - paper) / paper < 0.01
    assert abs(c.gmacs - gmacs) / gmacs < 0.02


def test_structure_of_small():
    m = msmlp.create_model("s2mlpv2_small")
    assert [len(s.blocks) for s in m.stages] == [4, 14]
    assert m.patch_embed.proj.kernel_size == (7, 7) and m.patch_embed.proj.stride == (7, 7)
    assert m.stages[1].downsample.kernel_size == (2, 2)
    assert m.stages[0].blocks[0].mlp.fc1.out_features == 3 * 192
    attn = m.stages[0].blocks[0].mix.attn
    assert attn.fc1.bias is None and attn.fc2.bias is None and attn.fc1.out_features == 48


def test_split_attention_weights_sum_to_one_per_channel():
    attn = SplitAttention(8)
    same = torch.randn(2, 3, 3, 8)
    # equal branches: the softmax-weighted sum returns the branch itself
    torch.testing.assert_close(attn((same, same, same)), same, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 4, 4, 32), (3, 5, 7, 32), (2, 16, 16, 32)])
def test_split_attention_deployment_form_equals_reference_bit_for_bit(shape):
    torch.manual_seed(0)
    attn = SplitAttention(32)
    xs = [torch.randn(shape) for _ in range(3)]
    with torch.no_grad():
        assert torch.equal(attn.forward_deploy(xs), attn.forward_reference(xs))


def test_models_use_the_deployment_form_unless_asked_for_the_reference():
    sliced = msmlp.create_model("s2mlpv2_micro")
    reference = msmlp.create_model("s2mlpv2_micro", shift_form="reference")
    assert all(b.mix.attn.deploy for s in sliced.stages for b in s.blocks)
    assert not any(b.mix.attn.deploy for s in reference.stages for b in s.blocks)


def test_reference_and_sliced_shift_forms_agree(contributing):
    a = contributing("s2mlpv2_micro", shift_form="sliced")
    b = contributing("s2mlpv2_micro", shift_form="reference")
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-5)


def test_bad_shift_form_is_refused():
    with pytest.raises(ValueError, match="shift_form must be one of"):
        msmlp.create_model("s2mlpv2_micro", shift_form="circular")
