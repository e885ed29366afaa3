"""(being written)"""

from __future__ import annotations

import argparse

HELP = "(being written)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from msmlp.errors import MsmlpError

    raise MsmlpError("this command is not implemented yet")
