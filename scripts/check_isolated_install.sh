#!/usr/bin/env bash
# Once per release, not in every CI run (the isolated build downloads a torch of several GB):
#   1. `python -m build --sdist` gives an sdist;
#   2. a plain, isolated `pip install <sdist>` into a fresh venv that already holds torch 2.13.0
#      builds the library against whatever torch >= 2.10 pip puts into the build environment (not
#      the venv's), which the stable ABI allows;
#   3. the op tests pass against that install, from a folder outside the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m venv "$work/venv"
V="$work/venv/bin/python"
"$V" -m pip install -q --upgrade pip build
"$V" -m build --sdist -o "$work/dist" . >/dev/null
sdist=$(ls "$work"/dist/fgp_ext-*.tar.gz)
echo "== sdist: $(basename "$sdist") ($(du -k "$sdist" | cut -f1) KiB)"
"$V" -m pip install -q "torch==2.13.0" pytest hypothesis scipy
echo "== isolated pip install of the sdist (the build environment gets its own torch)"
"$V" -m pip install -v "$sdist" 2>&1 | grep -E "building against torch|Successfully installed|Collecting torch" || true
(cd "$work" && "$V" -c "import fgp_ext, torch; print('fgp_ext', fgp_ext.__version__, 'from', fgp_ext.__file__, '| runs on torch', torch.__version__)")
(cd "$work" && FGP_TEST_INSTALLED=1 "$V" -m pytest "$ROOT/python_tests/test_ops_message_passing.py" \
   "$ROOT/python_tests/test_registration.py" "$ROOT/python_tests/test_ops_dag.py" -q -p no:cacheprovider --rootdir "$ROOT")
echo "== check_isolated_install: passed"
