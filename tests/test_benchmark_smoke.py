"""The benchmarks run end to end at a tiny size and their checks pass."""

import importlib.util
import pathlib
import sys

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def _load_benchmark(name="adev_vae_grad"):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
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


def test_unnormalized_step_benchmark_runs_at_a_tiny_size(tmp_path):
    bench = _load_benchmark("unnormalized_step")
    out = tmp_path / "result.md"
    rows, checks, text = bench.main(
        ["--quick", "--batch-sizes", "16", "--check-batch", "8", "--seconds", "0.05",
         "--out", str(out)]
    )

    assert [r.batch_size for r in rows] == [16]
    names = {"handwritten", "per_run", "one_site", "nll"}
    assert set(rows[0].step_ms) == set(rows[0].compile_s) == names
    assert all(ms > 0 for ms in rows[0].step_ms.values())
    assert all(s > 0 for s in rows[0].compile_s.values())
    assert [c.name for c in checks] == ["per_run", "one_site", "nll"]
    assert all(c.passed for c in checks), checks
    # With another key's noise the steps differ: the check discriminates.
    assert all(c.other_noise_error > 0.1 for c in checks), checks
    written = out.read_text()
    assert written == text
    table_rows = [line for line in written.splitlines() if line.startswith("| 16 |")]
    assert len(table_rows) == 1
    assert "per_run / JAX" in written and "compile" in written


def test_compile_time_benchmark_runs_at_a_tiny_size(tmp_path):
    bench = _load_benchmark("compile_time")
    out = tmp_path / "result.md"
    site_rows, enum_rows, text = bench.main(
        ["--sites", "2", "--depths", "5", "--reps", "1", "--out", str(out)]
    )

    assert [n for n, _ in site_rows] == [2]
    assert set(site_rows[0][1]) == {"progvi", "JAX"}
    assert all(t.total_s > 0 and t.hlo_ops > 0 for t in site_rows[0][1].values())
    assert [d for d, _ in enum_rows] == [5]  # past the switch: 2^5 copies
    assert all(t is not None and t.total_s > 0 for _, row in enum_rows for t in row.values())
    written = out.read_text()
    assert written == text
    assert len([line for line in written.splitlines() if line.startswith("| 2 |")]) == 1
    assert "| 5 |" in written and "| NO |" not in written and "progvi / JAX" in written


def test_chain_enum_benchmark_runs_at_a_tiny_size(tmp_path):
    bench = _load_benchmark("chain_enum")
    out = tmp_path / "result.md"
    rows, passed, text = bench.main(
        ["--lengths", "10", "--exponential-lengths", "3", "--markov-lengths", "3", "--reps", "1",
         "--note", "Measured here:", "--out", str(out)]
    )

    assert list(rows) == [3, 10]
    assert set(rows[3]) == {"enum_chain", "scan", "by_hand", "exponential", "numpyro_scan",
                            "numpyro_markov"}
    assert set(rows[10]) == {"enum_chain", "scan", "by_hand", "numpyro_scan"}
    assert all(t.compile_s > 0 and t.run_ms > 0 for row in rows.values() for t in row.values())
    assert passed and all(t.error < 1e-4 for row in rows.values() for t in row.values())
    written = out.read_text()
    assert written == text
    assert "| 10 |" in written and "Measured here:" in written


def test_sbn_gradient_benchmark_runs_at_a_tiny_size(tmp_path):
    bench = _load_benchmark("sbn_grad")
    out = tmp_path / "result.md"
    rows, checks, stds, text = bench.main(
        ["--quick", "--batch-sizes", "8", "--synthetic", "--estimates", "5", "--reps", "2",
         "--budget", "0.3",
         "--baseline-steps", "4", "--check-batch", "8", "--particles", "3", "--out", str(out)]
    )

    assert [r.batch_size for r in rows] == [8]
    estimators = ["reinforce", "moving_average", "learned", "vimco", "mvd"]
    names = {f"{n}/{impl}" for n in estimators for impl in ("progvi", "jax")}
    assert set(rows[0].median_ms) == names | {"reinforce/numpyro"}
    assert all(ms > 0 for ms in rows[0].median_ms.values())
    assert [c.name for c in checks] == [*estimators, "numpyro (reinforce)"]
    assert all(c.passed for c in checks), checks
    # With another key's draws the gradients differ: the check discriminates.
    assert all(c.other_draws_error > 0.1 for c in checks), checks
    assert set(stds) == {*estimators, "numpyro (reinforce)"}
    assert all(s > 0 for s in stds.values())
    written = out.read_text()
    assert written == text
    # Batch 8 has a row in the timing table and one in the first-call table.
    assert len([line for line in written.splitlines() if line.startswith("| 8 |")]) == 2
    assert "variance x ms" in written and "jax:" in written


def test_numpyro_svi_benchmark_runs_at_a_tiny_size_and_agrees_with_svi(tmp_path):
    bench = _load_benchmark("numpyro_svi")
    out = tmp_path / "result.md"
    rows, text = bench.main(["--points", "20", "--seconds", "0.05", "--out", str(out)])

    assert set(rows) == {"eight_schools", "mixture_model_enum", "mixture_guide_enum"}
    assert abs(rows["eight_schools"]["loss"]) < 4.0  # mean ELBOs, in standard errors
    for name in ("mixture_model_enum", "mixture_guide_enum"):
        assert abs(rows[name]["loss"]) < 1e-5 and rows[name]["grad"] < 1e-3, rows[name]
    assert all(t > 0 for row in rows.values() for t in row["step"].values())
    assert out.read_text() == text and text.count("\n| ") == 4  # the header and 3 rows
