"""Train the reference networks: msmlp_micro and s2mlpv2_micro on scikit-learn's handwritten digits.

Every parity figure elsewhere rests on synthetic weights; these two small *trained* networks let the
suite measure accuracy against real labels (FP32, FP16, BF16, INT8) on weights whose activations come
from training. The digits ship inside the scikit-learn wheel (no download), 1,797 8x8 greyscale images
of 10 classes. They are written as 32x32 PNG files in an ImageFolder layout (``digits/train/<class>``,
``digits/val/<class>``, a stratified 80/20 split with a fixed seed), and each model is trained on the
training split through the model's own deployment preprocessing (``msmlp.data.transforms``), so an
export evaluated on ``digits/val`` sees exactly what training saw.

    pip install -c requirements/constraints.txt -e ".[dev]"      # scikit-learn is in the dev extra
    python reference/train.py                                     # images (if missing) + both models

Seeded and single-process: the same machine gives the same checkpoints. Figures: reference/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from msmlp.data.transforms import load_image, transform
from msmlp.models import create_model, get_config

HERE = Path(__file__).resolve().parent
DIGITS = HERE / "digits"
CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
IMAGE_SIDE = 32
MODELS = ("msmlp_micro", "s2mlpv2_micro")


def write_digits(root: Path, seed: int = 0) -> None:
    """The digits as PNG files: ``root/{train,val}/<class index>/<sample>.png`` plus ``labels.txt``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    index = np.arange(len(pixels))
    train, val = train_test_split(index, test_size=0.2, random_state=seed, stratify=digits.target)
    for split, members in (("train", train), ("val", val)):
        for i in sorted(members):
            folder = root / split / str(int(digits.target[i]))
            folder.mkdir(parents=True, exist_ok=True)
            img = Image.fromarray(pixels[i], mode="L").resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BILINEAR)
            img.save(folder / f"{i:04d}.png", optimize=True)
    (root / "labels.txt").write_text("\n".join(CLASS_NAMES) + "\n", encoding="utf-8")


def load_split(root: Path, split: str, model: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A split preprocessed exactly as deployment does it (resize, centre crop, normalise)."""
    config = get_config(model)
    xs, ys = [], []
    for folder in sorted((root / split).iterdir(), key=lambda p: int(p.name)):
        for path in sorted(folder.glob("*.png")):
            xs.append(transform(load_image(path), config))
            ys.append(int(folder.name))
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to 1/8 of the side (edge padding), the only augmentation digits allow."""
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def train(model_name: str, epochs: int, seed: int, lr: float) -> dict[str, float]:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train = load_split(DIGITS, "train", model_name)
    x_val, y_val = load_split(DIGITS, "val", model_name)
    model = create_model(model_name, num_classes=len(CLASS_NAMES)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    batch = 64
    steps = epochs * math.ceil(len(x_train) / batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    start = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(x_train), generator=generator)
        total = 0.0
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            logits = model(augment(x_train[idx], generator))
            loss = F.cross_entropy(logits, y_train[idx], label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        print(f"{model_name} epoch {epoch + 1}/{epochs}: loss {total / len(x_train):.4f}", flush=True)
    model.eval()
    with torch.no_grad():
        top1 = float((model(x_val).argmax(1) == y_val).float().mean())
        train_top1 = float(
            torch.cat([model(x_train[i : i + 256]).argmax(1) for i in range(0, len(x_train), 256)])
            .eq(y_train)
            .float()
            .mean()
        )
    out = HERE / f"{model_name}_digits.pth"
    tmp = out.with_suffix(".pth.tmp")
    torch.save({"model": {k: v.contiguous() for k, v in model.state_dict().items()}}, tmp)
    tmp.replace(out)
    return {
        "val_top1": top1,
        "train_top1": train_top1,
        "val_images": len(y_val),
        "train_images": len(y_train),
        "epochs": epochs,
        "lr": lr,
        "seconds": round(time.perf_counter() - start, 1),
        "bytes": out.stat().st_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (one-cycle)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rewrite-images", action="store_true", help="write digits/ again even if present")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.rewrite_images or not (DIGITS / "val").is_dir():
        write_digits(DIGITS, seed=args.seed)
    results = {name: train(name, args.epochs, args.seed, args.lr) for name in args.models}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
