"""Argument types shared by the commands: each rejects a bad value with a one-line argparse error."""

from __future__ import annotations

import argparse
import math

__all__ = ["positive_int", "nonnegative_int", "positive_float", "add_activation", "add_seed"]


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def add_activation(parser: argparse.ArgumentParser, default: str = "relu") -> None:
    """``--activation``: the base activation phi of sigma_s = (1 - s) x + s phi(x)."""
    from ntkhom.activations import PHI_NAMES

    parser.add_argument("--activation", default=default, choices=PHI_NAMES,
                        help="base activation phi of sigma_s(x) = (1 - s) x + s phi(x)")


def add_seed(parser: argparse.ArgumentParser) -> None:
    """``--seed``: the base PRNG seed; seed i of a run uses ``seed + i``."""
    parser.add_argument("--seed", type=nonnegative_int, default=0,
                        help="base PRNG seed (the i-th initialization uses seed + i)")
