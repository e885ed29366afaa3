"""``msmlp serve`` as users start it: a child process on 127.0.0.1, stopped with SIGINT."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import httpx
import pytest

from msmlp.cli import main

WAIT_S = 120


def _serve(*args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "msmlp.cli", "serve", "--model", "msmlp_micro", "--threads", "1", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_serving_line_comes_once_bound_and_sigint_drains_cleanly():
    child = _serve("--port", "0", "--host", "127.0.0.1")
    try:
        line = child.stdout.readline()  # blocks until the server listens (or the child dies)
        assert line.startswith("serving msmlp_micro (pytorch fp32, max batch 8) on http://127.0.0.1:"), line
        url = line.split(" on ")[1].split()[0]
        assert httpx.get(url + "/v2/health/ready", timeout=WAIT_S).status_code == 200, "ready when printed"
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=WAIT_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(WAIT_S)
    assert child.returncode == 0, err
    assert "Traceback" not in err and "synthetic weights" in err and "drained" in err


def test_a_busy_port_is_one_line_and_its_own_exit_code():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        child = _serve("--port", str(port))
        _, err = child.communicate(timeout=WAIT_S)
    assert child.returncode == 6  # ServiceError: see msmlp.errors
    assert err.strip() == (
        f"msmlp: error: port {port} on 127.0.0.1 is already in use (another server?); stop it, or pass "
        "another --port (0 picks a free one)"
    )  # one line, and no model was loaded first (loading logs the synthetic-weights note)


@pytest.mark.parametrize("port", ["70000", "-1", "８０", "80.5"])
def test_a_port_outside_the_range_is_refused_before_loading(port, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--model", "msmlp_micro", "--port", port])
    assert exit_info.value.code == 2
    assert "is not a port number within 1..65535 (or 0 for any free port)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("where", "protocols"), [("on http://h:1", "/v1 and KServe v2"), ("in Triton on http://h:1", "KServe v2")]
)
def test_both_servers_warn_about_synthetic_weights_of_a_file(where, protocols, capsys, caplog):
    """--onnx/--engine of a synthetic-weights export: msmlp's server and Triton alike warn once bound;
    with --model, loading has already warned, so the announcement does not repeat it."""
    from argparse import Namespace
    from types import SimpleNamespace

    from msmlp.commands.serve import _announce

    info = SimpleNamespace(synthetic=True, model="msmlp_micro", backend="openvino", precision="bf16")
    backend = SimpleNamespace(info=info)
    _announce(Namespace(model=None, name=None), backend, 8, where, protocols)
    out = capsys.readouterr().out
    assert (
        out
        == f"serving msmlp_micro (openvino bf16, max batch 8) {where}  ({protocols} model 'msmlp_micro'; Ctrl-C to stop)\n"
    )
    assert "msmlp_micro has synthetic weights" in caplog.text
    caplog.clear()
    _announce(Namespace(model="msmlp_micro", name="svc"), backend, 4, where, protocols)
    assert "synthetic" not in caplog.text and capsys.readouterr().out.startswith(
        "serving svc (openvino bf16, max batch 4)"
    )
