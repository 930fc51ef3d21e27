"""Run folders and the command line: interrupts keep finished work, figures and a partial summary; a non-empty
--out is refused unless --overwrite or --resume; bad arguments are one line with exit status 2."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from cli_helpers import interrupt_after, run_cli

import ntkhom
from ntkhom.cli import build_parser, main
from ntkhom.report import read_csv

SPECTRUM = ["spectrum", "--n", "12", "--d", "3", "--widths", "16", "32", "--seeds", "1", "--s-points", "5",
            "--quiet"]
# Each command at a tiny size, the unit after which it is interrupted, and files its finished part must leave
# (the reproduce commands are interrupted and resumed in their own test files).
COMMANDS = {
    "spectrum": (SPECTRUM, 2, ["lambda_min.png", "lambda_min.pdf", "points.csv"]),
    "report": (["report", "--n", "12", "--widths", "16", "--seeds", "1", "--s-points", "5", "--quiet"], 1,
               ["lambda_min.png", "ratio.png", "points.csv"]),
    "train": (["train", "--n", "10", "--d", "3", "--width", "32", "--steps", "20", "--seeds", "2", "--solvers",
               "gd", "adam", "--record-every", "5", "--quiet"], 2, ["loss_curves.png", "results.csv"]),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_interrupt_keeps_finished_work_figures_and_a_partial_summary(tmp_path, monkeypatch, name):
    argv, after, files = COMMANDS[name]
    out = tmp_path / name
    interrupt_after(monkeypatch, after)
    assert main([*argv, "--out", str(out)]) == 130
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "interrupted" and record["computed_units"] == after
    units = (out / "units.jsonl").read_text().splitlines()
    assert len(units) == after
    for file in files:
        assert (out / file).stat().st_size > 0, file
    summary = (out / "summary.md").read_text()
    assert "Partial results: the run was interrupted" in summary
    assert "None" not in summary and "{'" not in summary


def test_resume_computes_only_the_missing_units_and_refuses_changed_settings(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        interrupt_after(patch, 1)  # the infinite-width path finishes, width 16 is interrupted
        assert main([*SPECTRUM, "--out", str(out)]) == 130
    assert len(read_csv(out / "points.csv")) >= 5
    code, err = run_cli([*SPECTRUM, "--out", out], capsys)
    assert code == 2 and len(err) == 1 and "--overwrite" in err[0] and "--resume" in err[0]
    code, err = run_cli([*SPECTRUM, "--seed", "3", "--out", out, "--resume"], capsys)
    assert code == 2 and len(err) == 1 and "seed was 0, now 3" in err[0]
    assert main([*SPECTRUM, "--out", str(out), "--resume"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["resumed_units"] == 1 and record["computed_units"] == 2
    rows = read_csv(out / "points.csv")
    assert sorted({r["width"] for r in rows}) == ["16", "32", "inf"] and len(rows) == 15
    assert "Partial" not in (out / "summary.md").read_text()


def test_overwrite_clears_the_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.csv").write_text("stale\n")
    assert main([*SPECTRUM, "--out", str(out), "--overwrite"]) == 0
    assert not (out / "old.csv").exists() and (out / "summary.md").exists()
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished" and record["environment"]["versions"]["ntkhom"] == ntkhom.__version__
    assert record["command"].startswith("ntkhom spectrum") and record["environment"]["devices"]


@pytest.mark.parametrize("argv,name", [
    (["spectrum", "--widths", "0"], "--widths"),
    (["spectrum", "--depth", "0"], "--depth"),
    (["spectrum", "--seeds", "0"], "--seeds"),
    (["spectrum", "--d", "0"], "--d"),
    (["spectrum", "--dataset", "foo"], "--dataset"),
    (["spectrum", "--s-min", "2", "--s-max", "0"], "--s-min"),
    (["spectrum", "--s-points", "1"], "--s-points"),
    (["train", "--width", "0"], "--width"),
    (["train", "--seeds", "0"], "--seeds"),
    (["reproduce", "hrta", "--steps", "7"], "--steps"),
    (["spectrum", "--n", "60000", "--dense"], "--n 60000"),  # three (n, n) float64 matrices: ~140 GB
    (["train", "--width", "5000000"], "--width 5000000"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv, name):
    code, err = run_cli([*argv, "--out", tmp_path / "x", "--quiet"], capsys)
    assert code == 2, err
    assert len(err) == 1 and name in err[0] and "Traceback" not in err[0], err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_out_that_is_a_file_or_not_writable_is_refused(tmp_path, capsys):
    file = tmp_path / "file"
    file.write_text("x")
    code, err = run_cli([*SPECTRUM, "--out", file], capsys)
    assert code == 2 and len(err) == 1 and "--out" in err[0] and "is a file" in err[0]
    if os.geteuid() == 0:
        return  # root writes anywhere
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, err = run_cli([*SPECTRUM, "--out", locked / "run"], capsys)
        assert code == 2 and len(err) == 1 and "not writable" in err[0]
    finally:
        locked.chmod(0o700)


def test_warnings_for_s_outside_the_studied_range_and_snapped_density_s(tmp_path, capsys):
    code, err = run_cli(["spectrum", "--n", "8", "--d", "3", "--widths", "--s", "-0.5", "0", "1", "2.5",
                         "--density-s", "0.4", "--out", tmp_path / "run", "--quiet"], capsys)
    assert code == 0, err
    assert any("-0.5, 2.5 are outside [0, 2]" in line for line in err), err
    assert any("--density-s 0.4" in line and "nearest grid value 0" in line for line in err), err
    summary = (tmp_path / "run" / "summary.md").read_text()
    for s in ("-0.5", "2.5"):  # every asked-for s is in the table
        assert f"| inf | {s} |" in summary


def test_default_density_s_follows_the_grid_without_warnings(tmp_path, capsys):
    # The defaults (0.5, 1, 2) snap to a grid of two values silently; a value the user asks for does not.
    code, err = run_cli(["spectrum", "--n", "8", "--d", "3", "--widths", "--s", "0.5", "1",
                         "--out", tmp_path / "run", "--quiet"], capsys)
    assert code == 0 and not any("density-s" in line for line in err), err
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["settings"]["density_s"] == [0.5, 1.0]
    code, err = run_cli(["spectrum", "--n", "8", "--d", "3", "--widths", "--s", "0.5", "1", "--density-s", "2",
                         "--out", tmp_path / "asked", "--quiet"], capsys)
    assert code == 0 and any("--density-s 2" in line and "nearest grid value 1" in line for line in err), err


def test_options_are_not_abbreviated(tmp_path, capsys):
    # 'reproduce am' has no --n; argparse's prefix matching took it for --num-processes
    code, err = run_cli(["reproduce", "am", "--n", "1", "--out", tmp_path / "am", "--quiet"], capsys)
    assert code == 2 and len(err) == 1 and "unrecognized arguments: --n 1" in err[0], err


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"ntkhom {ntkhom.__version__}"
    parser = build_parser()
    top = parser.format_help()
    for command in ("report", "spectrum", "train"):
        assert command in top
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    helps = [subparsers[name].format_help() for name in ("spectrum", "train")]
    reproduce = next(a for a in subparsers["reproduce"]._actions if a.dest == "experiment").choices
    helps += [p.format_help() for p in reproduce.values()]
    for text in helps:
        assert "(default: None)" not in text and "(default: False)" not in text
    options = subparsers["train"].format_help().split("options:", 1)[1]
    for option in ("--steps", "--seeds", "--solvers", "--seed", "--activation"):
        block = options.split(f"\n  {option} ", 1)[1].split("\n  --", 1)[0]
        assert block.count("default") == 1, (option, block)


def test_sigint_to_a_running_command(tmp_path):
    """A real Ctrl-C (SIGINT) to a process: exit 130, the finished solver kept, a figure and a partial summary."""
    out = tmp_path / "run"
    # Python leaves SIGINT ignored when it starts with it ignored (as a child of some test runners' workers may):
    # restore the handler a terminal gives, so the test does not depend on how pytest was launched.
    launcher = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                "sys.argv[0] = 'ntkhom'; from ntkhom.cli import entry; entry()")
    process = subprocess.Popen(
        [sys.executable, "-c", launcher, "train", "--n", "10", "--d", "3", "--width", "32", "--seeds", "1",
         "--solvers", "gd", "adam", "momentum", "--steps", "3000000", "--record-every", "1000", "--quiet",
         "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        units = out / "units.jsonl"
        if units.exists() and len(units.read_text().splitlines()) >= 1:  # the kernel unit is done
            time.sleep(1.0)
            break
        time.sleep(0.2)
    assert process.poll() is None, "the command finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "interrupted"
    assert "Partial results" in (out / "summary.md").read_text()


def test_an_allocation_failure_is_one_line_and_a_failed_run(tmp_path, monkeypatch, capsys):
    from ntkhom.experiments import spectrum

    def compute(settings, folder, quiet=False, **placement):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 28800000000 bytes.")

    monkeypatch.setattr(spectrum, "compute", compute)
    code, err = run_cli([*SPECTRUM, "--out", tmp_path / "run"], capsys)
    assert code == 1 and len(err) == 1 and "26.8 GiB" in err[0], err
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "failed" and "RESOURCE_EXHAUSTED" in record["error"]
    assert "Partial results: the run failed" in (tmp_path / "run" / "summary.md").read_text()


def test_only_process_zero_writes_and_the_others_skip_the_same_units(tmp_path):
    from ntkhom.report import RunFolder

    follower_out = tmp_path / "follower"
    follower = RunFolder(follower_out, {"n": 3}, writer=False)
    assert follower.unit("a", lambda: np.float64(1.5)) == 1.5  # computed, returned as stored, not written
    follower.append_row("points.csv", {"s": 1.0})
    follower.set_status("finished")
    assert not follower_out.exists()
    # Process 0 keeps unit "a"; resuming, a follower reads it and computes only "b", as process 0 does.
    leader = RunFolder(tmp_path / "shared", {"n": 3})
    leader.unit("a", lambda: 2.0)
    calls = []
    follower = RunFolder(tmp_path / "shared", {"n": 3}, mode="resume", writer=False)
    assert follower.unit("a", lambda: calls.append("a")) == 2.0
    follower.unit("b", lambda: calls.append("b") or 3.0)
    assert calls == ["b"] and (tmp_path / "shared" / "units.jsonl").read_text().count("\n") == 1
    # A follower never refuses a folder process 0 has just created (mode "new" is process 0's check).
    RunFolder(tmp_path / "shared", {"n": 3}, writer=False)
