"""Every registered model runs on a real photograph after its deployment preprocessing,
in eval mode, deterministically."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import msmlp
from msmlp.data.transforms import load_image, preprocess

MICRO = msmlp.list_models(test=True)
FULL = msmlp.list_models(test=False)


def _run(name, contributing, image_paths):
    model = contributing(name)
    cfg = model.deploy_config
    x = torch.from_numpy(preprocess(image_paths, cfg))
    assert x.shape == (len(image_paths), *cfg.input_size)
    with torch.no_grad():
        a, b = model(x), model(x)
    assert a.shape == (len(image_paths), cfg.num_classes)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)  # deterministic in eval mode
    # different photographs give different predictions
    assert not torch.allclose(a[0], a[1], atol=1e-3)
    return a


@pytest.mark.parametrize("name", MICRO)
def test_micro_forward_on_real_images(name, contributing, image_paths):
    _run(name, contributing, image_paths)


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL)
def test_full_size_forward_on_real_images(name, contributing, image_paths):
    _run(name, contributing, image_paths[:2])


def test_greyscale_and_rgba_images_are_accepted(tmp_path, image_paths):
    cfg = msmlp.get_config("s2mlpv2_micro")
    grey = load_image(image_paths[1])  # brick.jpg is greyscale
    assert grey.mode == "RGB"
    rgba = tmp_path / "a.png"
    load_image(image_paths[0]).convert("RGBA").save(rgba)
    x = preprocess([grey, rgba], cfg)
    assert x.shape == (2, 3, 112, 112) and np.isfinite(x).all()
