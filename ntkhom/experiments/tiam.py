"""TIAM against alternating minimization without inertia, iPALM, analytic AM, GD, SGD and Adam.

Reproduces the claim of Yan, Xu, Wang, Peng (2025) as recorded in ``shared/reference/alternating.md``: TIAM
converges in fewer iterations than alternating minimization without inertia. Same datasets, network, data
split, seeds, timing and loss scale as ``ntkhom reproduce am`` (:mod:`ntkhom.experiments.am`). TIAM runs on
a grid of (p1, p2, p3) that separates the three extrapolations: the default (0.3, 0.3, 0.2), stronger
inertia (0.5, 0.5, 0.3), mostly the third step (0.2, 0.2, 0.5) and the third step alone (0, 0, 0.3);
iPALM is (0.3, 0.3, 0) and plain AM (0, 0, 0).

Iterations to a target: on each dataset the target is 1.01 times the largest final training MSE of any seed
of the two methods compared, so every run reaches it; the count is the first recorded iteration at or below
it, averaged over seeds.
"""

from __future__ import annotations

import argparse
import math

from ntkhom.experiments import am
from ntkhom.experiments.am import add_common_arguments, first_time_below
from ntkhom.experiments.verdicts import from_fraction

DESCRIPTION = """TIAM (Yan et al. 2025, reconstructed) against alternating minimization without inertia.

Five scikit-learn datasets, several seeds; TIAM over a grid of (p1, p2, p3), iPALM, plain AM, analytic AM,
GD, SGD and Adam; iterations to a common training-loss target; the verdict on: TIAM converges in fewer
iterations than alternating minimization without inertia."""

DEFAULT_P = (0.3, 0.3, 0.2)
P_GRID = (DEFAULT_P, (0.5, 0.5, 0.3), (0.2, 0.2, 0.5), (0.0, 0.0, 0.3))
METHODS = ("tiam", "ipalm", "plain-am", "analytic-am", "gd", "sgd", "adam")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)


def _label(p) -> str:
    return "p=" + ",".join(f"{v:g}" for v in p)


def _curves(curves, dataset, method, setting):
    return [c for c in curves if c["dataset"] == dataset and c["method"] == method and c["setting"] == setting]


def _finals(rows) -> list[float]:
    """The last recorded training MSE of every seed."""
    last = {}
    for row in rows:
        if row["seed"] not in last or row["iteration"] > last[row["seed"]]["iteration"]:
            last[row["seed"]] = row
    return [r["train_mse"] for r in last.values()] or [math.inf]


def _final(rows) -> float:
    values = _finals(rows)
    return sum(values) / len(values)


def iteration_rows(curves, datasets) -> list[dict]:
    """Per dataset and inertial variant: iterations to the common target against plain AM."""
    rows = []
    for dataset in datasets:
        plain = _curves(curves, dataset, "plain-am", "")
        if not plain:
            continue
        variants = [("tiam " + _label(p), _curves(curves, dataset, "tiam", _label(p))) for p in P_GRID]
        variants.append(("ipalm p=0.3,0.3,0", _curves(curves, dataset, "ipalm", "")))
        for name, mine in variants:
            if not mine:
                continue
            # every seed of both methods reaches it, so no count is infinite
            target = 1.01 * max(_finals(plain) + _finals(mine))
            ours = first_time_below(mine, target, key="iteration")
            theirs = first_time_below(plain, target, key="iteration")
            rows.append({"dataset": dataset, "variant": name, "target MSE": target,
                         "iterations": ours, "plain AM iterations": theirs,
                         "final MSE": _final(mine), "plain AM final MSE": _final(plain),
                         "fewer": bool(ours < theirs)})
    return rows


def settings(args) -> dict:
    return am.settings(args)


def _grid(settings) -> tuple:
    return P_GRID[:2] if settings["quick"] else P_GRID


def compute(settings: dict, folder, *, quiet: bool = False) -> None:
    am.compute_methods(settings, folder, list(METHODS), quiet=quiet, tiam_grid=_grid(settings))


def finalize(settings: dict, folder) -> str:
    curves, runs, tables, best = am.collect(settings, folder, list(METHODS))
    iterations = iteration_rows(curves, settings["datasets"])
    default = [row for row in iterations if row["variant"] == "tiam " + _label(DEFAULT_P)]
    wins = sum(row["fewer"] for row in default)
    total = len(default)
    claim = {
        "claim": "TIAM converges in fewer iterations than alternating minimization without inertia",
        "measured": f"fewer iterations to the common target on {wins} of {total} datasets "
                    f"(default p = {', '.join(f'{v:g}' for v in DEFAULT_P)})",
        "verdict": from_fraction(wins, total, indicative=settings["quick"]),
    }
    summary = [row for table in tables.values() for row in table]
    if summary:
        folder.write_csv("summary.csv", summary)
    if iterations:
        folder.write_csv("iterations.csv", iterations)
    folder.write_json("results.json", {"claim": claim, "iterations": iterations, "summary": summary})
    return am.markdown_summary("reproduce tiam", settings, summary, iterations, [claim])
