#!/usr/bin/env bash
# Run the whole test suite: sets up (or reuses) .venv with the test extras, then pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k predictor -x
set -euo pipefail
SAM_ROS_EXTRAS="requirements-test.txt"
# vision_msgs is not on PyPI: a test-only build of its 2D detection messages (tests/interfaces).
SAM_ROS_EXTRA_INTERFACES="tests/interfaces/vision_msgs"
source "$(dirname "$0")/env.sh"
cd "$ROOT"
exec "$PY" -m pytest "$@"
