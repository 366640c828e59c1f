#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU, nvcc and a CUDA build of torch >= 2.10 already
# installed (no network needed): build the library with CUDA kernels from the source tree, run the
# CUDA tests (every op against its CPU kernel, bitwise or to its stated tolerance; the Python
# fallbacks are not involved because the kernels are compiled), then the GPU benchmarks. Everything
# goes to one folder: log.txt, pytest's junit XML and the benchmark tables (bench.md).
#
#   OUT=/tmp/gpu_out bash scripts/gpu_check.sh          # about 10 minutes on 16 cores
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
echo "== gpu_check $(date -u +%FT%TZ) on $(hostname)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$PY" -c "import torch, sys; print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda, '| device', torch.cuda.get_device_name(0))" || exit 1
nvcc --version | tail -1

# Build with CMake directly (scikit-build-core may be absent on a bare machine) and put the library
# beside the package, where fgp_ext/ops/_library.py looks first.
build=build/gpu-check
timeout 400 cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DFGP_BUILD_CUDA=ON \
  -DPython_EXECUTABLE="$(command -v "$PY")" -DCMAKE_CUDA_ARCHITECTURES=native >"$OUT/cmake.txt" 2>&1 \
  && timeout 400 cmake --build "$build" -j "$(nproc)" >>"$OUT/cmake.txt" 2>&1
rc=$?
tail -5 "$OUT/cmake.txt"
[ $rc -eq 0 ] || { echo "gpu_check: build failed (rc $rc), see cmake.txt"; exit 1; }
cp "$build/_fgp_ops.so" fgp_ext/_fgp_ops.so
PYTHONPATH=$PWD "$PY" -c "import fgp_ext; assert fgp_ext.ops.CUDA_KERNELS, 'library has no CUDA kernels'; print('CUDA kernels loaded from', fgp_ext.ops.LIBRARY_PATH)" || exit 1

echo "== CUDA tests"
PYTHONPATH=$PWD timeout 240 "$PY" -m pytest python_tests/test_cuda.py python_tests/test_registration.py -q \
  -p no:cacheprovider --junitxml="$OUT/cuda_tests.xml"
tests_rc=$?

echo "== GPU benchmarks"
PYTHONPATH=$PWD:$PWD/bench FGP_BENCH_MD="$OUT/bench.md" FGP_BENCH_THREADS=16 FGP_BENCH_SECONDS=0.3 \
  timeout 300 "$PY" -m pytest bench --benchmark-only -q -p no:cacheprovider -k "cuda" || echo "benchmarks rc $?"
rm -f fgp_ext/_fgp_ops.so
echo "== gpu_check done: CUDA tests rc $tests_rc"
exit $tests_rc
