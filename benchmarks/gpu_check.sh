#!/usr/bin/env bash
# GPU check (under 5 minutes): on a machine with an NVIDIA GPU, run the CUDA tests and time ViT-B,
# MobileSAM and the default model per backend and precision, with the card's name in the output.
# Uses the machine's own Python with torch (CUDA build) and installs nothing from the network;
# reference packages may be provided as wheels in .whl/ (segment_anything, mobilesam-mirror).
#   bash benchmarks/gpu_check.sh [output folder]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-/tmp/sam_ros_gpu}}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/sam_ros_site .whl/*.whl && \
    export PYTHONPATH="/tmp/sam_ros_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export SAM_ROS_CACHE="${SAM_ROS_CACHE:-/tmp/sam_ros_cache}" GPU_BENCH_JSON="$OUT/gpu_bench.json"
echo "== CUDA tests"
timeout "${TEST_TIMEOUT:-150}" "$PY" -m pytest tests/test_cuda.py -q -rs -p no:cacheprovider 2>&1 | tee "$OUT/cuda_tests.txt" | tail -15
echo "== timings"
timeout "${BENCH_TIMEOUT:-200}" "$PY" benchmarks/bench_gpu.py 2>&1 | tee "$OUT/gpu_bench.txt"
