import pathlib
import tomllib

import progvi


def test_version_matches_pyproject_and_version_module():
    root = pathlib.Path(__file__).resolve().parents[1]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert pyproject["project"]["dynamic"] == ["version"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"]["attr"] == (
        "progvi._version.__version__"
    )
    assert progvi.__version__.count(".") == 2
    assert all(part.isdigit() for part in progvi.__version__.split("."))


def test_public_names_are_reexported_explicitly():
    for name in ["expectation", "sample", "with_strategies", "reparam", "reinforce", "enum", "mvd"]:
        assert hasattr(progvi, name), name
