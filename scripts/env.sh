#!/usr/bin/env bash
# Creates .venv (if missing or out of date) with the pinned versions of constraints.txt.
# Usage: scripts/env.sh [extras]   e.g. scripts/env.sh dev,examples,docs,checkpoint,tfp,genjax,blackjax,numpyro,nn
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev,examples,docs,checkpoint,tfp,genjax,blackjax,numpyro,nn}"

find_python() {
  local c
  for c in "${PYTHON:-}" python3.12 python3.13 python3; do
    [ -n "$c" ] || continue
    if "$c" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
      echo "$c"; return 0
    fi
  done
  # pyenv installs a 3.12 that its shims may not expose globally.
  for c in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3; do
    if [ -x "$c" ]; then echo "$c"; return 0; fi
  done
  return 1
}

stamp=".venv/.progvi-stamp"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1) $extras"
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
py="$(find_python)" || { echo "progvi needs Python >= 3.12: install python3.12 or set PYTHON=/path/to/python3.12" >&2; exit 1; }
echo "== creating .venv with $("$py" --version) ($extras)"
rm -rf .venv
"$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "$extras" = "dev,examples,docs,checkpoint,tfp,genjax,blackjax,numpyro,nn" ]; then
  # Every extra: constraints.txt pins exactly that environment, so install the pins as they
  # are (no resolver run), then the package, and check that nothing is missing.
  .venv/bin/python -m pip install -q --no-deps -r constraints.txt
  .venv/bin/python -m pip install -q --no-deps -e .
  .venv/bin/python -m pip check
else
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[$extras]"
fi
echo "$want" > "$stamp"
