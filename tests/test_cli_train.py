"""The ``ntkhom train`` and ``ntkhom reproduce hrta`` commands end to end, at a small size."""

import json

import numpy as np
import pytest
from cli_helpers import interrupt_then_resume, run_cli

from ntkhom.cli import main
from ntkhom.report import read_csv


def test_train_writes_curves_with_the_kernel_prediction(tmp_path):
    out = tmp_path / "train"
    code = main(["train", "--n", "12", "--d", "4", "--width", "512", "--steps", "60", "--seeds", "1",
                 "--solvers", "gd", "adam", "--learning-rate", "0.3", "--record-every", "10", "--out", str(out),
                 "--quiet"])
    assert code == 0
    for name in ("results.json", "results.csv", "curves.csv", "kernel.csv", "summary.md", "loss_curves.png",
                 "run.json"):
        assert (out / name).exists(), name
    results = json.loads((out / "results.json").read_text())["results"]
    gd = next(r for r in results if r["solver"] == "gd")
    assert gd["stop"] == "steps"
    curves = [r for r in read_csv(out / "curves.csv") if r["solver"] == "gd"]
    assert len(curves) == 7 and float(curves[0]["loss"]) == pytest.approx(float(curves[0]["predicted"]))
    # a wide network follows its linearized prediction: within 1% of the initial loss all along
    measured = np.array([float(r["loss"]) for r in curves])
    predicted = np.array([float(r["predicted"]) for r in curves])
    assert np.max(np.abs(measured - predicted)) < 0.01 * measured[0]
    assert measured[-1] < 0.1 * measured[0] and predicted[-1] == pytest.approx(gd["predicted_final_loss"])
    assert "| gd |" in (out / "summary.md").read_text()
    assert "None" not in (out / "summary.md").read_text()


def test_train_reports_a_diverging_step_instead_of_nan(tmp_path):
    out = tmp_path / "diverge"
    main(["train", "--n", "12", "--d", "4", "--width", "64", "--steps", "200", "--seeds", "1", "--solvers", "gd",
          "--learning-rate", "50", "--out", str(out), "--quiet"])
    (row,) = json.loads((out / "results.json").read_text())["results"]
    kernel = read_csv(out / "kernel.csv")[0]
    assert 50 > float(kernel["step_limit_2_over_lambda_max"])
    assert row["stop"] in ("diverged", "nonfinite") and row["stop_step"] < 200
    assert np.isfinite(row["last_loss"]) and row["message"]
    assert row["message"] in (out / "summary.md").read_text()


def test_train_records_the_size_of_the_data_it_used(tmp_path, capsys):
    # iris has 150 samples of 4 features, whatever --n and --d ask
    code, err = run_cli(["train", "--dataset", "iris", "--n", "1000", "--width", "16", "--steps", "20",
                         "--seeds", "1", "--solvers", "gd", "--out", tmp_path / "iris", "--quiet"], capsys)
    assert code == 0, err
    assert any("iris dataset has 150 samples" in line for line in err), err
    record = json.loads((tmp_path / "iris" / "run.json").read_text())
    assert (record["settings"]["n_effective"], record["settings"]["d_effective"]) == (150, 4)
    assert (tmp_path / "iris" / "summary.md").read_text().startswith("# ntkhom train: iris (n = 150, d = 4)")


def test_train_refuses_bad_input(tmp_path, capsys):
    for argv, name in ((["--steps", "0"], "--steps"), (["--learning-rate", "-1"], "--learning-rate"),
                       (["--solvers", "newton"], "--solvers"), (["--s", "nan"], "--s must be finite")):
        code, err = run_cli(["train", *argv, "--out", tmp_path / "x", "--quiet"], capsys)
        assert code == 2 and len(err) == 1 and name in err[0], err


def test_reproduce_hrta_quick(tmp_path, monkeypatch):
    out = tmp_path / "hrta"
    interrupt_then_resume(["reproduce", "hrta", "--quick", "--quiet"], out, monkeypatch, after=2,
                          files=("hrta.png", "hrta.pdf", "claims.csv"))
    rows = read_csv(out / "claims.csv")
    assert {"claim", "setting", "measured", "predicted", "verdict"} <= set(rows[0])
    claims = {r["claim"]: r for r in rows}
    assert claims["lambda_0 grows with s"]["verdict"] == "confirmed (indicative)"
    assert any(name.startswith("HRTA's central claim") for name in claims)
    switch = next(r for name, r in claims.items() if "(switch)" in name and "1.5" in name)
    assert "loss at the switch" in switch["measured"] and "highest later record" in switch["measured"]
    refit = next(r for name, r in claims.items() if "refit_output" in name)
    assert "no bound" in refit["measured"]
    assert (out / "hrta.png").exists() and (out / "hrta.pdf").exists() and (out / "summary.md").exists()
    assert "None" not in (out / "summary.md").read_text()
