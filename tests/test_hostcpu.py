"""The host CPU module: /proc/cpuinfo parsed into a model and the flags msmlp decides by,
``MSMLP_CPU_MASK`` hiding them (groups, flags, a clear error for an unknown name), the record benchmark
JSON carries, and the masked run that CI and the README document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msmlp.errors import InputError
from msmlp.hostcpu import FEATURES, GROUPS, MASK_ENV, host_cpu, parse_cpuinfo, parse_mask

ROOT = Path(__file__).resolve().parents[1]

# The start of /proc/cpuinfo on a Sapphire Rapids Xeon (AMX) and on an ARM server (no flags line).
XEON = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512vl avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8

processor\t: 1
model name\t: another model the first processor's wins over
"""
ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm\nCPU implementer\t: 0x41\n"


def test_cpuinfo_gives_the_model_and_only_the_relevant_flags():
    model, flags = parse_cpuinfo(XEON)
    assert model == "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert flags is not None and {"amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx_vnni"} <= flags
    assert not flags & {"fpu", "sse2"} and flags <= set(FEATURES)
    assert parse_cpuinfo(ARM) == (None, None)  # unknown, not "no features"


def test_this_machine_is_read_from_its_cpuinfo():
    text = Path("/proc/cpuinfo").read_text(encoding="utf-8") if Path("/proc/cpuinfo").is_file() else ""
    if "flags" not in text:
        pytest.skip("no /proc/cpuinfo with a flags line here: the CPU's flags are unknown")
    cpu = host_cpu()
    first = next(line for line in text.splitlines() if line.startswith("flags"))
    assert cpu.known and cpu.detected == set(first.split(":", 1)[1].split()) & set(FEATURES)
    assert cpu.model and cpu.model in text


def test_the_mask_hides_groups_and_flags(monkeypatch):
    assert parse_mask("") == frozenset()
    assert parse_mask("bf16") == {"avx512_bf16", "amx_bf16"}
    assert parse_mask("amx, avx512_vnni") == {"amx_tile", "amx_bf16", "amx_int8", "avx512_vnni"}
    assert parse_mask("BF16,AMX,VNNI") == set().union(*GROUPS.values())
    monkeypatch.setenv(MASK_ENV, "bf16,amx,vnni")
    cpu = host_cpu()
    assert not cpu.flags & set().union(*GROUPS.values()) and cpu.flags == cpu.detected - cpu.masked
    assert all(cpu.lacks(group) for group in GROUPS)
    record = cpu.record()
    assert record["masked"] == sorted(cpu.masked) and record["flags"] == sorted(cpu.detected)
    json.dumps(record)  # a plain JSON value for benchmark records
    monkeypatch.delenv(MASK_ENV)
    assert "masked" not in host_cpu().record()


def test_an_unknown_mask_name_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(MASK_ENV, "bf16,avx1024")
    with pytest.raises(InputError, match=r"MSMLP_CPU_MASK='bf16,avx1024': 'avx1024' is not a CPU feature"):
        host_cpu()
    with pytest.raises(InputError, match=r"use the groups bf16, amx, vnni or the flags avx2, "):
        parse_mask("sse9")


@pytest.mark.cpu_features
def test_a_masked_reason_says_the_lack_is_simulated(monkeypatch):
    real = host_cpu()
    monkeypatch.setenv(MASK_ENV, "avx512_bf16")
    cpu = host_cpu()
    if "avx512_bf16" in real.detected:
        assert cpu.mask_note("bf16") == " (avx512_bf16 masked by MSMLP_CPU_MASK)"
    else:
        assert cpu.mask_note("bf16") == ""  # nothing the CPU has is hidden
    assert cpu.mask_note("vnni") == ""


def test_ci_runs_the_cpu_feature_tests_masked_as_the_readme_says():
    line = "MSMLP_CPU_MASK=bf16,amx,vnni python -m pytest -m cpu_features"
    assert line in (ROOT / ".ci" / "run").read_text().splitlines()
    assert f"`{line}`" in (ROOT / "README.md").read_text()
    assert parse_mask(line.split()[0].split("=", 1)[1]) == set().union(*GROUPS.values())


def test_every_benchmark_record_names_its_cpu(tmp_path, monkeypatch):
    """Each script that writes a JSON record writes it through bench_common.write_json, which puts the
    CPU (and the mask, where set) in it."""
    scripts = sorted((ROOT / "benchmarks").glob("*.py"))
    writers = [s for s in scripts if '"--json"' in s.read_text() or '"--out"' in s.read_text()]
    assert len(writers) >= 6 and all("write_json(" in s.read_text() for s in writers), writers
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setenv(MASK_ENV, "amx")
    from bench_common import write_json

    write_json(tmp_path / "rows.json", [{"ms": 1.0}])
    write_json(tmp_path / "table.json", {"models": {}})
    rows, table = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("rows", "table"))
    assert rows["results"] == [{"ms": 1.0}] and table["models"] == {}
    for record in (rows, table):
        assert record["cpu"]["model"] == host_cpu().model
        assert record["cpu"]["masked"] == ["amx_bf16", "amx_int8", "amx_tile"]
