# shellcheck shell=bash
# Create or reuse the project's virtual environment, install the pinned dependencies and build the
# ROS 2 interfaces in msg/ into it. Sourced by scripts/demo.sh and scripts/test.sh.
# Re-running is cheap: each step is skipped while its inputs are unchanged.
#   SAM_ROS_ROS_DISTRO=kilted|jazzy            ROS 2 distribution of the PyPI wheels (default kilted)
#   SAM_ROS_VENV=path                          the venv (default .venv for kilted, .venv-<distro> else)
#   SAM_ROS_EXTRAS="requirements-test.txt"     extra requirement files to install
# One venv holds one distribution (their wheels share names): a venv made for another
# distribution is refused, never converted.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DISTRO="${SAM_ROS_ROS_DISTRO:-kilted}"
case "$DISTRO" in
  kilted) default_venv="$ROOT/.venv" ;;
  jazzy) default_venv="$ROOT/.venv-$DISTRO" ;;
  *) echo "SAM_ROS_ROS_DISTRO='$DISTRO' is not supported (kilted or jazzy)" >&2; exit 1 ;;
esac
VENV="${SAM_ROS_VENV:-$default_venv}"
PY="$VENV/bin/python"

# Build tools (the ROS 2 interfaces are generated and compiled here): installed with apt-get when
# missing and this runs as root (sessions, CI, containers); otherwise say what to install.
missing=()
for tool in python3 cmake gcc g++; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[sam_ros] installing ${missing[*]} with apt-get"
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv cmake gcc g++) \
    >/tmp/sam_ros_build_tools_apt.log 2>&1 || echo "[sam_ros] apt-get failed (see /tmp/sam_ros_build_tools_apt.log)" >&2
fi
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
  echo "$DISTRO" > "$VENV/.sam_ros_distro"
fi
venv_distro="$(cat "$VENV/.sam_ros_distro" 2>/dev/null || echo kilted)"  # venvs from before the option: kilted
if [ "$venv_distro" != "$DISTRO" ]; then
  echo "sam_ros: $VENV holds ROS 2 $venv_distro, not $DISTRO; use another SAM_ROS_VENV (or delete it)" >&2
  exit 1
fi

reqs=("$ROOT/requirements.txt" "$ROOT/requirements-ros-$DISTRO.txt")
nodeps=()  # <extra>-nodeps.txt beside an extra: packages installed without their dependencies
for extra in ${SAM_ROS_EXTRAS:-}; do
  reqs+=("$ROOT/$extra")
  if [ -f "$ROOT/${extra%.txt}-nodeps.txt" ]; then nodeps+=("$ROOT/${extra%.txt}-nodeps.txt"); fi
done
stamp="$VENV/.sam_ros_requirements"
want="$(cat "${reqs[@]}" ${nodeps[@]+"${nodeps[@]}"} | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || ! grep -qx "$want" "$stamp"; then
  echo "[sam_ros] installing requirements into $VENV"
  args=()
  for r in "${reqs[@]}"; do args+=(-r "$r"); done
  "$PY" -m pip install -q --disable-pip-version-check "${args[@]}"
  # Reference packages that declare torchvision / a CUDA build: no dependencies (pinned in the
  # extras), no build isolation (they build against our torch), no CUDA extension.
  for r in ${nodeps[@]+"${nodeps[@]}"}; do
    SAM2_BUILD_CUDA=0 "$PY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -r "$r"
  done
  echo "$want" >> "$stamp"
fi

# Interfaces: generated with rosidl into the venv prefix (ament index, <package>.msg). Our msg/,
# then any package folders named in SAM_ROS_EXTRA_INTERFACES (the tests add a vision_msgs build).
build_interfaces() {  # <package source folder> <name>
  local src="$1" name="$2"
  local stamp="$VENV/.sam_ros_msgs_$name"
  local want
  want="$(cat "$src"/msg/*.msg "$src/CMakeLists.txt" "$src/package.xml" "$ROOT"/cmake/*.cmake | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "[sam_ros] generating ROS 2 interfaces of $name into $VENV"
  local build="$ROOT/build-ros/$DISTRO/$name"
  rm -rf "$build"
  mkdir -p "$build"
  (
    export CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV"
    cmake -S "$src" -B "$build" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" \
      -DBUILD_TESTING=OFF -Wno-dev >"$build.log" 2>&1 &&
    cmake --build "$build" -j2 >>"$build.log" 2>&1 &&
    cmake --install "$build" >>"$build.log" 2>&1
  ) || { echo "[sam_ros] interface build of $name failed; see $build.log" >&2; tail -20 "$build.log" >&2; exit 1; }
  echo "$want" > "$stamp"
}
build_interfaces "$ROOT" sam_ros
for extra in ${SAM_ROS_EXTRA_INTERFACES:-}; do build_interfaces "$ROOT/$extra" "$(basename "$extra")"; done

export SAM_ROS_ROS_DISTRO="$DISTRO" ROS_DISTRO="$DISTRO"
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
export AMENT_PREFIX_PATH="$VENV"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# Fast DDS: large camera frames on best-effort QoS need the large-data transport profile. Fast DDS 3
# (Kilted) reads FASTDDS_DEFAULT_PROFILES_FILE; Fast DDS 2 (Jazzy) only FASTRTPS_DEFAULT_PROFILES_FILE,
# which Fast DDS 3 still honours with a deprecation warning: set it for Jazzy only.
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$ROOT/config/fastdds_large_data.xml}"
if [ "$DISTRO" = jazzy ]; then
  export FASTRTPS_DEFAULT_PROFILES_FILE="${FASTRTPS_DEFAULT_PROFILES_FILE:-$FASTDDS_DEFAULT_PROFILES_FILE}"
fi
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
