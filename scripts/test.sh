#!/usr/bin/env bash
# The project's checks: lint, tests (docstring examples included), docs build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/env.sh dev,examples,docs,checkpoint,tfp,genjax,blackjax,numpyro,nn
export JAX_PLATFORMS=cpu
# The tests' programs are small, so XLA's compilation dominates their time: its backend
# optimizations are turned down (a fifth less time for the suite). Benchmarks do not run here.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_backend_optimization_level=0"
echo "== ruff"
.venv/bin/ruff check progvi tests examples benchmarks docs
# The docs build executes the notebooks, one at a time: it runs beside pytest so that the two
# cores stay busy (its log is printed when it ends; a warning fails it, --strict).
docs_log="$(mktemp)"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$(mktemp -d)" >"$docs_log" 2>&1 &
docs_pid=$!
echo "== pytest (mkdocs build --strict beside it)"
set +e
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist worksteal --doctest-modules progvi tests "$@"
rc=$?
wait "$docs_pid"
docs_rc=$?
set -e
echo "== mkdocs build --strict"
cat "$docs_log"
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
[ "$rc" -eq 0 ] || exit "$rc"
[ "$docs_rc" -eq 0 ] || { echo "mkdocs build failed" >&2; exit "$docs_rc"; }
echo "== all checks passed"
