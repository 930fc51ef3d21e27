"""Run folders: every number as JSON and CSV, plots as PNG and PDF, a markdown summary, progress on stderr.

A run folder is written as work finishes (rows and units of work are appended and flushed one at a time), so
an interrupted run keeps everything it completed, and ``--resume`` computes only the rest. ``run.json``
records the status, the command line, the settings and the environment (versions, git commit, devices,
dtype) so a result can be traced to what produced it. :func:`execute` runs a command's work and always
finalizes the folder (plots and ``summary.md``), also after an interrupt.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import importlib.metadata
import json
import math
import platform
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RunFolder", "RunFolderError", "STATUSES", "check_writable", "environment", "execute", "git_commit",
           "markdown_table", "partial_note", "settings_list", "cell", "progress", "read_csv", "to_jsonable"]


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
    """Versions, git commit, devices and precision of this process."""
    import jax

    import ntkhom
    from ntkhom.distributed import device_summary

    versions = {"python": platform.python_version(), "ntkhom": ntkhom.__version__}
    # Installed versions from package metadata: neural-tangents is imported lazily, often after this runs.
    for name in ("jax", "jaxlib", "neural-tangents", "optax", "numpy", "flax"):
        try:
            versions[name.replace("-", "_")] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name.replace("-", "_")] = "not installed"
    devices = jax.devices()
    return {
        "versions": versions,
        "git_commit": git_commit(),
        "devices": [f"{d.platform}:{getattr(d, 'device_kind', '')}" for d in devices],
        "device": f"{devices[0].platform}:{getattr(devices[0], 'device_kind', '')}",
        "processes_and_devices": device_summary(),
        "x64": bool(jax.config.jax_enable_x64),
        "machine": platform.platform(),
        "time": _now(),
    }


def cell(value: Any) -> str:
    """A value as a person reads it in a table: floats to 4 significant digits, no Python reprs (None is
    an empty cell, booleans are yes/no, lists are comma-separated)."""
    if value is None:
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        value = float(value)
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k} {cell(v)}" for k, v in value.items())
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """A GitHub markdown table of ``rows`` (cells as :func:`cell` writes them)."""
    if not rows:
        return "(no rows)\n"
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def settings_list(settings: dict[str, Any]) -> str:
    """Settings as a markdown bullet list (``- name: value``)."""
    return "\n".join(f"- {k.replace('_', ' ')}: {cell(v)}" for k, v in settings.items()) + "\n"


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (not empty, a file, not writable, other settings)."""


#: Statuses recorded in ``run.json``.
STATUSES = ("running", "finished", "interrupted", "failed")
#: Values of ``mode`` of :class:`RunFolder`.
MODES = ("new", "overwrite", "resume")
_UNITS = "units.jsonl"


