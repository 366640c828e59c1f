#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the test suite. This is the README's test command and the
# command CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest python_tests -q -p no:cacheprovider "$@"
