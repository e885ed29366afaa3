"""Each kernel compiles to PTX for sm_80 and sm_90 on this CPU-only machine, with the launch ABI the
TensorRT AOT plugin relies on: our parameters in order, then Triton's two hidden scratch pointers,
which the kernels never read and for which they request no memory. With those two declarations
stripped (what the plugin hands to TensorRT), the entry declares exactly our parameters and the PTX
still assembles, with the ptxas Triton itself uses for that architecture (shipped in its wheel).

Compiling needs the real triton.jit (not the interpreter this folder's conftest selects), so it runs
in one subprocess for all kernels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

ARCHS = [80, 90]
SCRIPT = r"""
import json, os, re, subprocess, sys, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import get_ptxas
from triton.compiler import ASTSource
from msmlp.plugins import kernels as K
from msmlp.plugins.trt_plugin import check_no_scratch, entry_params, strip_scratch_params

groups = K.group_constexprs(20, [4, 4, 4, 4, 4], [-2, -1, 0, 1, 2])
CASES = {
    "group_roll": (K.group_roll_kernel, ["X", "total", "H", "W", "Y"], {"C": 20, "AXIS": 3, **groups}),
    "edge_shift": (K.edge_shift_kernel, ["X", "total", "H", "W", "Y"], {"C": 64, "PATTERN": 2}),
    "split_attention": (K.split_attention_kernel, ["Xs", "A", "total", "H", "W", "Y"], {"C": 64}),
}
out = {}
for arch in json.loads(sys.argv[1]):
    for dtype in ("fp32", "fp16"):
        for name, (fn, args, constexprs) in CASES.items():
            constexprs = {**constexprs, "BLOCK": K.BLOCK}
            sig = {a: ("i32" if a in ("total", "H", "W") else "*" + dtype) for a in args}
            sig.update({k: "constexpr" for k in constexprs})
            c = triton.compile(ASTSource(fn, sig, constexprs=constexprs), target=GPUTarget("cuda", arch, 32),
                               options={"num_warps": K.NUM_WARPS})
            check_no_scratch(c)
            ptx = c.asm["ptx"]
            entry = re.search(r"\.entry\s+(\w+)\s*\((.*?)\)", ptx, re.S)
            params = re.findall(r"(\w+_param_\d+)", entry.group(2))
            body = ptx[entry.end():]
            stripped = strip_scratch_params(ptx, c.metadata.name, len(args))
            target = re.search(r"\.target\s+(sm_\w+)", stripped).group(1)
            with tempfile.TemporaryDirectory() as tmp:
                src = os.path.join(tmp, "k.ptx")
                with open(src, "w") as f:
                    f.write(stripped)
                asm = subprocess.run([get_ptxas(arch).path, f"-arch={target}", src, "-o",
                                      os.path.join(tmp, "k.cubin")], capture_output=True, text=True)
            out[f"{name}/{dtype}/{arch}"] = {
                "target": f".target sm_{arch}" in ptx, "name": entry.group(1) == c.metadata.name,
                "params": len(params), "ours": len(args),
                "hidden_read": [p for p in params[len(args):] if p in body],
                "cubin": len(c.asm["cubin"]),
                "stripped_params": len(entry_params(stripped, c.metadata.name)[1]),
                "stripped_assembles": asm.returncode == 0 or asm.stderr[-500:],
            }
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def compiled() -> dict[str, dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(ARCHS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("kernel", ["group_roll", "edge_shift", "split_attention"])
def test_kernel_compiles_to_ptx_with_the_plugin_abi(compiled, kernel, dtype, arch):
    info = compiled[f"{kernel}/{dtype}/{arch}"]
    assert info["target"] and info["name"] and info["cubin"] > 0
    # our parameters first, in order; Triton >= 3.5 appends exactly two scratch pointers
    assert info["params"] == info["ours"] + 2
    assert info["hidden_read"] == []  # never loaded: removing their declarations is safe
    # what TensorRT gets declares exactly what its launch passes, and still assembles
    assert info["stripped_params"] == info["ours"]
    assert info["stripped_assembles"] is True
