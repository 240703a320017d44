#!/usr/bin/env bash
# Run the whole test suite: sets up (or reuses) .venv with the test extras, then pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh -k predictor -x
set -euo pipefail
SAM_ROS_EXTRAS="requirements-test.txt"
# vision_msgs is not on PyPI: a test-only build of its 2D detection messages (tests/interfaces).
SAM_ROS_EXTRA_INTERFACES="tests/interfaces/vision_msgs"
# The console's browser tests drive a real headless Chromium (Debian packages; CI runs as root).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[sam_ros] installing chromium and chromium-driver (browser tests)"
    (apt-get update -q && apt-get install -y -q chromium chromium-driver) >/tmp/sam_ros_chromium_apt.log 2>&1 ||
      echo "[sam_ros] chromium install failed (see /tmp/sam_ros_chromium_apt.log): browser tests will skip" >&2
  else
    echo "[sam_ros] chromium / chromedriver missing (apt-get install chromium chromium-driver): browser tests will skip" >&2
  fi
fi
source "$(dirname "$0")/env.sh"
cd "$ROOT"
exec "$PY" -m pytest "$@"
