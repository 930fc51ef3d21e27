"""``ntkhom`` command line: one subcommand per experiment module in :mod:`ntkhom.experiments`.

Each experiment module defines ``DESCRIPTION``, ``add_arguments(parser)`` and ``run(args) -> Path`` (the run
folder it wrote). Every command runs in float64 (JAX's x64 mode) and writes to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

from ntkhom import distributed
from ntkhom.memory import MemoryLimitError

COMMANDS = {
    "report": "ntkhom.experiments.kernel_report",
    "spectrum": "ntkhom.experiments.spectrum",
    "train": "ntkhom.experiments.train",
}
REPRODUCE = {
    "hrta": "ntkhom.experiments.hrta",
    "pathcond": "ntkhom.experiments.pathcond",
    "am": "ntkhom.experiments.am",
    "tiam": "ntkhom.experiments.tiam",
}


def _add(subparsers, name: str, module_name: str) -> None:
    if importlib.util.find_spec(module_name) is None:  # an experiment not built in this checkout
        return
    module = importlib.import_module(module_name)
    parser = subparsers.add_parser(name, help=module.DESCRIPTION.splitlines()[0], description=module.DESCRIPTION,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs") / name, help="run folder to write")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    distributed.add_arguments(parser)
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ntkhom", description="NTK spectra and solvers for homotopy networks.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        _add(subparsers, name, module_name)
    reproduce = subparsers.add_parser("reproduce", help="reproduce a paper's claims as a table of verdicts")
    reproduce_sub = reproduce.add_subparsers(dest="experiment", required=True)
    for name, module_name in REPRODUCE.items():
        _add(reproduce_sub, name, module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ntkhom.data import enable_float64

    args = build_parser().parse_args(argv)
    try:
        distributed.initialize_from_args(args)
        enable_float64()
        folder = args._run(args)
    except MemoryLimitError as exc:  # refused before any long work: one line, as argparse does
        print(f"ntkhom {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished results are in {args.out}", file=sys.stderr)
        return 130
    print(f"results written to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
