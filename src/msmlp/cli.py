"""Command line: ``msmlp <command>`` and ``msmlp-export``.

Each sub-command lives in ``msmlp.commands.<name>`` and provides ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``; those modules import heavy libraries only inside ``run``, so ``--help`` is
fast and works without optional dependencies. :func:`_execute` is the one boundary every command runs
through: an error a user can fix (:class:`MsmlpError`, or an OS error such as a read-only folder)
prints one line and exits with its documented code (see :mod:`msmlp.errors`); anything else is a bug,
whose traceback goes to a log file the message names. ``-v`` shows tracebacks on the terminal.
SIGTERM unwinds like Ctrl-C, so staged files are removed on both.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from msmlp import __version__
from msmlp.errors import MissingDependencyError, MsmlpError
from msmlp.extras import extra_of

COMMANDS = {
    "models": "msmlp.commands.models",
    "export": "msmlp.commands.export",
    "verify": "msmlp.commands.verify",
    "compare-layers": "msmlp.commands.compare_layers",
    "eval": "msmlp.commands.eval",
    "predict": "msmlp.commands.predict",
    "build": "msmlp.commands.build",
    "serve": "msmlp.commands.serve",
    "bench": "msmlp.commands.bench",
    "triton-repo": "msmlp.commands.triton_repo",
}
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: what was wrong, and where the usage is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM so that ``finally`` blocks (staging cleanup) run."""


def build_parser(prog: str = "msmlp") -> argparse.ArgumentParser:
    parser = Parser(
        prog=prog,
        description="Deploy MS-MLP and S2-MLPv2 backbones: ONNX export, FP16/INT8/BF16, TensorRT engines, "
        "parity checks, batched serving and latency profiling.",
        epilog="exit codes: 0 ok, 1 internal error (bug), 2 bad input, 3 verification failed, "
        "4 missing dependency, 5 export/engine failure, 6 service error, 130 interrupted, 143 terminated",
    )
    _common(parser)
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


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=f"msmlp {__version__}")
    parser.add_argument(
        "-v", "--verbose", "--debug", action="store_true", help="log debug messages and show tracebacks"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    return _execute(parser, parser.parse_args(argv))


def export_main(argv: Sequence[str] | None = None) -> int:
    """``msmlp-export ...``: the export command under the name users type."""
    module = importlib.import_module(COMMANDS["export"])
    parser = Parser(
        prog="msmlp-export", description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _common(parser)
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run)
    return _execute(parser, parser.parse_args(argv))


def _execute(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    _configure_logging(args.verbose)
    previous = _install_sigterm()
    try:
        return int(args._run(args) or 0)
    except MsmlpError as exc:
        return _fail(parser, str(exc), exc.exit_code, args.verbose)
    except BrokenPipeError:  # `msmlp models | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a folder that is read-only, a full disk, a file that vanished
        where = f" {exc.filename!r}" if exc.filename else ""
        return _fail(
            parser,
            f"cannot access{where}: {exc.strerror or exc}; check the path and its permissions",
            2,
            args.verbose,
        )
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print(f"{parser.prog}: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except Exception as exc:  # a bug: say so, keep the traceback, never show it raw unless asked
        if isinstance(exc, ModuleNotFoundError) and (extra := extra_of(exc.name)):
            # a step without its own check of its extra: still one line that names it
            message = f'{exc.name} is not installed; install it with: pip install "msmlp[{extra}]"'
            return _fail(parser, message, MissingDependencyError.exit_code, args.verbose)
        log = _write_crash_log(exc)
        if args.verbose:
            traceback.print_exc()
        print(
            f"{parser.prog}: internal error (a bug in msmlp): {type(exc).__name__}: {exc}; the traceback is "
            f"in {log}; please report it",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _fail(parser: argparse.ArgumentParser, message: str, code: int, verbose: bool) -> int:
    if verbose:
        traceback.print_exc()
    print(f"{parser.prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return code


def _configure_logging(verbose: bool) -> None:
    # Our logger speaks at INFO (DEBUG with -v); other libraries only from WARNING, to keep the
    # terminal to msmlp's own progress lines. Everything goes to stderr: stdout carries results only.
    logging.basicConfig(
        level=logging.WARNING,
        format="%(message)s" if not verbose else "%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("msmlp").setLevel(logging.DEBUG if verbose else logging.INFO)


def _install_sigterm() -> object | None:
    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. called from a test's worker thread)
        return None


def _write_crash_log(exc: BaseException) -> Path:
    fd, name = tempfile.mkstemp(prefix="msmlp-error-", suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"msmlp {__version__}, argv: {sys.argv!r}\n")
        f.write("".join(traceback.format_exception(exc)))
    return Path(name)


if __name__ == "__main__":
    sys.exit(main())
