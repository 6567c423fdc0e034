"""The VAE gradient benchmark runs end to end at a tiny size and its gradients agree."""

import importlib.util
import pathlib

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "adev_vae_grad.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("adev_vae_grad", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vae_gradient_benchmark_runs_at_a_tiny_size(tmp_path):
    bench = _load_benchmark()
    out = tmp_path / "result.md"
    rows, checks, text = bench.main(
        ["--batch-sizes", "8", "--reps", "2", "--check-batch", "4", "--out", str(out)]
    )

    assert [r.batch_size for r in rows] == [8]
    assert set(rows[0].median_ms) == {"handwritten", "per_datapoint", "batched"}
    assert all(ms > 0 for ms in rows[0].median_ms.values())
    assert [c.name for c in checks] == ["per_datapoint", "batched"]
    assert all(c.passed for c in checks), checks
    written = out.read_text()
    assert written == text
    table_rows = [line for line in written.splitlines() if line.startswith("| 8 |")]
    assert len(table_rows) == 1
    assert "ratio" in written and "jax:" in written
