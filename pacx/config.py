"""Command-line overrides for a script's config dataclass: `--field value`, nothing else.

Every script declares one dataclass; each field (with its default and the comment-free help text in the
dataclass' `metadata={"help": ...}` when present) becomes a flag. An unknown flag or a value of the wrong type is a
one-line error naming it. Bools accept true/false/1/0/yes/no (a bare `--flag` means true); tuples take
comma-separated values.
(STYLE.md point 4: no YAML/Hydra layers, `--help` lists every field with its default.)
"""
import argparse
import dataclasses
import sys
import types
import typing


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "y", "on"):
        return True
    if low in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _converter(tp):
    """A function text -> value for a field type (str, int, float, bool, Optional[...], tuple[...])."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        conv = _converter(inner[0])
        return lambda text: None if text.lower() in ("none", "") else conv(text)
    if origin is tuple:
        conv = _converter(args[0])
        return lambda text: tuple(conv(t) for t in text.split(",") if t.strip())
    if tp is bool:
        return _parse_bool
    if tp in (int, float, str):
        def convert(text, tp=tp):
            try:
                return tp(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {tp.__name__}, got {text!r}") from None
        return convert
    raise TypeError(f"config field type {tp} is not supported")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each option; the script's docstring (with its example commands) kept as written."""


def parse_config(cls, argv: list[str] | None = None, description: str | None = None):
    """Build `cls()` with the command line's overrides applied."""
    hints = typing.get_type_hints(cls)
    parser = argparse.ArgumentParser(
        description=description, formatter_class=_HelpFormatter, allow_abbrev=False
    )
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        tp = hints[f.name]
        metavar = tp.__name__ if isinstance(tp, type) else "VALUE"
        bare = {"nargs": "?", "const": True} if tp is bool else {}  # `--flag` alone means `--flag true`
        parser.add_argument(f"--{f.name}", type=_converter(tp), default=default, metavar=metavar,
                            help=f.metadata.get("help", " "), **bare)
    ns = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return cls(**vars(ns))


def opt(default, help: str):
    """A config field with help text: `lr: float = opt(1.5e-4, "absolute learning rate")`."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults")
    return dataclasses.field(default=default, metadata={"help": help})
