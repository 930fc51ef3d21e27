"""Kernel-spectrum report: lambda_min of the NTK along the homotopy path s in [0, 2] on points of the unit sphere,
infinite width against widths 256 to 4096 (3 seeds): lambda_min(s) / lambda_min(1) against s^2 (HRTA) and the
finite vs infinite width gap. A preset of ``ntkhom spectrum`` sized to finish in about a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse

from ntkhom.experiments import spectrum

DESCRIPTION = __doc__

#: The report's data and sweep (every option of ``ntkhom spectrum`` can still be changed).
REPORT_DEFAULTS = {
    "dataset": "sphere", "n": 256, "d": 8, "normalization": "sphere", "widths": [256, 512, 1024, 2048, 4096],
    "seeds": 3, "s_min": 0.0, "s_max": 2.0, "s_points": 33, "depth": 1, "density_s": [0.25, 1.0, 2.0],
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    spectrum.add_arguments(parser, REPORT_DEFAULTS)


settings = spectrum.settings
compute = spectrum.compute


def finalize(settings, folder) -> str:
    return spectrum.finalize(settings, folder, title="ntkhom kernel-spectrum report")
