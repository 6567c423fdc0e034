"""mkdocs hook: a code span naming a progvi object links to its entry in the API reference.

Docstrings and pages name objects as the user writes them, `` `pv.iwae` `` or
`` `progvi.unnormalized` ``. This hook resolves each such name by importing progvi (``pv.a.b``
is ``progvi.a.b`` attribute by attribute, as at run time; ``progvi.a.b`` is a module where one
exists) and turns the span into an autorefs cross-reference to the object's documented path
(``progvi.inference.objectives.iwae.iwae``), which mkdocs-autorefs resolves once every page is
rendered. A function, class or strategy that has no API entry is a build warning (so
``mkdocs build --strict`` fails), as is a name progvi does not define; a module links to its
entry when it has one.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
import types

log = logging.getLogger("mkdocs.hooks.progvi_crossrefs")

_SPAN = re.compile(r"<code>((?:pv|progvi)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)</code>")


def _module(name: str) -> types.ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _lookup(dotted: str):
    """The object a dotted name means, or None."""
    import progvi

    parts = dotted.split(".")
    if parts[0] == "progvi" and (module := _module(dotted)) is not None:
        return module
    obj = progvi
    for part in parts[1:]:
        if not hasattr(obj, part):
            return None
        obj = getattr(obj, part)
    return obj


def documented_path(obj) -> str | None:
    """Where the API reference documents `obj`: its module and name where it is defined."""
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    qualname = getattr(obj, "__qualname__", None)
    if qualname is not None and getattr(obj, "__module__", None):
        return f"{obj.__module__}.{qualname}"
    # An instance (a strategy such as `pv.reparam`): the module-level name bound to it, looked up
    # in its class's module first, then in every progvi module that is not a package.
    modules = [sys.modules.get(type(obj).__module__)] + sorted(
        (m for n, m in list(sys.modules.items()) if n.startswith("progvi.")),
        key=lambda m: m.__name__,
    )
    for module in modules:
        if module is None or hasattr(module, "__path__"):
            continue
        for name, value in vars(module).items():
            if value is obj and not name.startswith("_"):
                return f"{module.__name__}.{name}"
    return None


def on_page_content(html: str, page, **kwargs) -> str:
    def link(match: re.Match) -> str:
        dotted = match.group(1)
        obj = _lookup(dotted)
        if obj is None:
            log.warning(
                "%s names `%s`, which progvi does not define: fix the name or define it.",
                page.file.src_path, dotted,
            )
            return match.group(0)
        path = documented_path(obj)
        if path is None:
            log.warning(
                "%s names `%s`, whose definition cannot be found in progvi's modules.",
                page.file.src_path, dotted,
            )
            return match.group(0)
        # Modules mostly have no entry of their own: link them only where they do.
        optional = " optional" if isinstance(obj, types.ModuleType) else ""
        return f'<autoref identifier="{path}"{optional}>{match.group(0)}</autoref>'

    return _SPAN.sub(link, html)
