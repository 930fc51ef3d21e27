"""Pieces shared by the commands: argument types (each rejects a bad value with a one-line argparse error)
and the check that a solver run was not interrupted."""

from __future__ import annotations

import argparse
import math

__all__ = ["positive_int", "nonnegative_int", "positive_float", "add_activation", "add_seed", "finished",
           "warn"]


def _integer_at_least(minimum: int, description: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {description}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {description}, got {text}")
        return value

    parse.__doc__ = f"An integer >= {minimum}."
    return parse


positive_int = _integer_at_least(1, "a positive integer")
nonnegative_int = _integer_at_least(0, "a non-negative integer")


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


def quick_default_help(defaults: dict, quick: dict, name: str, none: str = "none") -> str:
    """The help text of an option that --quick shrinks: "default X; Y with --quick" (lists space-separated,
    None shown as ``none``)."""
    def shown(value):
        return none if value is None else " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)

    return f"default {shown(defaults[name])}; {shown(quick[name])} with --quick"


def finished(result):
    """``result`` (a driver RunResult or BatchResult), or KeyboardInterrupt if the driver was interrupted.

    The driver keeps an interrupted run's finished chunks and returns; a command must stop there too, so
    that its run folder keeps only whole units of work.
    """
    reasons = getattr(result, "stop_reasons", None) or [getattr(result, "stop_reason", "")]
    if "interrupted" in reasons:
        raise KeyboardInterrupt
    return result


def warn(message: str) -> None:
    """A warning for the person running the command (one line on stderr through the CLI)."""
    import warnings

    warnings.warn(message, UserWarning, stacklevel=2)
