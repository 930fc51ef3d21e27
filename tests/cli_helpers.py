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


def interrupt_after(monkeypatch, finished_units: int) -> None:
    """Make the unit of work after ``finished_units`` computed ones raise KeyboardInterrupt (as Ctrl-C would)."""
    from ntkhom.report import RunFolder

    original = RunFolder.unit
    count = {"n": 0}

    def unit(self, key, compute):
        if self.has_unit(key):
            return original(self, key, compute)
        if count["n"] == finished_units:
            raise KeyboardInterrupt
        count["n"] += 1
        return original(self, key, compute)

    monkeypatch.setattr(RunFolder, "unit", unit)


def interrupt_then_resume(argv, out, monkeypatch, *, after: int = 1, files=()) -> None:
    """``ntkhom *argv --out out`` interrupted after ``after`` units (finished work, ``files`` and a partial
    summary kept), then ``--resume``d to the end, computing only the missing units."""
    import json

    with monkeypatch.context() as patch:
        interrupt_after(patch, after)
        assert main([*map(str, argv), "--out", str(out)]) == 130
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "interrupted" and record["computed_units"] == after
    for name in files:
        assert (out / name).stat().st_size > 0, name
    summary = (out / "summary.md").read_text()
    assert "Partial results: the run was interrupted" in summary and "None" not in summary
    assert main([*map(str, argv), "--out", str(out), "--resume"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished" and record["resumed_units"] == after
    assert "Partial" not in (out / "summary.md").read_text()
