"""Classify images with any KServe v2 / Triton server: ``msmlp serve``, or Triton Inference Server
with the repository ``msmlp triton-repo`` writes (ONNX Runtime, OpenVINO or TensorRT backend).

The same code talks to both: it asks the server for the model's input shape and batch limit, sends
the images as binary tensors, and asks for the top-k classes with Triton's classification extension.
Needs only ``pip install "tritonclient[http]" numpy pillow``.

    msmlp serve --onnx out/model.onnx --port 8000            # or: tritonserver --model-repository models
    python examples/triton_client.py --url 127.0.0.1:8000 --model s2mlpv2_small photo.jpg more.jpg
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # ImageNet, as the msmlp models are trained
STD = np.array([0.229, 0.224, 0.225], np.float32)
CROP_PCT = 0.875


def preprocess(path: str, height: int, width: int) -> np.ndarray:
    """Resize the shorter side to size / 0.875 (bicubic), centre-crop, normalise: C,H,W float32."""
    img = Image.open(path).convert("RGB")
    scale_to = math.floor(min(height, width) / CROP_PCT)
    w, h = img.size
    size = (
        (scale_to, max(scale_to, round(h * scale_to / w)))
        if w <= h
        else (max(scale_to, round(w * scale_to / h)), scale_to)
    )
    img = img.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    img = img.crop((left, top, left + width, top + height))
    x = (np.asarray(img, np.float32) / 255.0 - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def classify(url: str, model: str, paths: list[str], topk: int) -> list[list[tuple[float, int, str]]]:
    """Top-k (score, class index, label) per image; batches of at most the model's max_batch_size."""
    client = httpclient.InferenceServerClient(url)
    try:
        if not client.is_model_ready(model):
            raise SystemExit(f"model {model!r} is not ready on {url}")
        meta = client.get_model_metadata(model)
        max_batch = client.get_model_config(model).get("max_batch_size", 0) or 1
        inp, out = meta["inputs"][0], meta["outputs"][0]
        _, _, height, width = inp["shape"]
        results = []
        for start in range(0, len(paths), max_batch):
            batch = np.stack([preprocess(p, height, width) for p in paths[start : start + max_batch]])
            tensor = httpclient.InferInput(inp["name"], list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch, binary_data=True)
            wanted = httpclient.InferRequestedOutput(out["name"], binary_data=False, class_count=topk)
            rows = client.infer(model, [tensor], outputs=[wanted]).as_numpy(out["name"])
            for row in rows.reshape(len(batch), topk):
                fields = [(v.decode() if isinstance(v, bytes) else str(v)).split(":", 2) for v in row]
                results.append([(float(f[0]), int(f[1]), f[2] if len(f) > 2 else "") for f in fields])
        return results
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="127.0.0.1:8000", help="host:port of the server (default 127.0.0.1:8000)")
    p.add_argument("--model", required=True, help="model name on the server")
    p.add_argument("--topk", type=int, default=3, help="classes per image (default 3)")
    p.add_argument("images", nargs="+", help="image files")
    args = p.parse_args(argv)
    try:
        results = classify(args.url, args.model, args.images, args.topk)
    except InferenceServerException as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path, top in zip(args.images, results):
        print(f"{path}: " + ", ".join(f"{label or '#'}({index}) {score:.3f}" for score, index, label in top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
