"""Sub-commands of ``msmlp``, one module each (see cli.py), and the option checks they share (the value
parsers live in :mod:`msmlp.optionspec`, which the options objects below the commands use too)."""

from __future__ import annotations

from msmlp.errors import InputError
from msmlp.optionspec import parse_batch, parse_int_list

__all__ = ["check_positive", "parse_batch", "parse_int_list"]


def check_positive(value: float | None, option: str, *, upper: float | None = None) -> None:
    """A positive number (and at most ``upper``), or a clear error quoting the option and the value."""
    if value is None:
        return
    if isinstance(value, bool) or not value > 0 or (upper is not None and value > upper):
        bound = f" and at most {upper:g}" if upper is not None else ""
        raise InputError(f"{option} {value!r} must be a positive number{bound}")
