"""Running the ``ntkhom`` command line in-process for tests: exit code and stderr, argparse exits included."""

from ntkhom.cli import main


def run_cli(argv, capsys):
    """(exit code, stderr lines) of ``ntkhom *argv``."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]
