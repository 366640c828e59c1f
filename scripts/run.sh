#!/usr/bin/env bash
# The main job in one command: set up .venv (scripts/setup.sh: CPU torch + the extension), then
# run the FGP protocol on the embedded NAS-Bench-201 data.
# Usage: bash scripts/run.sh [fgp run options]    e.g. bash scripts/run.sh --encoder gin --runs 9
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/fgp run "$@"
