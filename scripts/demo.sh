#!/usr/bin/env bash
# Run the live demo on the embedded defaults: sets up (or reuses) .venv, then starts a synthetic
# camera, the sam_ros node and a clicking operator. Extra arguments go to the demo
# (python -m sam_ros.tools.demo --help).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
exec "$PY" -m sam_ros.tools.demo "$@"
