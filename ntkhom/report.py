"""Run folders: every number as JSON and CSV, plots as PNG, a markdown summary, and progress on stderr.

A run folder is written as work finishes (rows are appended and flushed one at a time), so an interrupted
sweep keeps every row it completed. ``run.json`` records the command's settings and the environment
(versions, device, dtype) so a result can be traced to what produced it.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import json
import math
import platform
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RunFolder", "environment", "progress", "to_jsonable", "markdown_table", "read_csv"]


def to_jsonable(value: Any) -> Any:
    """Numbers, arrays, dataclasses and paths as plain JSON values (NaN and inf become strings)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        array = np.asarray(value)
        return to_jsonable(array.item() if array.ndim == 0 else array.tolist())
    if isinstance(value, float | np.floating):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value


def environment() -> dict[str, Any]:
    """Versions, device and precision of this process."""
    import jax

    import ntkhom

    versions = {"python": platform.python_version(), "ntkhom": ntkhom.__version__}
    for name in ("jax", "jaxlib", "neural_tangents", "optax", "numpy"):
        module = sys.modules.get(name)
        versions[name] = getattr(module, "__version__", "not imported") if module else "not imported"
    device = jax.devices()[0]
    return {
        "versions": versions,
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "x64": bool(jax.config.jax_enable_x64),
        "machine": platform.platform(),
        "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A GitHub markdown table of ``rows`` (floats to 4 significant digits)."""
    if not rows:
        return "(no rows)\n"
    columns = columns or list(rows[0])

    def cell(v):
        if isinstance(v, float | np.floating):
            return f"{float(v):.4g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


class RunFolder:
    """A folder of results; created on construction, written to as results arrive."""

    def __init__(self, path: str | Path, settings: dict[str, Any] | None = None):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_json("run.json", {"settings": settings or {}, "environment": environment()})

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj: Any) -> Path:
        target = self.file(name)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps(to_jsonable(obj), indent=2) + "\n")
        tmp.replace(target)  # atomic: an interrupt never leaves half a JSON file
        return target

    def write_csv(self, name: str, rows: list[dict[str, Any]]) -> Path:
        target = self.file(name)
        columns = list(dict.fromkeys(k for row in rows for k in row))
        with target.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow(to_jsonable(row))
        return target

    def append_row(self, name: str, row: dict[str, Any]) -> Path:
        """Append one CSV row (header on first write) and flush, so finished work survives an interrupt."""
        target = self.file(name)
        new = not target.exists()
        with target.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(to_jsonable(row))
            handle.flush()
        return target

    def write_text(self, name: str, text: str) -> Path:
        target = self.file(name)
        target.write_text(text)
        return target

    def save_figure(self, name: str, figure) -> Path:
        import matplotlib.pyplot as plt

        target = self.file(name)
        figure.savefig(target, dpi=120, bbox_inches="tight")
        plt.close(figure)
        return target


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a run folder's CSV file (as written by :meth:`RunFolder.write_csv` / ``append_row``), as
    dicts of strings keyed by the header."""
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


def progress(iterable: Iterable, *, total: int | None = None, desc: str = "", enabled: bool = True):
    """A tqdm progress bar on stderr (silent when ``enabled`` is False)."""
    from tqdm.std import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def training_progress(enabled: bool = True):
    """A callback for :func:`ntkhom.solvers.driver.run` that draws a tqdm bar from its ``Progress`` reports."""
    bar = None

    def callback(report) -> None:
        nonlocal bar
        if bar is None:
            bar = progress(None, total=report.total, desc=report.desc, enabled=enabled)
        bar.update(report.done - bar.n)
        if report.loss is not None:
            bar.set_postfix(loss=f"{report.loss:.3e}", refresh=False)
        if report.finished:
            bar.close()
            bar = None

    return callback
