"""Sub-commands of ``msmlp``, one module each (see cli.py), and the option parsers they share."""

from __future__ import annotations

from msmlp.errors import InputError


def parse_int_list(text: str | None, option: str) -> list[int] | None:
    """``"4,8"`` -> [4, 8]; ``None`` stays ``None``; a clear error quoting the bad value."""
    if text is None:
        return None
    items = [v.strip() for v in text.split(",")]
    # ASCII digits only: int() also takes other scripts' digits, which no user means in a batch list
    values = [int(v) for v in items] if all(v.isascii() and v.isdigit() for v in items) else []
    if not values or any(v < 1 for v in values):
        raise InputError(f"{option} {text!r} must be positive integers separated by commas, e.g. 1,2,4,8")
    return values


def parse_batch(text: str, option: str = "--batch") -> tuple[int, int, int]:
    """An optimisation profile: ``"1,8,64"`` -> (1, 8, 64); one size ``"8"`` is a fixed batch (8, 8, 8)."""
    try:
        values = parse_int_list(text, option) or []
    except InputError:
        values = []
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not values[0] <= values[1] <= values[2]:
        raise InputError(
            f"{option} {text!r} is invalid; expected MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX "
            "(e.g. 1,8,64), or one size for a fixed batch"
        )
    return values[0], values[1], values[2]


def check_positive(value: float | None, option: str, *, upper: float | None = None) -> None:
    """A positive number (and at most ``upper``), or a clear error quoting the option and the value."""
    if value is None:
        return
    if isinstance(value, bool) or not value > 0 or (upper is not None and value > upper):
        bound = f" and at most {upper:g}" if upper is not None else ""
        raise InputError(f"{option} {value!r} must be a positive number{bound}")
