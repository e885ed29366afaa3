from __future__ import annotations

import argparse

import pytest
import torch

import msmlp
from msmlp.errors import InputError
from msmlp.models.checkpoint import read_state_dict


@pytest.mark.parametrize("wrap", [None, "model", "state_dict"])
def test_checkpoint_layouts_load(wrap, tmp_path, contributing):
    src = contributing("s2mlpv2_micro", seed=5)
    sd = src.state_dict()
    path = tmp_path / "ckpt.pth"
    torch.save(sd if wrap is None else {wrap: sd, "epoch": 3}, path)
    dst = msmlp.create_model("s2mlpv2_micro", pretrained=str(path))
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_data_parallel_prefix_is_stripped(tmp_path, contributing):
    sd = {f"module.{k}": v for k, v in contributing("msmlp_micro").state_dict().items()}
    torch.save(sd, tmp_path / "dp.pth")
    assert set(read_state_dict(tmp_path / "dp.pth")) == set(msmlp.create_model("msmlp_micro").state_dict())


def test_wrong_model_names_mismatched_keys_and_shapes(tmp_path):
    torch.save({"model": msmlp.create_model("msmlp_micro").state_dict()}, tmp_path / "micro.pth")
    with pytest.raises(
        InputError,
        match=r"does not fit model 'msmlp_tiny': .*shape mismatches: patch_embed.proj.weight \(20, 3, 4, 4\) vs \(96, 3, 4, 4\)",
    ):
        msmlp.create_model("msmlp_tiny", pretrained=str(tmp_path / "micro.pth"))
    with pytest.raises(InputError, match=r"missing keys: .*unexpected keys: "):
        msmlp.create_model("s2mlpv2_micro", pretrained=str(tmp_path / "micro.pth"))


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="cannot read checkpoint .*bad.pth"):
        msmlp.create_model("msmlp_micro", pretrained=str(bad))
    with pytest.raises(InputError, match="does not exist"):
        msmlp.create_model("msmlp_micro", pretrained=str(tmp_path / "nope.pth"))


def test_pickled_objects_are_refused(tmp_path):
    # any class outside torch's safe set would run arbitrary code when unpickled: refused
    torch.save({"model": argparse.Namespace(payload="x")}, tmp_path / "evil.pth")
    with pytest.raises(InputError, match="cannot read checkpoint"):
        read_state_dict(tmp_path / "evil.pth")


def test_non_state_dict_is_refused(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(InputError, match="holds no state dict"):
        read_state_dict(tmp_path / "list.pth")
