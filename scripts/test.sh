#!/usr/bin/env bash
# Run the whole test suite: sets up (or reuses) .venv with the test extras, then pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k predictor -x
set -euo pipefail
SAM_ROS_EXTRAS="requirements-test.txt"
source "$(dirname "$0")/env.sh"
cd "$ROOT"
exec "$PY" -m pytest "$@"
