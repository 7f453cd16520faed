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

# pytest exits 5 when it collected nothing; set -e turns that into a failure too.
# The slowest tests and fixtures, so a run that grows shows where.
if [ $# -gt 0 ]; then
  echo "==> tests: $*"
  .venv/bin/python -m pytest -q -p no:cacheprovider --durations=25 "$@"
  exit
fi
echo "==> all tests but the VM lab's"
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=25 -m "not vm"
# Each VM spends most of its time waiting on timers (BGP, IKE, hold-downs): two lanes of
# VMs at once take about half the time of one after another. Lane 1 takes the stock VM
# (its guests share one boot) and the agent's VMs, lane 2 every other VM test, so a new
# VM module runs too. Each lane's lines are prefixed; both must pass.
echo "==> the VM lab's tests, two lanes of VMs at once"
lane1=(tests/lab/test_vm_stock_stack.py tests/lab/test_vm_doctor.py tests/lab/test_vm_apply.py
  tests/lab/test_vm_agent.py)
temp=$(mktemp -d /tmp/vtl-lanes.XXXX)
vm_tests() {
  local lane=$1
  shift
  .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 -m vm \
    --basetemp="$temp/$lane" "$@" > >(sed -u "s/^/[vm lane $lane] /") 2>&1
}
vm_tests 1 "${lane1[@]}" &
first=$!
vm_tests 2 tests/lab "${lane1[@]/#/--ignore=}" &
second=$!
status=0
wait "$first" || status=$?
wait "$second" || status=$?
exit "$status"
