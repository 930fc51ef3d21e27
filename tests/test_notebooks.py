"""Every notebook in notebooks/ executes top to bottom (fresh kernel), every figure cell shows its figure, each
notebook matches the script that builds it, and the notebooks' dependency group resolves."""

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: A cell that draws: its value is a Figure from ntkhom.plots.
FIGURE_CALL = re.compile(r"plots\.(\w+_plot|curves_figure)\(")


def _builder(path):
    script = path.with_name(f"build_{path.stem}.py")
    spec = importlib.util.spec_from_file_location(f"build_{path.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_matches_its_build_script(path):
    nbformat = pytest.importorskip("nbformat")
    committed = nbformat.read(path, as_version=4)
    built = _builder(path).build()
    assert [(c.cell_type, c.source) for c in committed.cells] == [(c.cell_type, c.source) for c in built.cells]
    assert not any(c.get("outputs") for c in committed.cells if c.cell_type == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes_and_every_figure_cell_shows_an_image(path, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert not [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    figures = [c for c in code if FIGURE_CALL.search(c.source)]
    assert figures, "a notebook without figures"
    for cell in figures:
        images = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
        assert images, f"no image from the cell:\n{cell.source}"


def test_notebooks_group_resolves():
    """README's command `uv run --group notebooks jupyter lab notebooks/` needs this group to resolve."""
    import tomllib

    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]
    assert any(req.startswith("jupyterlab") for req in groups["notebooks"])
    if shutil.which("uv") is None:
        pytest.skip("uv is not installed")
    done = subprocess.run(["uv", "sync", "--group", "notebooks", "--dry-run"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
