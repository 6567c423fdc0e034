"""Every Python block in the documentation pages runs."""

import pathlib
import re

import pytest

DOCS = sorted((pathlib.Path(__file__).resolve().parents[1] / "docs").glob("*.md"))
README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("page", [*DOCS, README], ids=lambda p: p.name)
def test_page_examples_run(page):
    code = "\n".join(_blocks(page))
    namespace = {}
    exec(compile(code, str(page), "exec"), namespace)  # noqa: S102
    assert namespace or not code
