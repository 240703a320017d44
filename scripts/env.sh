# shellcheck shell=bash
# Create or reuse the project's virtual environment (.venv), install the pinned dependencies and
# build the ROS 2 interfaces in msg/ into it. Sourced by scripts/demo.sh and scripts/test.sh.
# Re-running is cheap: each step is skipped while its inputs are unchanged.
#   SAM_ROS_EXTRAS="requirements-test.txt"   extra requirement files to install
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SAM_ROS_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"

for tool in python3 cmake gcc g++; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "sam_ros set-up needs '$tool' (Debian/Ubuntu: apt-get install python3-venv cmake gcc g++)" >&2
    exit 1
  fi
done

if [ ! -x "$PY" ]; then
  echo "[sam_ros] creating virtual environment $VENV"
  python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip
fi

reqs=("$ROOT/requirements.txt")
for extra in ${SAM_ROS_EXTRAS:-}; do reqs+=("$ROOT/$extra"); done
stamp="$VENV/.sam_ros_requirements"
want="$(cat "${reqs[@]}" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || ! grep -qx "$want" "$stamp"; then
  echo "[sam_ros] installing requirements into $VENV"
  args=()
  for r in "${reqs[@]}"; do args+=(-r "$r"); done
  "$PY" -m pip install -q --disable-pip-version-check "${args[@]}"
  echo "$want" >> "$stamp"
fi

# Interfaces: generated with rosidl into the venv prefix (ament index, sam_ros.msg).
msg_stamp="$VENV/.sam_ros_msgs"
msg_want="$(cat "$ROOT"/msg/*.msg "$ROOT/CMakeLists.txt" "$ROOT/package.xml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$msg_stamp" ] || [ "$(cat "$msg_stamp")" != "$msg_want" ]; then
  echo "[sam_ros] generating ROS 2 interfaces (msg/) into $VENV"
  build="$ROOT/build-ros"
  rm -rf "$build"
  (
    export CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV"
    cmake -S "$ROOT" -B "$build" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" \
      -DBUILD_TESTING=OFF -Wno-dev >"$build.log" 2>&1 &&
    cmake --build "$build" -j2 >>"$build.log" 2>&1 &&
    cmake --install "$build" >>"$build.log" 2>&1
  ) || { echo "[sam_ros] interface build failed; see $build.log" >&2; tail -20 "$build.log" >&2; exit 1; }
  echo "$msg_want" > "$msg_stamp"
fi

export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
export AMENT_PREFIX_PATH="$VENV"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# Fast DDS: large camera frames on best-effort QoS need the large-data transport profile.
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$ROOT/config/fastdds_large_data.xml}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
