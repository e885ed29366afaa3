"""`msmlp models` and the CLI's error contract, run as a user runs them (a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys


def run_cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    code = "import sys; from msmlp.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout
    )


def test_models_table_lists_sizes():
    r = run_cli("models")
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: line for line in r.stdout.splitlines()[1:]}
    assert (
        "28.66M" in lines["msmlp_tiny"]
        and "4.44" in lines["msmlp_tiny"]
        and "3x224x224" in lines["msmlp_tiny"]
    )
    assert "25.11M" in lines["s2mlpv2_small"] and "6.90" in lines["s2mlpv2_small"]
    assert "small test configuration" in lines["msmlp_micro"]


def test_models_json_with_pattern():
    r = run_cli("models", "s2mlpv2*", "--json")
    rows = json.loads(r.stdout)
    assert [row["name"] for row in rows] == ["s2mlpv2_medium", "s2mlpv2_micro", "s2mlpv2_small"]
    assert rows[0]["params_m"] == 55.27 and rows[0]["gmacs"] == 16.28


def test_help_lists_every_command():
    r = run_cli("--help")
    assert r.returncode == 0
    for command in ("models", "export", "verify", "predict", "build", "serve", "bench", "triton-repo"):
        assert command in r.stdout