def _plain(value: Any) -> Any:
    """Like :func:`to_jsonable`, but NaN and inf stay floats (``units.jsonl`` round-trips them)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        array = np.asarray(value)
        return _plain(array.item() if array.ndim == 0 else array.tolist())
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value


def git_commit(directory: str | Path | None = None) -> str | None:
    """The commit of the git checkout holding ``directory`` (default: the ntkhom package), with ``+dirty``
    when tracked files were changed; None outside a checkout or without git."""
    import subprocess

    directory = Path(directory) if directory is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(directory), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def check_writable(path: str | Path, argument: str = "--out") -> Path:
    """``path`` as a folder that can be created or written to, or :class:`RunFolderError` naming ``argument``."""
    import os

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{argument} {path} is a file, not a folder")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise RunFolderError(f"{argument} {path}: {parent} is a file, not a folder")
    # os.access says yes to root everywhere (also in /proc and /sys): RunFolder still reports a failed mkdir
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RunFolderError(f"{argument} {path}: {parent} is not writable")
    return path


def _os_reason(error: OSError) -> str:
    """``error`` as "reason (file)", without the errno prefix Python puts in front."""
    reason = error.strerror or str(error)
    return f"{reason} ({error.filename})" if error.filename else reason


class RunFolder:
    """A folder of results, created on construction and written to as results arrive.

    ``mode`` says what to do with a folder that is not empty: ``"new"`` refuses it, ``"overwrite"`` clears
    it, ``"resume"`` keeps the finished units of work (:meth:`unit`) of a run with the same ``settings`` and
    refuses one whose settings differ. ``run.json`` records the settings, the command line, the ntkhom
    version, the git commit, the devices and a ``status`` (:data:`STATUSES`) kept current by
    :meth:`set_status`.

    Several processes (``jax.distributed``) run the same program; only process 0 writes (``writer``). The
    others compute every unit as it does and write nothing: they do not check or clear the folder, and with
    ``"resume"`` they read the units process 0 kept (the folder must then be on a shared file system, or
    every process holds a copy), so that all skip the same units and their collectives stay matched.
    """

    def __init__(self, path: str | Path, settings: dict[str, Any] | None = None, *, mode: str = "new",
                 command: str | None = None, writer: bool | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.writer = _primary_process() if writer is None else bool(writer)
        self.path = Path(path) if not self.writer else check_writable(path)
        self.settings = to_jsonable(settings or {})
        self._units: dict[str, Any] = {}
        self.resumed_units: list[str] = []
        self.computed_units: list[str] = []
        if not self.writer:
            previous = self._existing() if mode == "resume" else None
            if previous:
                self._resume(previous)
            self.record = {"status": "running", "settings": self.settings}
            return
        try:  # what check_writable cannot foresee (a path in /proc, a read-only mount, root's os.access)
            previous = self._existing()
            if previous is not None and mode == "new":
                raise RunFolderError(f"--out {self.path} is not empty; pass --overwrite to clear it or --resume "
                                     "to continue the run it holds")
            if previous is not None and mode == "overwrite":
                self._clear()
            if previous is not None and mode == "resume":
                self._resume(previous)
            self.path.mkdir(parents=True, exist_ok=True)
            self.record = {"status": "running", "error": None,
                           "command": command or " ".join(["ntkhom", *sys.argv[1:]]),
                           "settings": self.settings, "environment": environment(),
                           "started": _now(), "finished": None, "resumed_units": 0, "computed_units": 0}
            if mode == "resume" and previous is not None:
                self.record["resumed_units"] = len(self._units)
            self.write_json("run.json", self.record)
        except OSError as error:
            raise RunFolderError(f"--out {self.path}: cannot create or write the run folder: "
                                 f"{_os_reason(error)}") from error

    # -- modes ------------------------------------------------------------------------------------------
    def _existing(self) -> dict | None:
        """The previous run.json (or {} for a folder that holds other files), None if empty or absent."""
        if not self.path.exists() or not any(self.path.iterdir()):
            return None
        try:
            return json.loads(self.file("run.json").read_text())
        except (OSError, ValueError):
            return {}

    def _clear(self) -> None:
        import shutil

        for child in self.path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    def _resume(self, previous: dict) -> None:
        if "settings" not in previous:
            raise RunFolderError(f"--resume: {self.path} holds no run.json of an ntkhom run")
        old = previous["settings"]
        changed = sorted(k for k in set(old) | set(self.settings) if old.get(k) != self.settings.get(k))
        if changed:
            parts = [f"{k} was {_show(old.get(k))}, now {_show(self.settings.get(k))}" for k in changed]
            raise RunFolderError(f"--resume: the settings differ from the run in {self.path} ("
                                 + "; ".join(parts) + "); use another --out or --overwrite")
        units = self.file(_UNITS)
        if units.exists():
            for line in units.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:  # a line cut by a crash: that unit is computed again
                    continue
                self._units[entry["key"]] = entry["value"]
        self.resumed_units = list(self._units)

    # -- status -----------------------------------------------------------------------------------------
    def set_status(self, status: str, error: str | None = None) -> None:
        """Record ``status`` (one of :data:`STATUSES`) and, for ``"failed"``, the error, in run.json."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        self.record.update(status=status, error=error, computed_units=len(self.computed_units))
        if status != "running":
            self.record["finished"] = _now()
        if self.writer:
            self.write_json("run.json", self.record)

    @property
    def status(self) -> str:
        return self.record["status"]

    # -- units of work ----------------------------------------------------------------------------------
    def unit(self, key: str, compute: Callable[[], Any]) -> Any:
        """The value of one unit of work: stored by an earlier run (``--resume``) or computed now.

        A computed value is appended to ``units.jsonl`` as soon as it is known, so an interrupted run keeps
        it. Either way the value comes back as stored (JSON: lists, floats, strings, dicts), so a resumed
        run and a fresh one see the same types.
        """
        if key in self._units:
            return self._units[key]
        value = _plain(compute())
        line = json.dumps({"key": key, "value": value})
        if self.writer:
            with self.file(_UNITS).open("a") as handle:
                handle.write(line + "\n")
                handle.flush()
        self._units[key] = json.loads(line)["value"]
        self.computed_units.append(key)
        return self._units[key]

    def units(self) -> dict[str, Any]:
        """Every finished unit, key -> value, in the order they finished."""
        return dict(self._units)

    def has_unit(self, key: str) -> bool:
        return key in self._units

    # -- files ------------------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, obj: Any) -> Path:
        target = self.file(name)
        if not self.writer:
            return target
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps(to_jsonable(obj), indent=2) + "\n")
        tmp.replace(target)  # atomic: an interrupt never leaves half a JSON file
        return target

    def write_csv(self, name: str, rows: list[dict[str, Any]]) -> Path:
        target = self.file(name)
        if not self.writer:
            return target
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
        if not self.writer:
            return target
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
        if not self.writer:
            return target
        target.write_text(text)
        return target

    def save_figure(self, name: str, figure) -> Path:
        """The figure as ``name`` (PNG) and beside it as vector graphics (same stem, ``.pdf``)."""
        target = self.file(name)
        if self.writer:
            figure.savefig(target, dpi=120, bbox_inches="tight")
            figure.savefig(target.with_suffix(".pdf"), bbox_inches="tight")
        if hasattr(figure, "number"):  # made by pyplot: free it
            import matplotlib.pyplot as plt

            plt.close(figure)
        return target


