"""List the registered models with their parameter count, multiply-accumulates and input size.

MACs are measured with torch.utils.flop_counter on the meta device (GEMMs and convolutions;
normalisation and activations not counted), one image at the model's input size.
"""

from __future__ import annotations

import argparse
import json

HELP = "list registered models (params, GMACs, input size)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'msmlp*' (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from msmlp.extras import require_extra

    require_extra("export", "msmlp models (the PyTorch reference models)", modules=("torch",))
    from msmlp.models import get_config, list_models
    from msmlp.models.complexity import complexity_of

    names = list_models(args.pattern)
    if not names:
        from msmlp.errors import InputError

        raise InputError(f"no registered model matches {args.pattern!r}; `msmlp models` lists them all")
    rows = []
    for name in names:
        cfg = get_config(name)
        c = complexity_of(name)
        rows.append(
            {
                "name": name,
                "params_m": round(c.params_m, 2),
                "gmacs": round(c.gmacs, 2),
                "input": "x".join(map(str, cfg.input_size)),
                "family": cfg.family,
                "test_config": bool(cfg.extra.get("test_config")),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<16} {'params':>9} {'GMACs':>7}  {'input':<10} note")
    for r in rows:
        note = "small test configuration" if r["test_config"] else ""
        print(f"{r['name']:<16} {r['params_m']:>8.2f}M {r['gmacs']:>7.2f}  {r['input']:<10} {note}")
    return 0
