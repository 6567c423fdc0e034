"""The tutorials in docs/tutorials/ (and the notebook pages in docs/) are jupytext notebooks
with a title, each in the site's nav.

Cheap checks only: the notebooks are executed by the docs build (``mkdocs build --strict`` in
scripts/test.sh), where a cell that raises fails the build; here nothing is run.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.py"))
NOTEBOOKS = sorted(DOCS.glob("*.py")) + TUTORIALS  # docs/hooks/ holds mkdocs hooks, not pages

try:
    import jupytext
    from mkdocs.utils import yaml_load
except ImportError as error:  # pragma: no cover
    raise AssertionError(
        'the tutorial checks read notebooks with jupytext and mkdocs.yml with mkdocs: '
        'pip install "progvi[docs]"'
    ) from error


def _config() -> dict:
    with open(ROOT / "mkdocs.yml", encoding="utf-8") as file:
        return yaml_load(file)


def _nav_paths(entries) -> list[str]:
    """Every page path in a nav (a list of pages, of {title: page} and {title: [section]})."""
    found = []
    for entry in entries:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            found += _nav_paths(value) if isinstance(value, list) else [value]
    return found


def _jupyter_plugin() -> dict:
    for plugin in _config()["plugins"]:
        if isinstance(plugin, dict) and "mkdocs-jupyter" in plugin:
            return plugin["mkdocs-jupyter"]
    raise AssertionError("mkdocs.yml has no mkdocs-jupyter plugin: the tutorials would not run")


def test_there_are_tutorials():
    assert len(TUTORIALS) >= 8, [p.name for p in TUTORIALS]


def _page(path: pathlib.Path) -> str:
    return path.relative_to(DOCS).as_posix()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_page)
def test_notebook_has_a_kernel_a_title_and_prose(path):
    notebook = jupytext.read(path)
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3", (
        f"{path.name}: its jupytext header must name the python3 kernel")
    cells = notebook.cells
    assert cells and cells[0].cell_type == "markdown", f"{path.name}: start with a markdown cell"
    title = cells[0].source.splitlines()[0]
    assert title.startswith("# ") and len(title) > 3, (
        f"{path.name}: its first cell must open with a '# Title' line, not {title!r}")
    code = [cell for cell in cells if cell.cell_type == "code"]
    markdown = [cell for cell in cells if cell.cell_type == "markdown"]
    assert len(code) >= 2 and len(markdown) >= 3, f"{path.name}: prose between code cells"
    for cell in code:
        ast.parse(cell.source, filename=str(path))  # a syntax error names the file and line


def test_every_notebook_is_in_the_nav_and_every_nav_entry_exists():
    nav = _nav_paths(_config()["nav"])
    listed = {p for p in nav if p.endswith(".py")}
    present = {_page(p) for p in NOTEBOOKS}
    assert present - listed == set(), f"notebooks missing from mkdocs.yml's nav: {present - listed}"
    assert listed - present == set(), f"nav entries without a file: {listed - present}"
    missing = [p for p in nav if not (DOCS / p).is_file()]
    assert not missing, f"nav entries without a file: {missing}"


def test_notebooks_are_executed_and_errors_fail_the_build():
    plugin = _jupyter_plugin()
    assert plugin.get("allow_errors") is False
    assert plugin.get("kernel_name") == "python3"
    assert plugin.get("cache") is False  # outputs of the progvi being built, never older ones
    patterns = plugin["include"]
    for path in NOTEBOOKS:
        # mkdocs-jupyter matches its patterns against the end of the file's path.
        tail = path.relative_to(ROOT).as_posix()
        assert any(pathlib.PurePath(tail).match(p) for p in patterns), _page(path)
    # The default of `execute` (PROGVI_DOCS_EXECUTE unset, as in CI's strict build) is to run.
    text = (ROOT / "mkdocs.yml").read_text()
    assert "execute: !ENV [PROGVI_DOCS_EXECUTE, true]" in text
