#!/usr/bin/env bash
# Runs the whole test suite against the real PostgreSQL and Redis on localhost
# (TEST_DATABASE_URL / TEST_REDIS_URL override the targets). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import pytest_django" 2>/dev/null || [ requirements-dev.txt -nt .venv/.installed ] || [ requirements.txt -nt .venv/.installed ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements-dev.txt
  touch .venv/.installed
fi
exec .venv/bin/python -m pytest "$@"
