"""The one verdict vocabulary of every ``ntkhom reproduce`` table.

A verdict says what the measurement shows about the claim as stated, nothing more:

* ``confirmed``: the measured quantity meets the claim's criterion (for every seed, or with its spread over
  seeds inside the criterion);
* ``refuted``: it fails the criterion beyond the spread over seeds;
* ``inconclusive``: the spread over seeds straddles the criterion, or too little was measured.

A ``--quick`` run (few seeds, short runs) marks every verdict as indicative.
"""

from __future__ import annotations

__all__ = ["CONFIRMED", "REFUTED", "INCONCLUSIVE", "VERDICTS", "verdict", "from_fraction"]

CONFIRMED = "confirmed"
REFUTED = "refuted"
INCONCLUSIVE = "inconclusive"
VERDICTS = (CONFIRMED, REFUTED, INCONCLUSIVE)
#: Share of paired comparisons (seeds, datasets) that must agree for a confirmed or refuted verdict.
AGREEMENT = 0.8


def verdict(outcome: bool | None, *, indicative: bool = False) -> str:
    """``confirmed`` (True), ``refuted`` (False) or ``inconclusive`` (None), with ``(indicative)`` appended
    for a quick run."""
    word = INCONCLUSIVE if outcome is None else (CONFIRMED if outcome else REFUTED)
    return word + (" (indicative)" if indicative else "")


def from_fraction(wins: int, total: int, *, indicative: bool = False) -> str:
    """Verdict from ``wins`` of ``total`` paired comparisons: confirmed at >= 80 percent, refuted at <= 20
    percent, inconclusive between (and when nothing was compared)."""
    if total <= 0:
        return verdict(None, indicative=indicative)
    share = wins / total
    outcome = True if share >= AGREEMENT else (False if share <= 1 - AGREEMENT else None)
    return verdict(outcome, indicative=indicative)
