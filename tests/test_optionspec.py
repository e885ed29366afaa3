"""One declaration per option: the CLI, the options objects and the API keywords come from the same
dataclass fields, so they agree on names, defaults, conversions and checks."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
from dataclasses import dataclass
from pathlib import Path

import pytest

import msmlp
from msmlp.bench.options import BenchOptions
from msmlp.cli import build_parser
from msmlp.errors import InputError
from msmlp.optionspec import add_options, build, check_choices, declared, from_args, option
from msmlp.pipeline.options import ExportOptions


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="msmlp-export")
    add_options(p, ExportOptions)
    return p


def bench_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["bench", *argv])


def test_no_cli_arguments_give_the_dataclass_defaults():
    assert from_args(ExportOptions, export_parser().parse_args(["--model", "msmlp_micro"])) == ExportOptions(
        model="msmlp_micro"
    )
    assert from_args(BenchOptions, bench_args()) == BenchOptions()


def test_every_declared_field_has_its_flag_on_the_command_line():
    export_flags = {a.dest for a in export_parser()._actions}
    assert {f.name for f, _ in declared(ExportOptions)} <= export_flags
    bench = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "bench")[
        1
    ]
    assert {f.name for f, _ in declared(BenchOptions)} <= {a.dest for a in bench._actions}


def test_cli_text_and_api_keywords_give_the_same_options():
    argv = "--model msmlp_micro --batch 1,4,8 --keep-fp32 Add --keep-fp32 Conv --plugin p.so --no-reuse "
    argv += "--no-bf16 --workspace 2 --calib c --int8 --calib-method entropy --target-cosine 0.999"
    by_cli = from_args(ExportOptions, export_parser().parse_args(argv.split()))
    by_api = build(
        ExportOptions,
        model="msmlp_micro",
        batch="1,4,8",
        keep_fp32=["Add", "Conv"],
        plugins=["p.so"],
        reuse=False,
        bf16=False,
        workspace_gib=2.0,
        calib="c",
        int8=True,
        calib_method="entropy",
        target_cosine=0.999,
    )
    assert by_cli == by_api
    assert by_api.batch == (1, 4, 8) and by_api.plugins == (Path("p.so"),) and by_api.calib == Path("c")
    bench = from_args(
        BenchOptions, bench_args("--batch", "8,2", "--precision", "f32", "--providers", "cpu,cuda")
    )
    assert bench == build(BenchOptions, batches="8,2", precision="f32", providers="cpu,cuda")
    assert (bench.batches, bench.precision, bench.providers) == ([8, 2], None, ["cpu", "cuda"])


def test_the_api_signature_is_the_declaration():
    params = inspect.signature(msmlp.export).parameters
    fields = {f.name: f.default for f in dataclasses.fields(ExportOptions)}
    assert list(params) == list(fields)
    assert {n: p.default for n, p in params.items() if n != "model"} == {
        n: d for n, d in fields.items() if n != "model"
    }
    assert params["model"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for n, p in params.items() if n != "model")


def test_the_api_refuses_what_the_cli_refuses(tmp_path):
    with pytest.raises(InputError, match="unknown option 'fp61' for ExportOptions; did you mean fp16"):
        msmlp.export("msmlp_micro", fp61=True)
    with pytest.raises(InputError, match="--shift 'roll' is not one of slice, plugin"):
        msmlp.export("msmlp_micro", out=tmp_path / "out", shift="roll")
    with pytest.raises(InputError, match="--batch '8,1' is invalid"):
        msmlp.export("msmlp_micro", batch="8,1")
    assert not (tmp_path / "out").exists()


@dataclass
class Toy:
    """A declaration defined here: groups, exclusive pairs, tristates and choices come out of it."""

    mode: str = option("a", choices=("a", "b"), group="toy group", help="a or b")
    fast: bool | None = option(None, kind="tristate", exclusive="speed", help="go fast", negative_help="slow")
    count: int = option(1, type=int, exclusive="speed", help="how many")


def test_a_declaration_gives_groups_exclusive_options_and_choice_checks(capsys):
    p = argparse.ArgumentParser(prog="toy")
    add_options(p, Toy)
    assert [g.title for g in p._action_groups][-1] == "toy group"
    assert from_args(Toy, p.parse_args(["--no-fast"])) == Toy(fast=False)
    with pytest.raises(SystemExit):
        p.parse_args(["--fast", "--count", "2"])
    assert "not allowed with argument" in capsys.readouterr().err
    toy = from_args(Toy, p.parse_args(["--mode", "c"]))  # checked where the options are used, like the API
    with pytest.raises(InputError, match="--mode 'c' is not one of a, b"):
        check_choices(toy)
