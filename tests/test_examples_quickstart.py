"""The quick start fits both guides near the exact posterior and writes the PNG it promises."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_quickstart(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("quickstart", ROOT / "examples" / "quickstart.py")
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    out = quickstart.main(["--steps", "300", "--out", str(tmp_path)])
    for name, (phi, values) in out["fits"].items():
        assert abs(float(phi["m"]) - 1.5) < 0.15, name  # the exact posterior is N(1.5, 1/2)
        assert len(values) == 300
    assert out["png"] == tmp_path / "quickstart.png"
    assert out["png"].stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "reparam" in printed and "loo-8" in printed and "quickstart.png" in printed
