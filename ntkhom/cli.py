"""``ntkhom`` command line: one subcommand per experiment module in :mod:`ntkhom.experiments`.

An experiment module defines ``DESCRIPTION``, ``add_arguments(parser)``, ``settings(args) -> dict`` (the
validated settings, compared by ``--resume``), ``compute(settings, folder, quiet=...)`` (stores its work in
the :class:`ntkhom.report.RunFolder` as it finishes) and ``finalize(settings, folder) -> str`` (figures and
the markdown summary, from what the folder holds). It may define ``placement(args) -> dict``: options that
``compute`` takes as keywords but that are no settings (how much memory it may use), so ``--resume`` may
change them. :func:`ntkhom.report.execute` runs the two, so an
interrupted command (Ctrl-C, SIGTERM) still writes its figures and a summary marked partial. Every command
runs in float64 (JAX's x64 mode).

Exit status: 0 finished, 1 failed, 2 bad arguments (one line on stderr, as argparse), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import re
import shlex
import signal
import sys
import warnings
from pathlib import Path

from ntkhom import distributed

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


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block): ``ntkhom train: error: argument --steps: ...``, and no
    abbreviated options (``reproduce am --n 1`` was taken as ``--num-processes 1``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written; each option's default once, unless it is None (the help then says what
    happens) or a flag."""

    def _get_help_string(self, action):
        help_text = action.help or ""
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS or "default" in help_text:
            return help_text
        if isinstance(default, list | tuple):
            shown = " ".join(str(v) for v in default) if default else "none"
            return f"{help_text} (default: {shown})".replace("%", "%%")
        return super()._get_help_string(action)


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` on one line (for the list of commands)."""
    flat = " ".join(text.split())
    match = re.search(r"(?<=[.:])\s(?=[A-Z0-9(])", flat)
    return (flat[: match.start()] if match else flat).rstrip(":")


def _add(subparsers, name: str, module_name: str) -> None:
    if importlib.util.find_spec(module_name) is None:  # an experiment not built in this checkout
        return
    module = importlib.import_module(module_name)
    parser = subparsers.add_parser(name, help=first_sentence(module.DESCRIPTION), description=module.DESCRIPTION,
                                   formatter_class=_Formatter)
    parser.add_argument("--out", type=Path, default=Path("runs") / name, help="run folder to write")
    reuse = parser.add_mutually_exclusive_group()
    reuse.add_argument("--overwrite", action="store_true", help="clear --out if it is not empty")
    reuse.add_argument("--resume", action="store_true",
                       help="keep the finished work in --out (same settings only) and compute the rest")
    parser.add_argument("--quiet", action="store_true", help="no progress bars, no summary on stdout")
    distributed.add_arguments(parser)
    module.add_arguments(parser)
    parser.set_defaults(_module=module, _name=name)


def build_parser() -> argparse.ArgumentParser:
    from ntkhom import __version__

    parser = _Parser(prog="ntkhom", description="NTK spectra and solvers for homotopy networks.")
    parser.add_argument("--version", action="version", version=f"ntkhom {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        _add(subparsers, name, module_name)
    reproduce = subparsers.add_parser("reproduce", help="Reproduce a paper's claims as a table of verdicts.",
                                      description="Reproduce a paper's claims as a table of verdicts.")
    reproduce_sub = reproduce.add_subparsers(dest="experiment", required=True)
    for name, module_name in REPRODUCE.items():
        _add(reproduce_sub, name, module_name)
    return parser


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"ntkhom: warning: {_one_line(message)}", file=sys.stderr)


@contextlib.contextmanager
def _interrupts():
    """SIGTERM, and SIGINT unless it was ignored when the process started (nohup), raise KeyboardInterrupt and
    ask the solver driver to stop after its chunk, so a killed or Ctrl-C'd run is finalized: Python drops an
    exception raised inside a garbage-collection callback, and the driver's check catches what is dropped."""
    def handler(signum, frame):
        driver = sys.modules.get("ntkhom.solvers.driver")
        if driver is not None:
            driver.request_stop()
        raise KeyboardInterrupt

    previous = {}
    try:
        for number in (signal.SIGTERM, signal.SIGINT):
            if number == signal.SIGINT and signal.getsignal(number) is signal.SIG_IGN:
                continue
            previous[number] = signal.signal(number, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
        driver = sys.modules.get("ntkhom.solvers.driver")
        if driver is not None:
            driver.clear_stop()


def main(argv: list[str] | None = None) -> int:
    from ntkhom.data import enable_float64
    from ntkhom.memory import allocation_failure
    from ntkhom.report import RunFolder, execute

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    prog = "ntkhom " + ("reproduce " if args.command == "reproduce" else "") + args._name
    module = args._module

    def fail(message: str, code: int) -> int:
        print(f"{prog}: error: {_one_line(message)}", file=sys.stderr)
        return code

    try:  # several processes join before any other JAX work
        distributed.initialize_from_args(args)
    except ValueError as exc:
        return fail(str(exc), 2)
    enable_float64()

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = _show_warning  # one line each; catch_warnings restores the previous one
        try:
            settings = module.settings(args)
            mode = "overwrite" if args.overwrite else ("resume" if args.resume else "new")
            folder = RunFolder(args.out, settings, mode=mode, command=shlex.join(["ntkhom", *argv]))
        except ValueError as exc:
            return fail(str(exc), 2)
        try:
            with _interrupts():
                placement = module.placement(args) if hasattr(module, "placement") else {}
                status = execute(folder, lambda: module.compute(settings, folder, quiet=args.quiet, **placement),
                                 lambda: module.finalize(settings, folder))
        except ValueError as exc:
            return fail(str(exc), 2)
        except Exception as exc:
            memory = allocation_failure(exc)
            if memory is None:
                raise
            return fail(memory, 1)
    if status == "interrupted":
        print(f"interrupted: the finished work, its figures and a partial summary are in {folder.path}",
              file=sys.stderr)
        return 130
    if not args.quiet:
        print(folder.file("summary.md").read_text())
    print(f"results written to {folder.path}")
    return 0


def entry() -> None:
    """The ``ntkhom`` command: :func:`main`, then exit with its status. An interrupted run leaves without the
    interpreter's teardown (its run folder is already finalized and closed): a Ctrl-C can leave XLA work in
    flight, and tearing the runtime down under it has crashed the process (SIGSEGV) after the message."""
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
