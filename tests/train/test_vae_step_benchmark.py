"""benchmarks/vae_step.py runs end to end at a tiny size, and its three steps agree."""

import importlib.util
import pathlib

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "vae_step.py"


def test_the_vae_step_benchmark_runs_and_writes_its_table(tmp_path):
    spec = importlib.util.spec_from_file_location("vae_step_benchmark", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "table.md"
    # main first checks that progvi, JAX and NumPyro compute the same mean ELBO (within 2%).
    rows, text = bench.main(["--batch-sizes", "8", "--seconds", "0.01", "--compile-reps", "1",
                             "--out", str(out)])
    assert [row["batch_size"] for row in rows] == [8]
    assert set(rows[0]["step_s"]) == {"progvi", "JAX", "NumPyro"}
    assert all(t > 0 for t in rows[0]["step_s"].values())
    assert all(t > 0 for t in rows[0]["compile_s"].values())
    assert rows[0]["calls"] >= 15
    assert out.read_text() == text
    assert sum(line.startswith("| 8 |") for line in text.splitlines()) == 1
