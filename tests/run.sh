#!/usr/bin/env bash
# The test command: installs what is needed (labs/install.sh), then lint, types and pytest.
# Extra arguments go to the main pytest run (e.g. -k mqtt).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bash labs/install.sh

echo "==> ruff"
.venv/bin/ruff check agent tests labs
echo "==> mypy --strict agent"
.venv/bin/mypy --strict agent

# The pure core must be fully covered by its own tests (branches included).
echo "==> core tests, 100% branch coverage of agent/core"
.venv/bin/python -m pytest -q tests/core --cov=agent/core --cov-branch \
  --cov-report=term-missing:skip-covered --cov-fail-under=100 -p no:cacheprovider

echo "==> all tests"
# pytest exits 5 when it collected nothing; set -e turns that into a failure too.
# The slowest tests and fixtures, so a run that grows shows where.
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=25 "$@"
