"""Smoke tests of ``ntkhom reproduce am`` and ``ntkhom reproduce tiam --quick``, each interrupted and resumed:
every method ran, every output file is there and the verdict tables agree with the numbers they were built from."""

import json
import math

from cli_helpers import interrupt_then_resume, run_cli

from ntkhom.report import read_csv


def test_reproduce_am_quick(tmp_path, monkeypatch):
    out = tmp_path / "am"
    interrupt_then_resume(["reproduce", "am", "--quick", "--quiet"], out, monkeypatch, after=2,
                          files=("wine.png", "wine.pdf", "runs.csv"))
    for name in ("run.json", "runs.csv", "curves.csv", "summary.csv", "results.json", "summary.md", "wine.png"):
        assert (out / name).exists(), name
    curves = read_csv(out / "curves.csv")
    assert {r["method"] for r in curves} == {"analytic-am", "tiam", "plain-am", "gd", "sgd", "adam"}
    assert all(math.isfinite(float(r["train_mse"])) for r in curves)
    results = json.loads((out / "results.json").read_text())
    (verdict,) = results["verdicts"]
    by = {row["method"]: row for row in results["summary"]}
    # the verdict row is built from the summary: check it against the numbers
    assert verdict["AM lower"] == (by["analytic-am"]["train_mse"] < min(by["sgd"]["train_mse"],
                                                                         by["adam"]["train_mse"]))
    # analytic AM's loss never goes up along its recorded curve (the safeguard)
    am = [float(r["train_mse"]) for r in curves if r["method"] == "analytic-am"][1:]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(am, am[1:], strict=False))
    # one dataset cannot decide a 4-of-5 claim, and a quick run is only indicative
    assert results["claim"]["verdict"] == "inconclusive (indicative)"
    assert "the claim needs all 5" in results["claim"]["measured"]


def test_reproduce_tiam_quick(tmp_path, monkeypatch):
    out = tmp_path / "tiam"
    interrupt_then_resume(["reproduce", "tiam", "--quick", "--quiet"], out, monkeypatch, after=1,
                          files=("wine.png", "runs.csv"))
    iterations = read_csv(out / "iterations.csv")
    variants = {r["variant"] for r in iterations}
    assert "tiam p=0.3,0.3,0.2" in variants and "ipalm p=0.3,0.3,0" in variants
    for row in iterations:
        assert (row["fewer"] == "True") == (float(row["iterations"]) < float(row["plain AM iterations"]))
    assert "TIAM" in (out / "summary.md").read_text()


def test_bad_arguments_are_refused(tmp_path, capsys):
    code, err = run_cli(["reproduce", "am", "--seeds", "0", "--out", tmp_path / "x"], capsys)
    assert code == 2 and len(err) == 1 and "--seeds" in err[0]
    code, err = run_cli(["reproduce", "tiam", "--datasets", "mnist", "--out", tmp_path / "y"], capsys)
    assert code == 2 and len(err) == 1 and "--datasets" in err[0]
