"""The docs site builds without a warning, and its API reference renders every public name.

The site is built once, with mkdocs, into a temporary folder; the tests read its HTML. Public
names are the explicit re-exports of `progvi` (``from .x import y as y``) and, for each
subpackage it re-exports (`pv.train`, `pv.unnormalized`, `pv.interop`, ...), that subpackage's
``__all__``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import os
import pathlib
import re
import subprocess
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _hooks():
    spec = importlib.util.spec_from_file_location(
        "progvi_docs_crossrefs", ROOT / "docs" / "hooks" / "crossrefs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _explicit_reexports(module: types.ModuleType) -> list[str]:
    """The names a package re-exports as ``from .x import y as y`` or ``from . import y as y``."""
    tree = ast.parse(pathlib.Path(module.__file__).read_text())
    return [
        alias.asname
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname is not None and alias.asname == alias.name
    ]


def public_names(package: str = "progvi") -> dict[str, object]:
    """Every public name under `package`, dotted (``progvi.fit``), with its object."""
    module = importlib.import_module(package)
    names = getattr(module, "__all__", None) or _explicit_reexports(module)
    found = {}
    for name in names:
        if name.startswith("_"):
            continue
        obj = getattr(module, name)
        if isinstance(obj, types.ModuleType) and obj.__name__.startswith(package + "."):
            found.update(public_names(obj.__name__))
        else:
            found[f"{package}.{name}"] = obj
    return found


def _has_parameters(obj) -> bool:
    """Whether a user calls `obj` with arguments (exceptions excepted: progvi raises them)."""
    if isinstance(obj, type) and issubclass(obj, BaseException) or not callable(obj):
        return False
    if not isinstance(obj, types.FunctionType | type):
        return True  # an instance, such as `pv.reparam`: its entry shows its definition
    try:
        return bool(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return False


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Builds the site; returns the build's log and the HTML of every page, by path."""
    out = tmp_path_factory.mktemp("site")
    # The tutorials' pages are built without running them: their cells run in the strict
    # build of scripts/test.sh, where a cell that raises fails it (tests/test_tutorials.py).
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", JAX_PLATFORMS="cpu",
               PROGVI_DOCS_EXECUTE="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    try:
        import mkdocs  # noqa: F401
    except ImportError as error:
        raise AssertionError(
            'the docs test builds the site with mkdocs: pip install "progvi[docs]"'
        ) from error
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    log = build.stdout + build.stderr
    assert build.returncode == 0, log
    pages = {p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*.html")}
    return log, pages


def test_build_has_no_warnings(site):
    log, _ = site
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    assert not warnings, "\n".join(warnings)


def test_every_public_name_has_a_heading_and_a_signature(site):
    _, pages = site
    api = pages["api/index.html"]
    documented_path = _hooks().documented_path
    names = public_names()
    assert {"progvi.fit", "progvi.expectation", "progvi.train.latest_step",
            "progvi.interop.numpyro", "progvi.unnormalized.nll", "progvi.reparam"} <= set(names)
    missing, unsigned = [], []
    for name, obj in sorted(names.items()):
        path = documented_path(obj)
        heading = re.search(
            rf'<h(\d) id="{re.escape(str(path))}" class="doc doc-heading">', api
        )
        if heading is None:
            missing.append(f"{name} (add `::: {path}` to docs/api.md)")
            continue
        entry = api[heading.end():]
        entry = entry[: entry.find('class="doc doc-heading"')]
        if isinstance(obj, type) and hasattr(obj, "_fields"):  # a NamedTuple: its fields
            unsigned += [f"{name}.{f}" for f in obj._fields if f'id="{path}.{f}"' not in api]
        elif _has_parameters(obj) and "doc-signature" not in entry:
            unsigned.append(name)
    assert not missing, "public names without an API entry: " + ", ".join(missing)
    assert not unsigned, "entries without a signature (or NamedTuple field): " + ", ".join(unsigned)


def test_math_is_rendered_not_raw(site):
    _, pages = site
    for page, text in pages.items():
        raw = re.search(r"\.\. math::|:math:`", text)
        assert raw is None, f"{page}: raw reST math {raw.group(0)!r}; write $...$ or $$...$$"
    api = pages["api/index.html"]
    assert api.count('class="arithmatex"') > 20
    assert r"\mathcal{L}_K" in api  # pv.iwae's bound, as TeX for MathJax
    assert "mathjax" in api.lower()


def test_code_spans_naming_progvi_objects_are_links(site):
    _, pages = site
    names = {n.removeprefix("progvi.") for n, o in public_names().items()
             if not isinstance(o, types.ModuleType)}
    unlinked = []
    for page, text in pages.items():
        for match in re.finditer(r"(<a [^>]*>)?<code>pv\.([\w.]+)</code>", text):
            if match.group(2) in names and match.group(1) is None:
                unlinked.append(f"{page}: pv.{match.group(2)}")
    assert not unlinked, "code spans that do not link to their entry: " + ", ".join(unlinked)
    api = pages["api/index.html"]
    # The docstring of pv.iwae names pv.vimco: a link to vimco's heading on the same page.
    assert 'href="#progvi.inference.objectives.vimco.vimco"' in api
