#!/usr/bin/env bash
# Create .venv (if missing) with the CPU build of torch and build fgp_ext into it (editable).
# Usage: bash scripts/setup.sh            (idempotent; re-run after changing C++ sources)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# Pin torch: an unpinned torch may pull a multi-GB CUDA build. The extension must be compiled
# against the torch it runs with, hence --no-build-isolation below.
.venv/bin/python -m pip install -q "torch==${FGP_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q "scikit-build-core>=0.10" ninja cmake
.venv/bin/python -m pip install -q --no-build-isolation -e ".[test,plot]"
.venv/bin/python -c "import fgp_ext, torch; print('fgp_ext', fgp_ext.__version__, 'torch', torch.__version__, 'cuda kernels:', fgp_ext.ops.CUDA_KERNELS, 'library:', fgp_ext.ops.LIBRARY_PATH)"
