"""benchmarks/air_epoch.py runs its progvi side at a tiny size without the Pyro environment."""

import importlib.util
import pathlib

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def test_the_air_epoch_benchmark_runs_without_pyro(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("air_epoch", BENCHMARKS / "air_epoch.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "air.md"
    rows, pyro, text = bench.main(["--side", "12", "--max-objects", "1", "--batch-size", "4",
                                   "--steps", "2", "--estimators", "reinforce,mvd",
                                   "--epoch-size", "800",
                                   "--pyro-python", str(tmp_path / "no-such-python"),
                                   "--out", str(out)])
    assert pyro is None and set(rows) == {"reinforce", "mvd"}
    for per_step, compile_s, gflop in rows.values():
        assert 0 < per_step < compile_s + 60 and compile_s > 0
        assert gflop > 0
    assert out.read_text() == text
    assert "| reinforce |" in text and "| not run |" in text and "n/a (no MVD in Pyro)" in text
    assert "an epoch = 200 steps" in text  # 800 images, batch 4
    assert "float32 matmul runs at" in text and "| GFLOP/step | GFLOP/s |" in text
    assert "make_env.sh" in capsys.readouterr().err
