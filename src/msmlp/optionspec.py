"""One declaration per option: a dataclass field with an :class:`Opt` in its metadata gives the argparse
argument (:func:`add_options`), the options object built from the parsed arguments (:func:`from_args`)
and the Python API keywords (:func:`build`, :func:`keyword_signature`), with the same names, defaults,
conversions and choice checks. Standard library only, so building ``--help`` stays fast.

The value parsers several commands share (:func:`parse_int_list`, :func:`parse_batch`,
:func:`parse_providers`, :func:`parse_input_size`) live here too, below every layer that reads options.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msmlp.errors import InputError

KINDS = ("value", "flag", "negated", "tristate", "repeat", "shared")


@dataclass(frozen=True)
class Opt:
    """How one field appears on the command line.

    ``kind``: ``value`` (``--flag X``), ``flag`` (store true), ``negated`` (``--no-x`` stores False in a
    field that defaults to True), ``tristate`` (``--x`` / ``--no-x`` over a None default), ``repeat``
    (``--x A --x B`` -> a tuple), ``shared`` (the argument comes from a shared group in
    :mod:`msmlp.commands.args`; only the conversion is declared here). ``type`` is what argparse
    converts the text with (int, float, Path); ``parse`` turns a text value, from the CLI or the API,
    into the field's value (e.g. ``"1,8,64"`` -> ``(1, 8, 64)``) and may raise :class:`InputError`.
    """

    flag: str | None = None
    help: str = ""
    kind: str = "value"
    type: Callable[[str], Any] | None = None
    parse: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    group: str | None = None  # argparse argument group title
    exclusive: str | None = None  # mutually exclusive group name (within ``group``)
    negative_help: str = ""  # tristate: help of the --no- form


def option(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **opt: Any) -> Any:
    """A dataclass field declared with its command-line form (see :class:`Opt`)."""
    spec = Opt(**opt)
    if spec.kind not in KINDS:
        raise ValueError(f"option kind {spec.kind!r} is not one of {KINDS}")
    return field(default=default, default_factory=factory, metadata={"opt": spec})


def declared(cls: type) -> list[tuple[dataclasses.Field, Opt]]:
    return [(f, f.metadata["opt"]) for f in dataclasses.fields(cls) if "opt" in f.metadata]


def flag_of(cls: type, name: str) -> str:
    """The command-line spelling of field ``name`` (for messages)."""
    spec = {f.name: o for f, o in declared(cls)}.get(name)
    return (spec.flag if spec and spec.flag else None) or "--" + name.replace("_", "-")


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add every declared field of ``cls`` to ``parser`` (shared ones are added by their group).

    Every argument defaults to None, which :func:`from_args` leaves out, so the dataclass default is the
    only default."""
    groups: dict[str | None, Any] = {None: parser}
    exclusive: dict[str, Any] = {}
    for f, spec in declared(cls):
        if spec.kind == "shared":
            continue
        if spec.group not in groups:
            groups[spec.group] = parser.add_argument_group(spec.group)
        target = groups[spec.group]
        if spec.exclusive:
            if spec.exclusive not in exclusive:
                exclusive[spec.exclusive] = target.add_mutually_exclusive_group()
            target = exclusive[spec.exclusive]
        flag = flag_of(cls, f.name)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        common: dict[str, Any] = {"dest": f.name, "default": None, "help": spec.help}
        if spec.kind == "flag":
            target.add_argument(flag, action="store_true", **common)
        elif spec.kind == "negated":
            target.add_argument(flag, action="store_false", **common)
        elif spec.kind == "tristate":
            target.add_argument(flag, action="store_true", **common)
            no = "--no-" + flag.removeprefix("--")
            target.add_argument(no, dest=f.name, action="store_false", help=spec.negative_help)
        else:
            metavar = spec.metavar or ("|".join(spec.choices) if spec.choices else None)
            action = "append" if spec.kind == "repeat" else "store"
            target.add_argument(
                flag, action=action, type=spec.type, metavar=metavar, required=required, **common
            )


def from_args(cls: type, args: argparse.Namespace, **extra: Any) -> Any:
    """The options object for parsed ``args`` (arguments not given keep the dataclass default)."""
    given = {
        f.name: getattr(args, f.name) for f, _ in declared(cls) if getattr(args, f.name, None) is not None
    }
    return build(cls, **given, **extra)


def build(cls: type, **values: Any) -> Any:
    """``cls(**values)`` after the conversions the declarations name; an unknown keyword is an
    :class:`InputError` that names the closest option."""
    specs = {f.name: spec for f, spec in declared(cls)}
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; the options are {', '.join(names)}"
            raise InputError(f"unknown option {key!r} for {cls.__name__}{hint}")
    converted = {k: convert(specs[k], v) if k in specs else v for k, v in values.items()}
    return cls(**converted)


def convert(spec: Opt, value: Any) -> Any:
    """A text value goes through ``parse`` (or ``type`` for paths); repeated values become a tuple."""
    if value is None:
        return None
    if spec.kind == "repeat":
        items = [value] if isinstance(value, (str, Path)) else list(value)
        return tuple(_one(spec, v) for v in items)
    return _one(spec, value)


def _one(spec: Opt, value: Any) -> Any:
    if isinstance(value, str) and spec.parse is not None:
        return spec.parse(value)
    if isinstance(value, str) and spec.type is Path:
        return Path(value)
    return value


def check_choices(obj: Any) -> None:
    """Each declared field with choices holds one of them (or None), else one line naming the option."""
    for f, spec in declared(type(obj)):
        value = getattr(obj, f.name)
        if spec.choices and value is not None and value not in spec.choices:
            raise InputError(
                f"{flag_of(type(obj), f.name)} {value!r} is not one of {', '.join(spec.choices)}"
            )


def keyword_signature(cls: type, positional: Sequence[str] = ()) -> inspect.Signature:
    """The API function's signature: ``positional`` first, then every other field as a keyword with
    its dataclass default, so ``help(msmlp.export)`` shows the options under their own names."""
    params = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        if default is dataclasses.MISSING:
            default = inspect.Parameter.empty
        kind = (
            inspect.Parameter.POSITIONAL_OR_KEYWORD
            if f.name in positional
            else inspect.Parameter.KEYWORD_ONLY
        )
        params.append(inspect.Parameter(f.name, kind, default=default, annotation=f.type))
    params.sort(key=lambda p: p.kind)
    return inspect.Signature(params)


# ------------------------------------------------------------------------- value parsers commands share


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


def parse_providers(text: str | None) -> Any:
    """``--providers``: None (CPU), "auto", or a list of names for ONNX Runtime."""
    if not text:
        return None
    return "auto" if text.strip() == "auto" else [p.strip() for p in text.split(",") if p.strip()]


_SIZE = re.compile(r"^\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*$")


def parse_input_size(text: str, option: str = "--input-size") -> tuple[int, int]:
    """``"256"`` -> (256, 256); ``"256x320"`` -> (height 256, width 320)."""
    found = _SIZE.match(text) if text.isascii() else None
    if not found or int(found.group(1)) < 1 or int(found.group(2) or 1) < 1:
        raise InputError(f"{option} {text!r} must be SIDE or HEIGHTxWIDTH in pixels, e.g. 256 or 256x320")
    h = int(found.group(1))
    return h, int(found.group(2) or h)
