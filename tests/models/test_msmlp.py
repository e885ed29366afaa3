"""MS-MLP: the paper's sizes, the official checkpoint layout, and forward passes on real images."""

from __future__ import annotations

import pytest
import torch

import msmlp
from msmlp.data.transforms import preprocess
from msmlp.models.complexity import complexity
from msmlp.models.msmlp import chunk_sizes, set_channels_first
from msmlp.models.weights import block_contributions, make_contributing

from .official_msmlp import OfficialMSMLP

# (params in M from the exact re-implementation, paper params in M, GMACs by torch.utils.flop_counter)
SIZES = {"msmlp_tiny": (28.66, 28, 4.44), "msmlp_small": (50.3, 50, 8.67), "msmlp_base": (88.7, 88, 15.33)}
OFFICIAL_ARGS = {"msmlp_tiny": (96, [3, 3, 9, 3]), "msmlp_micro": (20, [1, 1, 1, 1])}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_params_and_macs_match_the_paper(name):
    exact, paper, gmacs = SIZES[name]
    c = complexity(msmlp.create_model(name), (3, 224, 224))
    assert abs(c.params_m - exact) / exact < 0.001
    assert abs(c.params_m - paper) / paper < 0.025  # the paper rounds to whole millions
    assert abs(c.gmacs - gmacs) / gmacs < 0.005


@pytest.mark.parametrize("channels", [5, 7, 20, 96, 97, 101])
def test_chunk_sizes_follow_torch_chunk(channels):
    assert chunk_sizes(channels, 5) == [t.shape[0] for t in torch.chunk(torch.zeros(channels), 5)]


@pytest.mark.parametrize("name", sorted(OFFICIAL_ARGS))
def test_official_state_dict_loads_strictly_and_gives_same_logits(name, tmp_path, image_paths, contributing):
    official = OfficialMSMLP(*OFFICIAL_ARGS[name]).eval()
    # weights in which every block contributes, drawn on our model and loaded into the official one by
    # its own parameter names (strict: the names are the same)
    official.load_state_dict(contributing(name, seed=3).state_dict())
    ckpt = tmp_path / f"{name}_ckpt_epoch299.pth"
    # the release files hold the weights under "model", beside training state
    torch.save({"model": official.state_dict(), "epoch": 299, "max_accuracy": 82.1}, ckpt)

    ours = msmlp.create_model(name, pretrained=str(ckpt))
    assert set(ours.state_dict()) == set(official.state_dict())
    x = torch.from_numpy(preprocess(image_paths[:2], ours.deploy_config))
    with torch.no_grad():
        expected, got = official(x), ours(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert expected.std() > 0.1  # the logits carry signal: every block contributed
    # the deployment form is channels-first; switched back to the official channels-last MLP layout
    # (benchmarks compare the two) it gives the same logits too
    assert ours.layers[0].blocks[0].pwconv1.channels_first
    with torch.no_grad():
        torch.testing.assert_close(set_channels_first(ours, False)(x), expected, rtol=1e-5, atol=1e-5)


def test_reference_and_sliced_shift_forms_agree(contributing):
    a = contributing("msmlp_micro", shift_form="sliced")
    b = contributing("msmlp_micro", shift_form="reference")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-5, atol=1e-5)


def test_fresh_blocks_are_inert_and_contributing_weights_fix_that():
    model = msmlp.create_model("msmlp_micro")
    x = torch.randn(1, 3, 64, 64)
    assert max(block_contributions(model, x).values()) < 1e-6  # layer scale 1e-6 at init
    make_contributing(model)
    assert min(block_contributions(model, x).values()) > 0.05


def test_forward_features_and_head_compose(contributing):
    m = contributing("msmlp_micro")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = m.forward_features(x)
        assert feats.shape == (2, 160, 2, 2)
        assert m.forward_head(feats, pre_logits=True).shape == (2, 160)
        torch.testing.assert_close(m.forward_head(feats), m(x))
