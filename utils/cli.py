"""Argument types shared by the command lines (`python -m utils.train`, `utils.run_notebooks`, ...): every
bad value is a one-line argparse error that says what is valid."""

from __future__ import annotations

import argparse
import ast
from collections.abc import Callable

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def boolean(text: str) -> bool:
    """yes/no, true/false, on/off, 1/0 (any case); anything else is an error, never silently False."""
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected one of {', '.join(TRUE + FALSE)}; got {text!r}")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def optional(kind: Callable[[str], object]) -> Callable[[str], object]:
    """kind, or None for "none"."""
    def parse(text: str):
        return None if text.lower() == "none" else kind(text)
    parse.__name__ = f"{kind.__name__} or none"
    return parse


def one_of(names: Callable[[], list[str]], what: str) -> Callable[[str], str]:
    """A registered name (checked before anything is loaded); an unknown one lists the valid names."""
    def parse(text: str) -> str:
        valid = names()
        if text not in valid:
            raise argparse.ArgumentTypeError(f"unknown {what} {text!r}; {what}s: {', '.join(valid)}")
        return text
    parse.__name__ = what
    return parse


def literal(text: str):
    """A Python literal (2, 0.5, True, (1, 2), 'x'), else the text itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def key_value(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE a Python literal when it parses as one (depth=2, skip=True, name=foo)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE; got {text!r}")
    return key.strip(), literal(value.strip())


# dataclass field annotation (a string under `from __future__ import annotations`) -> argument type
FIELD_TYPES = {"int": int, "float": float, "str": str, "bool": boolean, "int | None": optional(int),
               "float | None": optional(float), "bool | None": optional(boolean), "str | None": optional(str)}


def notebook_parser(description: str, verb: str, profiles: list[str]) -> argparse.ArgumentParser:
    """The options utils.run_notebooks and utils.plan share, so that one selection means the same to both:
    --profile, --only, --dataset and -p KEY=VALUE (verb: what the command does to the notebooks)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", help=f"{' | '.join(profiles)} (default: full with CUDA, else quick)")
    parser.add_argument("--only", help="comma-separated notebook numbers or names, e.g. '01,03' or '01, 03'")
    parser.add_argument("--dataset", help=f"{verb} every notebook on this dataset instead of the profile's")
    parser.add_argument("-p", "--parameter", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                        help="a value for the notebooks' parameters or a knob of their configs (repeatable), "
                             "e.g. -p seed=1")
    return parser

