#!/usr/bin/env bash
# Creates benchmarks/baselines/.venv with torch and pyro-ppl for the Pyro side of
# benchmarks/air_epoch.py. It is never run by the tests or by CI; the environment is gitignored.
#
#   bash benchmarks/baselines/make_env.sh            # uses python3 from PATH
#   PYTHON=/usr/bin/python3.12 bash benchmarks/baselines/make_env.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
"$python" -m venv "$here/.venv"
"$here/.venv/bin/python" -m pip install --quiet --upgrade pip
# torch 2.13.0 (TORCH_SPEC to change it); where pip finds only PyPI's Linux wheel, it brings
# CUDA libraries of several GB, and runs on the CPU without a GPU all the same.
"$here/.venv/bin/python" -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}" "pyro-ppl==1.9.*" numpy
"$here/.venv/bin/python" -c "import torch, pyro; print('torch', torch.__version__, 'pyro', pyro.__version__)"
