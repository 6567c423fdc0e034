#!/usr/bin/env bash
# Creates the environment if needed and runs the flagship example.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/env.sh dev,examples,docs,checkpoint,tfp,genjax,blackjax,numpyro,nn
JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" .venv/bin/python examples/vae.py "$@"
