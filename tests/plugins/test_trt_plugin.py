"""The TensorRT plugin's logic that runs without TensorRT: the PTX handed to TensorRT declares exactly the
parameters its AOT launch passes, and registration can be retried after a failure (a stand-in for
``tensorrt.plugin`` that, like TensorRT's registry, refuses a second definition of the same step)."""

from __future__ import annotations

import types

import pytest

from msmlp.errors import EngineError
from msmlp.plugins import trt_plugin

# The shape of Triton >= 3.5 PTX: our five parameters, then the two scratch pointers it appends.
PTX = """.version 8.7
.target sm_80
.address_size 64

.visible .entry k(
\t.param .u64 .ptr .global .align 1 k_param_0,
\t.param .u32 k_param_1,
\t.param .u32 k_param_2,
\t.param .u32 k_param_3,
\t.param .u64 .ptr .global .align 1 k_param_4,
\t.param .u64 .ptr .global .align 1 k_param_5,
\t.param .u64 .ptr .global .align 1 k_param_6
)
.reqntid 128
{
\tld.param.b64 \t%rd1, [k_param_0];
\tld.param.b32 \t%r1, [k_param_1];
\tld.param.b64 \t%rd2, [k_param_4];
\tret;
}
"""


def test_the_scratch_parameters_are_stripped_from_the_entry() -> None:
    stripped = trt_plugin.strip_scratch_params(PTX, "k", 5)
    _, params = trt_plugin.entry_params(stripped, "k")
    assert [p.split()[-1] for p in params] == [f"k_param_{i}" for i in range(5)]
    assert "k_param_5" not in stripped and "k_param_6" not in stripped
    assert stripped.endswith(PTX[PTX.index(".reqntid") :])  # the body is untouched
    assert trt_plugin.strip_scratch_params(stripped, "k", 5) == stripped  # Triton < 3.5: as it is


def test_the_ptx_requirements_are_read_for_the_sidecar() -> None:
    assert trt_plugin.ptx_requirements(PTX) == {"ptx_isa": "8.7", "target": "sm_80"}
    assert trt_plugin.ptx_requirements("garbage") == {"ptx_isa": "unknown", "target": "unknown"}


def test_a_kernel_that_reads_a_scratch_parameter_is_refused() -> None:
    reads = PTX.replace("\tret;", "\tld.param.b64 \t%rd3, [k_param_6];\n\tret;")
    with pytest.raises(EngineError, match=r"reads its scratch parameters \['k_param_5', 'k_param_6'\]"):
        trt_plugin.strip_scratch_params(reads, "k", 5)


def test_an_unexpected_parameter_count_is_refused() -> None:
    with pytest.raises(EngineError, match="declares 7 parameters; TensorRT passes 4"):
        trt_plugin.strip_scratch_params(PTX, "k", 4)
    with pytest.raises(EngineError, match="has no .entry other"):
        trt_plugin.strip_scratch_params(PTX, "other", 5)


class FakePluginModule(types.SimpleNamespace):
    """``tensorrt.plugin``'s decorators; a second definition of a step raises, as TensorRT's registry does."""

    class TensorDesc: ...

    class AutoTuneCombination: ...

    class KernelLaunchParams: ...

    class SymExprs: ...

    def __init__(self, fail: set[str]) -> None:
        super().__init__(defined=[], fail=set(fail))

    def _decorator(self, kind: str, name: str):
        def define(fn):
            key = f"{name}/{kind}"
            if key in self.fail:
                self.fail.discard(key)  # fails once
                raise RuntimeError(f"{key} failed")
            if key in self.defined:
                raise ValueError(f"{name} already has a definition for {kind}")
            self.defined.append(key)
            return fn

        return define

    def register(self, name: str):
        return self._decorator("register", name)

    def autotune(self, name: str):
        return self._decorator("autotune", name)

    def aot_impl(self, name: str):
        return self._decorator("aot", name)


@pytest.fixture
def fake_trtp(monkeypatch: pytest.MonkeyPatch):
    def install(fail: set[str] = frozenset()) -> FakePluginModule:
        fake = FakePluginModule(fail)
        modules = {"tensorrt.plugin": fake, "triton": types.ModuleType("triton")}
        monkeypatch.setattr(trt_plugin, "require", lambda name, *a: modules[name])
        monkeypatch.setattr(trt_plugin, "_done", set())
        return fake

    return install


def test_registration_defines_each_step_once(fake_trtp) -> None:
    fake = fake_trtp()
    trt_plugin.register_trt_plugins()
    trt_plugin.register_trt_plugins()
    assert fake.defined == trt_plugin._steps() and len(fake.defined) == 6


def test_a_failed_second_registration_can_be_retried(fake_trtp) -> None:
    fake = fake_trtp(fail={"msmlp::EdgeShift/register"})
    with pytest.raises(RuntimeError, match="msmlp::EdgeShift/register failed"):
        trt_plugin.register_trt_plugins()
    assert fake.defined == trt_plugin._steps()[:3]  # GroupRoll is fully defined
    trt_plugin.register_trt_plugins()  # no "already has a definition" for GroupRoll
    assert fake.defined == trt_plugin._steps()
