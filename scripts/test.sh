#!/usr/bin/env bash
# The whole test suite, offline, on the CPU. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh dev
exec .venv/bin/python -m pytest "$@"
