#!/usr/bin/env bash
# Build the op library with AddressSanitizer + UndefinedBehaviorSanitizer into build/sanitize and run
# the op tests and a fuzz budget against it (the sanitizer runtimes preloaded into Python; leak
# detection off: CPython and torch keep allocations for the life of the process). Any sanitizer
# report aborts the process, which fails the tests or shows up as a dead fuzz worker.
#
#   bash scripts/sanitize.sh                  # op tests + 100,000 fuzzed calls
#   FGP_FUZZ_CALLS=1000000 bash scripts/sanitize.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
build=build/sanitize
.venv/bin/cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFGP_SANITIZE=ON -DFGP_BUILD_CUDA=OFF \
  -DPython_EXECUTABLE="$PWD/.venv/bin/python" -DCMAKE_MAKE_PROGRAM="$PWD/.venv/bin/ninja" >/dev/null
.venv/bin/cmake --build "$build" >/dev/null
lib="$PWD/$build/_fgp_ops.so"
runtimes="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export FGP_OPS_LIBRARY="$lib" LD_PRELOAD="$runtimes"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:max_allocation_size_mb=8192"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
echo "== sanitize: op tests against $lib"
.venv/bin/python -m pytest python_tests/test_ops_message_passing.py python_tests/test_ops_dag.py \
  python_tests/test_flow_encoder.py python_tests/test_gated_aggregate.py python_tests/test_dropout.py \
  python_tests/test_registration.py -q -p no:cacheprovider -x
echo "== sanitize: fuzz ${FGP_FUZZ_CALLS:-100000} calls"
.venv/bin/python scripts/fuzz_ops.py --calls "${FGP_FUZZ_CALLS:-100000}" --workers 2 --batch 10000
echo "== sanitize: no sanitizer report"
