"""keep_freed_memory(): repeated decoder calls stop page-faulting their buffers back in (full-frame
logits: masks themselves are computed as crops and no longer need large buffers)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import json, resource, sys
import numpy as np
from sam_ros.engine.runtime import keep_freed_memory
tuned = keep_freed_memory() if sys.argv[1] == "1" else False
from sam_ros.data.scenes import SceneSequence
from sam_ros.engine.factory import create_predictor
p = create_predictor()
emb = p.encode(SceneSequence(5, height=480, width=640).frame(0).image)
for k in range(5):  # warm up
    p.decode(emb, np.array([[100.0 + k, 120.0]]), np.array([1]), return_logits=True)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for k in range(20):
    p.decode(emb, np.array([[100.0 + 7 * k, 120.0 + 5 * k]]), np.array([1]), return_logits=True)
print(json.dumps({"tuned": tuned, "faults_per_call": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20}))
"""


def _run(flag: str, env_extra=None):
    env = dict(os.environ, PYTHONPATH=ROOT, **(env_extra or {}))
    out = subprocess.run([sys.executable, "-c", SCRIPT, flag], env=env, capture_output=True, text=True, timeout=300,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator setting")
def test_keep_freed_memory_stops_page_faults_per_decode():
    default = _run("0")
    tuned = _run("1")
    assert tuned["tuned"] is True
    assert default["faults_per_call"] > 500, default  # glibc hands the mask buffers back every call
    assert tuned["faults_per_call"] < default["faults_per_call"] / 10, (default, tuned)
    # The opt-out is honoured.
    off = _run("1", {"SAM_ROS_KEEP_FREED_MEMORY": "0"})
    assert off["tuned"] is False
