"""Smoke test of ``ntkhom reproduce pathcond --quick``: it runs through the solver driver, writes every
result file, and its numbers are consistent (function unchanged by rescaling, finite losses that decrease)."""


import numpy as np
from cli_helpers import interrupt_then_resume, run_cli

from ntkhom.experiments.verdicts import VERDICTS
from ntkhom.report import read_csv


def test_quick_reproduce_pathcond(tmp_path, monkeypatch):
    out = tmp_path / "pathcond"
    interrupt_then_resume(["reproduce", "pathcond", "--quick", "--quiet"], out, monkeypatch, after=1,
                          files=("reference_losses.png", "reference_losses.csv", "claims.csv"))
    for name in ("run.json", "summary.md", "claims.csv", "reference_losses.csv", "reference_checkpoints.csv",
                 "reference_ntk.csv", "two_layer_losses.csv", "two_layer_ntk.csv", "reference_losses.png",
                 "two_layer_losses.png"):
        assert (out / name).is_file(), name
    claims = read_csv(out / "claims.csv")
    assert claims[0]["verdict"] == "confirmed (indicative)"  # the rescaling preserved the function to 1e-10
    assert {row["verdict"].removesuffix(" (indicative)") for row in claims} <= set(VERDICTS)
    losses = read_csv(out / "reference_losses.csv")
    assert {row["method"] for row in losses} == {"none", "enorm", "pathcond"}
    assert {row["seed"] for row in losses} == {"0", "1"}
    for method in ("none", "enorm", "pathcond"):
        curve = [float(r["loss"]) for r in losses if r["method"] == method and r["seed"] == "0"]
        assert np.all(np.isfinite(curve)) and curve[-1] < curve[0]
    ntk = read_csv(out / "reference_ntk.csv")
    assert len(ntk) == 6 and all(float(r["lambda_max"]) > 0 for r in ntk)
    assert {float(r["s"]) for r in read_csv(out / "two_layer_losses.csv")} == {0.5, 2.0}
    assert "| claim | measured | verdict |" in (out / "summary.md").read_text()


def test_bad_arguments_are_refused(tmp_path, capsys):
    code, err = run_cli(["reproduce", "pathcond", "--seeds", "0", "--quiet", "--out", tmp_path], capsys)
    assert code == 2 and len(err) == 1 and "--seeds" in err[0]
    code, err = run_cli(["reproduce", "pathcond", "--lr", "-1", "--quiet", "--out", tmp_path], capsys)
    assert code == 2 and len(err) == 1 and "--lr" in err[0]
