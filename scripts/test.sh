#!/usr/bin/env bash
# The test suite, from a fresh clone: builds the environment, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."  # the repo root (env.sh leaves the directory alone)
source scripts/env.sh
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "ERROR: pytest collected no tests (exit 5): treating as a failure" >&2
fi
exit "$rc"
