"""Bad input to a run gets a clear error or an honest stop message: mismatched output and target shapes, a run
folder that cannot be created, targets that cannot be standardised, --quick against explicit flags, s values
training cannot use, NaN in a streamed batch or a schedule of s, and diverged runs in PathCond's verdicts."""

import math
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cli_helpers import run_cli

from ntkhom import data, losses
from ntkhom.cli import build_parser
from ntkhom.experiments import am, pathcond
from ntkhom.models import mlp
from ntkhom.report import RunFolder, RunFolderError
from ntkhom.solvers import driver
from ntkhom.solvers.gradient import gradient_solver
from ntkhom.solvers.hrta import hrta_solver


def _two_layer(p, x):
    return jnp.tanh(x @ p["W1"]) @ p["W2"]


def _function_problem(n=5, k=3):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"W1": jax.random.normal(k1, (4, 16)), "W2": jax.random.normal(k2, (16, 1))}
    return params, jax.random.normal(k3, (n, 4)), jnp.ones((n, k))


# -- 1. output columns against target columns ------------------------------------------------------------
def test_losses_refuse_prediction_and_target_shapes_that_would_broadcast():
    with pytest.raises(ValueError, match=r"\(5, 1\).*\(5, 3\)"):
        losses.squared_loss(jnp.ones((5, 1)), jnp.ones((5, 3)))
    with pytest.raises(ValueError, match="shape"):
        losses.cross_entropy(jnp.ones((5, 2)), jnp.ones((5, 3)))
    assert float(losses.squared_loss(jnp.ones((5, 3)), jnp.zeros((5, 3)))) == pytest.approx(7.5)


def test_a_function_network_with_too_few_outputs_is_refused_before_training():
    params, x, y = _function_problem()
    solver = gradient_solver(_two_layer, learning_rate=0.01)
    with pytest.raises(ValueError, match=r"output has shape \(5, 1\).*targets y have shape \(5, 3\)"):
        driver.run(solver, params, (x, y), steps=5)
    # the check reads shapes only, so it also passes under vmap (tracers) when the shapes agree
    states = jax.vmap(solver.init, in_axes=(0, None))(driver.stack([params, params]), (x, y[:, :1]))
    assert states.step.shape == (2,)


