#!/usr/bin/env bash
# Compile every csrc/ops/cuda/*.cu with nvcc against the installed torch's stable-ABI headers
# (compile only, no link, no GPU needed), with the flags of the CMake build (TORCH_TARGET_VERSION,
# no fused multiply-add). Fails if any file does not compile.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
if [ ! -x "$NVCC" ]; then
  echo "check_cuda_compile: nvcc not found; set NVCC=... (skipping is not allowed in CI)" >&2
  exit 1
fi
TORCH_INC=$("$PY" -c "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'include'))")
TARGET=$(sed -n 's/^set(FGP_TORCH_TARGET_VERSION "\(0x[0-9a-f]*\)".*/\1/p' CMakeLists.txt)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
for f in csrc/ops/cuda/*.cu; do
  echo "nvcc -c $f"
  # --fmad=false: no fused multiply-add, so the CUDA kernels round exactly like the CPU ones.
  if ! "$NVCC" -c "$f" -o "$out/$(basename "$f").o" -std=c++20 --fmad=false -O2 \
      -Icsrc -I"$TORCH_INC" -DTORCH_TARGET_VERSION="$TARGET" -DUSE_CUDA -DFGP_WITH_CUDA \
      -Xcompiler -fPIC --expt-relaxed-constexpr; then
    status=1
  fi
done
[ $status -eq 0 ] && echo "check_cuda_compile: all CUDA sources compiled with $("$NVCC" --version | tail -1) (stable ABI target $TARGET)"
exit $status
