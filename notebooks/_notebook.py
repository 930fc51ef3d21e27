"""What both notebook builders share: cells to a notebook with fixed ids, and writing it beside the script."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_notebook

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def notebook(cells):
    """The notebook (cells without outputs; fixed cell ids, so rebuilding changes nothing)."""
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i:02d}"
    return new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC})


def write(cells, name: str) -> None:
    """Write ``notebooks/<name>`` from ``cells``."""
    target = Path(__file__).resolve().parent / name
    nbformat.write(notebook(cells), target)
    print(f"wrote {target}")
