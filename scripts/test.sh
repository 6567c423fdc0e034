#!/usr/bin/env bash
# The project's checks: lint, tests (docstring examples included), docs build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/env.sh dev,examples,docs,checkpoint,tfp,genjax,blackjax,numpyro,nn
export JAX_PLATFORMS=cpu
echo "== ruff"
.venv/bin/ruff check progvi tests examples benchmarks docs
echo "== pytest"
set +e
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist worksteal --doctest-modules progvi tests "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi
[ "$rc" -eq 0 ] || exit "$rc"
echo "== mkdocs build --strict"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$(mktemp -d)"
echo "== all checks passed"
