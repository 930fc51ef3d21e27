"""`ntkhom spectrum` / `ntkhom report`: files written, JSON equal to CSV, interrupts keep finished rows, bad input."""

import json

import numpy as np
import pytest
from cli_helpers import run_cli

from ntkhom.cli import main
from ntkhom.report import RunFolder, read_csv

SMALL = ["--n", "24", "--d", "4", "--widths", "64", "--seeds", "2", "--s-points", "5", "--quiet"]



def _number(text):
    return None if text in ("", "None") else float(text)


def test_spectrum_writes_consistent_json_csv_and_plots(tmp_path):
    out = tmp_path / "run"
    assert main(["spectrum", "--out", str(out), *SMALL]) == 0
    for name in ("run.json", "points.csv", "points.json", "summary.csv", "summary.json", "ratio.csv", "gap.json",
                 "lambda_min.png", "ratio.png", "density.png", "gap.png", "summary.md"):
        assert (out / name).stat().st_size > 0, name
    points = json.loads((out / "points.json").read_text())
    rows = read_csv(out / "points.csv")
    assert len(points) == len(rows) == 5 * (1 + 2)  # infinite width + 2 seeds of width 64
    for p, r in zip(points, rows):
        assert str(p["width"]) == r["width"] and p["s"] == pytest.approx(float(r["s"]))
        for key in ("lambda_min_computed", "lambda_max", "floor"):
            assert p[key] == pytest.approx(float(r[key]), rel=1e-12)
        assert (p["lambda_min"] is None) == (_number(r["lambda_min"]) is None)
        assert p["resolved"] == (r["resolved"] == "True")
    # The summary's mean over seeds is the mean of the seeds' rows.
    summary = json.loads((out / "summary.json").read_text())
    at_one = [p["lambda_min"] for p in points if p["width"] == 64 and p["s"] == 1.0]
    row = next(r for r in summary if r["width"] == 64 and r["s"] == 1.0)
    assert row["lambda_min_mean"] == pytest.approx(np.mean(at_one), rel=1e-12)
    # s = 0 with n = 24 > d = 4 is unresolved and stays out of the numbers.
    assert all(p["lambda_min"] is None for p in points if p["s"] == 0.0)
    ratio = {r["s"]: r for r in json.loads((out / "ratio.json").read_text())}
    assert ratio[1.0]["infinite width"] == pytest.approx(1.0)
    assert "finite vs infinite" in (out / "summary.md").read_text()


def test_interrupt_mid_sweep_keeps_finished_rows(tmp_path, monkeypatch):
    out = tmp_path / "run"
    original = RunFolder.append_row
    calls = {"n": 0}

    def append_then_interrupt(self, name, row):
        target = original(self, name, row)
        calls["n"] += 1
        if calls["n"] == 7:  # the infinite-width path (5 rows) and 2 rows of the first seed have finished
            raise KeyboardInterrupt
        return target

    monkeypatch.setattr(RunFolder, "append_row", append_then_interrupt)
    assert main(["spectrum", "--out", str(out), *SMALL]) == 130
    rows = read_csv(out / "points.csv")
    assert len(rows) == 7
    assert [r["width"] for r in rows] == ["inf"] * 5 + ["64"] * 2
    finished = json.loads((out / "points.json").read_text())
    assert len(finished) == 5 and all(p["width"] == "inf" for p in finished)
    for p, r in zip(finished, rows):
        assert p["lambda_max"] == pytest.approx(float(r["lambda_max"]), rel=1e-12)
    assert (out / "lambda_min.png").exists() and (out / "summary.md").exists()


def test_report_runs_with_small_overrides(tmp_path):
    out = tmp_path / "report"
    assert main(["report", "--out", str(out), "--n", "16", "--widths", "32", "128", "--seeds", "1",
                 "--s-points", "5", "--quiet"]) == 0
    gap = json.loads((out / "gap.json").read_text())
    assert [g["width"] for g in gap] == [32, 128]
    assert "ntkhom kernel-spectrum report" in (out / "summary.md").read_text()
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["seeds"] == 1 and settings["d"] == 8  # report default d kept


@pytest.mark.parametrize("extra,match", [
    (["--dataset", "mnist"], "--dataset"),
    (["--widths", "64", "0"], "--widths"),
    (["--s", "0", "nan"], "non-finite"),
    (["--widths", "--no-infinite"], "nothing to compute"),
    (["--seeds", "0"], "--seeds"),
    (["--native", "--depth", "2"], "--native: native products need a two-layer network"),
    (["--native", "--activation", "tanh"], "--native: native products need a two-layer network"),
])
def test_bad_input_is_one_line_with_exit_2(tmp_path, capsys, extra, match):
    code, err = run_cli(["spectrum", "--out", tmp_path / "bad", *SMALL, *extra], capsys)
    assert code == 2 and len(err) == 1 and match in err[0], err


def test_progress_bar_total_matches_the_rows_written(tmp_path, capsys):
    import re

    out = tmp_path / "run"
    capsys.readouterr()
    assert main(["spectrum", "--out", str(out), *[a for a in SMALL if a != "--quiet"]]) == 0
    counts = re.findall(r"(\d+)/(\d+)", capsys.readouterr().err)
    done, total = map(int, counts[-1])
    assert done == total == len(read_csv(out / "points.csv")) == 5 * (1 + 2)
