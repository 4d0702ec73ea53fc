"""What every ``diffuse-studio`` subcommand shares: the one-line user error and argument types."""

from __future__ import annotations

import argparse


class UserError(Exception):
    """An error caused by the command's input, shown as one line."""


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v