def _primary_process() -> bool:
    """False only in a process other than 0 of a ``jax.distributed`` program (JAX is not imported for this)."""
    jax = sys.modules.get("jax")
    if jax is None or not jax.distributed.is_initialized():
        return True
    return jax.process_index() == 0


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return "absent" if value is None else str(value)


def partial_note(status: str, error: str | None = None) -> str:
    """The sentence a summary of an unfinished run starts with."""
    if status == "interrupted":
        return ("**Partial results: the run was interrupted.** Only the work that finished is summarized below; "
                "`--resume` with the same settings computes the rest.")
    if status == "failed":
        return f"**Partial results: the run failed** ({error}). Only the work that finished is summarized below."
    return ""


def execute(folder: RunFolder, compute: Callable[[], None], finalize: Callable[[], str]) -> str:
    """Run ``compute`` (which stores its work in ``folder`` as it finishes), then ``finalize`` (plots and the
    markdown summary it returns, written to ``summary.md``), also after KeyboardInterrupt or an error.

    The summary of an unfinished run starts with :func:`partial_note`. Returns the final status; an error of
    ``compute`` is raised again after the folder is finalized.
    """
    status, error, raised = "finished", None, None
    try:
        compute()
    except KeyboardInterrupt:
        status = "interrupted"
    except Exception as exc:  # recorded, finalized, then raised again
        status, error, raised = "failed", f"{type(exc).__name__}: {exc}", exc
    folder.record["status"] = status  # finalize may read it
    try:
        text = finalize()
    except Exception as exc:  # noqa: BLE001 - a partial run may lack what a figure needs
        if status == "finished":
            status, error, raised = "failed", f"{type(exc).__name__}: {exc}", exc
        text = f"# {folder.path.name}\n\nNo summary could be written: {type(exc).__name__}: {exc}\n"
    note = partial_note(status, error)
    if note:
        lines = text.split("\n", 1)
        text = lines[0] + "\n\n" + note + "\n" + (lines[1] if len(lines) > 1 else "")
    folder.write_text("summary.md", text)
    folder.set_status(status, error)
    if raised is not None:
        raise raised
    return status


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a run folder's CSV file (as written by :meth:`RunFolder.write_csv` / ``append_row``), as
    dicts of strings keyed by the header."""
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))


def progress(iterable: Iterable, *, total: int | None = None, desc: str = "", enabled: bool = True,
             initial: int = 0):
    """A tqdm progress bar on stderr (silent when ``enabled`` is False); ``initial``: work already done (a
    resumed run), counted as done but not in the rate."""
    from tqdm.std import tqdm

    return tqdm(iterable, total=total, desc=desc, disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                initial=initial)


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
