"""Command line: ``msmlp <command>`` and ``msmlp-export``.

Each sub-command lives in ``msmlp.commands.<name>`` and provides ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``; those modules import heavy libraries only inside ``run``, so ``--help``
is fast and works without optional dependencies. Errors a user can fix (:class:`MsmlpError`) print
one line and exit non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from msmlp import __version__
from msmlp.errors import MsmlpError

COMMANDS = {
    "models": "msmlp.commands.models",
    "export": "msmlp.commands.export",
    "verify": "msmlp.commands.verify",
    "predict": "msmlp.commands.predict",
    "build": "msmlp.commands.build",
    "serve": "msmlp.commands.serve",
    "bench": "msmlp.commands.bench",
    "triton-repo": "msmlp.commands.triton_repo",
}


def build_parser(prog: str = "msmlp") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Deploy MS-MLP and S2-MLPv2 backbones: ONNX export, FP16/INT8, TensorRT engines, "
        "parity checks, batched serving and latency profiling.",
    )
    parser.add_argument("--version", action="version", version=f"msmlp {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    return _execute(parser, parser.parse_args(argv))


def export_main(argv: Sequence[str] | None = None) -> int:
    """``msmlp-export ...``: the export command under the name users type."""
    module = importlib.import_module(COMMANDS["export"])
    parser = argparse.ArgumentParser(
        prog="msmlp-export", description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"msmlp {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run)
    return _execute(parser, parser.parse_args(argv))


def _execute(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    # Our logger speaks at INFO (DEBUG with -v); other libraries only from WARNING, to keep the
    # terminal to msmlp's own progress lines.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s" if not args.verbose else "%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("msmlp").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args._run(args) or 0)
    except MsmlpError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
