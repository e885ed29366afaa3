"""A step whose extra is missing says so in one line naming the extra, with exit code 4."""

from __future__ import annotations

import argparse

import pytest

from msmlp import cli, extras
from msmlp.errors import MissingDependencyError


def test_a_missing_module_names_its_extra_and_the_install_command(monkeypatch):
    monkeypatch.setitem(extras.EXTRAS, "serve", ("fastapi", "msmlp_no_such_module"))
    with pytest.raises(MissingDependencyError) as raised:
        extras.require_extra("serve", "msmlp serve")
    assert raised.value.exit_code == 4
    assert str(raised.value) == (
        'msmlp serve needs the [serve] extra (msmlp_no_such_module not installed); install it with: pip install "msmlp[serve]"'
    )


def test_an_installed_extra_passes_and_modules_narrow_the_check(monkeypatch):
    extras.require_extra("export", "msmlp export")  # the dev install holds every extra's modules
    monkeypatch.setitem(extras.EXTRAS, "export", ("torch", "msmlp_no_such_module"))
    extras.require_extra("export", "--model", modules=("torch",))
    assert extras.missing_modules("export") == ["msmlp_no_such_module"]


@pytest.mark.parametrize(
    ("module", "extra"),
    [
        ("torch.nn", "export"),
        ("onnx", "export"),
        ("fastapi", "serve"),
        ("tensorrt", "tensorrt"),
        ("numpy", None),
    ],
)
def test_each_module_maps_to_the_extra_that_installs_it(module, extra):
    assert extras.extra_of(module) == extra


def test_the_cli_turns_an_extras_missing_module_into_one_line(capsys):
    def run(args: argparse.Namespace) -> int:
        raise ModuleNotFoundError("No module named 'polygraphy'", name="polygraphy")

    parser = argparse.ArgumentParser(prog="msmlp")
    code = cli._execute(parser, argparse.Namespace(verbose=False, _run=run))
    err = capsys.readouterr().err
    assert code == 4
    assert err == 'msmlp: error: polygraphy is not installed; install it with: pip install "msmlp[export]"\n'


def test_a_missing_module_of_no_extra_stays_an_internal_error(capsys):
    def run(args: argparse.Namespace) -> int:
        raise ModuleNotFoundError("No module named 'nosuch'", name="nosuch")

    code = cli._execute(argparse.ArgumentParser(prog="msmlp"), argparse.Namespace(verbose=False, _run=run))
    assert code == 1 and "internal error" in capsys.readouterr().err
