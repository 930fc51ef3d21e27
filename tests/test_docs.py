"""The API reference: every module has a page in the mkdocs nav, ``help(ntkhom)`` lists the modules, and the
strict build passes (skipped when the ``docs`` group is not installed; ``.ci/run`` always builds it)."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import ntkhom

ROOT = Path(__file__).resolve().parent.parent


def _modules():
    """Top-level modules and subpackages of ntkhom (private ones excluded)."""
    return sorted(m.name for m in pkgutil.iter_modules(ntkhom.__path__) if not m.name.startswith("_"))


def test_every_module_has_an_api_page_and_is_listed_by_help():
    nav = (ROOT / "mkdocs.yml").read_text()
    pages = "".join(p.read_text() for p in (ROOT / "docs" / "api").glob("*.md"))
    for name in _modules():
        assert f"::: ntkhom.{name}" in pages, f"no API page for ntkhom.{name}"
        assert f"ntkhom.{name}" in nav, f"ntkhom.{name} is not in the mkdocs nav"
        assert f"ntkhom.{name}" in ntkhom.__doc__, f"help(ntkhom) does not list ntkhom.{name}"


def test_strict_docs_build(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1",
                                                                        "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "api" / "kernels" / "index.html").exists()
