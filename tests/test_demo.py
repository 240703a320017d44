"""The README's main job, `./scripts/demo.sh`, run as it is (its own camera, node and operator
processes over DDS), short: it must track both of its targets against ground truth and exit
cleanly, without a traceback or rclpy's "exception was never retrieved" at shutdown (which its
executor used to print when a callback was still running as it was shut down)."""
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("rclpy")

from ros_helpers import ROOT, ros_env  # noqa: E402

pytestmark = [pytest.mark.ros]


def test_demo_tracks_its_targets_and_exits_cleanly(tmp_path):
    env = ros_env(20 + (os.getpid() + 77) % 150)
    proc = subprocess.run([sys.executable, "-m", "sam_ros.tools.demo", "--seconds", "12", "--quiet-node",
                           "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out and "never retrieved" not in out, out[-3000:]
    ious = dict(re.findall(r"^  (\w+): \d+ frames, mean IoU vs ground truth ([\d.]+)$", out, re.M))
    counts = {k: int(v) for k, v in re.findall(r"^  (\w+): (\d+) results,", out, re.M)}
    assert set(ious) == {"click_1", "box_1"}, out[-3000:]
    # Both targets are followed on the camera's frames, not lost: the click target scores about
    # 0.9 and the box target about 0.75-0.8 on this footage in full runs (benchmarks/README.md).
    assert float(ious["click_1"]) >= 0.75, out[-3000:]
    assert float(ious["box_1"]) >= 0.5, out[-3000:]
    assert min(counts.values()) >= 30, out[-3000:]
    assert os.path.getsize(tmp_path / "demo_overlay.mp4") > 0
