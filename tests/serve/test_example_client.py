"""examples/triton_client.py, unchanged, against msmlp serve on loopback (it is the README's client)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from msmlp.data.labels import imagenet_classes
from msmlp.data.transforms import builtin_images, load_image, transform
from msmlp.models.registry import get_config

from .support import MODEL, WAIT_S

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "triton_client.py"


def test_example_client_classifies_the_sample_photos(served, reference):
    service, _, _ = served
    paths = [str(p) for p in builtin_images()]
    command = [sys.executable, str(EXAMPLE), "--url", service.url.removeprefix("http://"), "--model", MODEL]
    done = subprocess.run([*command, "--topk", "3", *paths], capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(paths)
    labels = imagenet_classes()
    x = np.stack([transform(load_image(p), get_config(MODEL)) for p in paths])
    for line, path, logits in zip(lines, paths, reference(x)):
        best = int(np.argmax(logits))
        assert line.startswith(f"{path}: {labels[best]}({best}) "), (line, best)
    wrong = subprocess.run(
        [*command[:-1], "resnet50", paths[0]], capture_output=True, text=True, timeout=WAIT_S
    )
    assert wrong.returncode == 1 and "resnet50" in wrong.stderr
