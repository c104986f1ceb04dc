#!/usr/bin/env bash
# The test suite, from a fresh clone: builds the environment, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."  # the repo root (env.sh leaves the directory alone)
source scripts/env.sh
set +e
# two worker processes, each taking whole test files (module fixtures stay in one process);
# PYTEST_WORKERS=0 runs everything in this process
python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "ERROR: pytest collected no tests (exit 5): treating as a failure" >&2
fi
exit "$rc"