# -- 2. a run folder that cannot be created ----------------------------------------------------------------
def test_a_run_folder_under_a_file_names_the_file(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(RunFolderError, match="file is a file, not a folder"):
        RunFolder(tmp_path / "file" / "sub", {}, writer=True)


def test_an_os_error_creating_the_run_folder_is_a_run_folder_error(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):  # what mkdir does in /sys, or on a read-only mount, also for root
        raise PermissionError(1, "Operation not permitted", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(RunFolderError, match="cannot create or write the run folder: Operation not permitted"):
        RunFolder(tmp_path / "new", {}, writer=True)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="no /proc on this system")
def test_an_out_folder_in_proc_is_one_line_on_the_command_line(capsys):
    code, err = run_cli(["spectrum", "--n", "20", "--widths", "16", "--seeds", "1", "--no-infinite", "--quiet",
                         "--out", "/proc/ntkhom-no-such-folder"], capsys)
    assert code == 2
    assert [line for line in err if "error" in line] == [
        "ntkhom spectrum: error: --out /proc/ntkhom-no-such-folder: cannot create or write the run folder: "
        "No such file or directory (/proc/ntkhom-no-such-folder)"]


# -- 3. targets that cannot be normalised -----------------------------------------------------------------
@pytest.mark.parametrize("name", ["diabetes", "friedman1"])
def test_standardising_one_target_is_refused(name):
    with pytest.raises(ValueError, match="at least 2 samples with different values"):
        data.load(name, n=1)


def test_train_with_one_sample_says_why(tmp_path, capsys):
    code, err = run_cli(["train", "--dataset", "diabetes", "--n", "1", "--quiet", "--out", tmp_path / "x"], capsys)
    assert code == 2 and len(err) == 1 and "at least 2 samples" in err[0]


def test_teacher_targets_of_zero_inputs_are_refused_where_concrete():
    with pytest.raises(ValueError, match="teacher targets are all zero"):
        data.teacher_targets(jax.random.PRNGKey(0), jnp.zeros((5, 3)))
    # under jit the values are unknown at trace time: it must still trace
    assert jax.jit(data.teacher_targets)(jax.random.PRNGKey(0), jnp.ones((5, 3))).shape == (5, 1)


# -- 4. --quick fills in only what was not given ----------------------------------------------------------
def _settings(*argv):
    args = build_parser().parse_args(["reproduce", *argv])
    return args._module.settings(args)


def test_quick_keeps_explicit_pathcond_flags():
    settings = _settings("pathcond", "--quick", "--seeds", "1", "--epochs", "20")
    assert (settings["seeds"], settings["epochs"]) == (1, 20)
    assert (settings["width"], settings["s_values"]) == (pathcond.QUICK["width"], pathcond.QUICK["s_values"])
    assert _settings("pathcond")["epochs"] == pathcond.DEFAULTS["epochs"]


def test_quick_keeps_explicit_am_and_tiam_flags():
    with pytest.raises(ValueError, match="--max-samples must be >= 8"):
        _settings("am", "--quick", "--max-samples", "1")
    settings = _settings("tiam", "--quick", "--seeds", "3", "--gradient-steps", "7")
    assert (settings["seeds"], settings["datasets"], settings["max_samples"]) == (3, ["wine"], 120)
    budget = am.budget_of(settings)
    assert (budget.gradient, budget.am, budget.one_learning_rate) == (7, am.QUICK_BUDGET.am, True)
    assert am.budget_of(_settings("am")).gradient == am.DEFAULT_BUDGET.gradient


# -- 5. s values part B cannot train with -----------------------------------------------------------------
@pytest.mark.parametrize("value", ["nan", "1e300"])
def test_pathcond_refuses_unusable_s_values_up_front(tmp_path, capsys, value):
    code, err = run_cli(["reproduce", "pathcond", "--quick", "--s-values", "0.5", value, "--quiet",
                         "--out", tmp_path / "x"], capsys)
    assert code == 2 and len(err) == 1 and "--s-values" in err[0]
    assert not (tmp_path / "x").exists()  # refused before any work


# -- 6. stop messages that name the cause -----------------------------------------------------------------
@pytest.fixture(scope="module")
def regression():
    x = data.sphere(jax.random.PRNGKey(0), 12, 3)
    y = data.teacher_targets(jax.random.PRNGKey(1), x)
    model = mlp((16,), s=1.0)
    return model, model.init(jax.random.PRNGKey(2), 3), x, y


def test_a_streamed_batch_with_nan_stops_the_run_before_it(regression):
    model, params, x, y = regression
    solver = gradient_solver(model, learning_rate=0.1)
    batches = [(x, y)] * 30
    batches[13] = (x.at[0, 0].set(jnp.nan), y)
    result = driver.run(solver, params, iter(batches), steps=30, record_every=5)
    assert (result.stop_reason, result.stop_step) == ("bad_batch", 13)
    assert "batch 13 of the data stream" in result.message and "step size" not in result.message
    assert np.all(np.isfinite(result.loss))
    with pytest.raises(ValueError, match="batch 0 of the data stream has NaN or inf"):
        driver.run(solver, params, iter([(x, y.at[0, 0].set(jnp.inf))] + batches), steps=30)


@pytest.mark.parametrize("chunk", [5, 1000])
def test_a_schedule_of_s_returning_nan_is_named_as_the_cause(regression, chunk):
    model, params, x, y = regression
    solver = hrta_solver(model, schedule=lambda t: jnp.where(t < 23, 1.0, jnp.nan), learning_rate=0.1)
    result = driver.run(solver, params, (x, y), steps=50, record_every=5, chunk=chunk)
    assert (result.stop_reason, result.stop_step) == ("nonfinite", 20)
    assert "homotopy parameter s to NaN or inf after 23 steps" in result.message
    assert "step size" not in result.message


# -- 7. a diverged run is no verdict ------------------------------------------------------------------------
def test_pathcond_leaves_diverged_runs_out_of_its_verdicts():
    nan = math.nan
    labels = [(method, seed, 1.0) for method in pathcond.METHODS for seed in (0, 1)]
    # PathCond's two runs diverged (NaN after their last record); the others trained
    loss = np.array([[1.0, 0.5, 0.4]] * 4 + [[1.0, nan, nan]] * 2)
    record = types.SimpleNamespace(steps=np.array([0, 10, 20]), loss=loss)
    assert pathcond._wins(record, labels, 20, "pathcond", "none") == (0, 0, 2)
    claims = pathcond._claims({"epochs": 20, "quick": False}, record, labels, record, labels, [], [], 0.0, [20],
                              {}, 20)
    rows = [row for row in claims if row["claim"].startswith("pathcond trains faster")]
    rows += [row for row in claims if "two-layer homotopy network" in row["claim"]]
    assert len(rows) == 3 and all(row["verdict"] == "inconclusive" for row in rows)
    assert all("left out: a run diverged" in row["measured"] for row in rows)
