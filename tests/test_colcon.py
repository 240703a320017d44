"""colcon build of the package in a fresh workspace, then the installed node run from install/.

What a user of a ROS 2 machine does (README): the repository in ws/src/, `colcon build`, source
install/setup.bash, run the executable. Here the "ROS installation" is the test venv (its prefix
holds the pip wheels' ament index), and the node must come from install/, not from the source
tree: the repository is kept off PYTHONPATH and the imports are checked.
"""
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import Point  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from sam_ros.data.scenes import generate_scene  # noqa: E402
from sam_ros.msg import SegmentationResult  # noqa: E402
from sam_ros.ros.conversions import fill_image_msg  # noqa: E402

from ros_helpers import ROOT, ros_env, spin_until  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

DOMAIN = 20 + os.getpid() % 150


def _workspace_env(domain_id: int) -> dict:
    """The environment of a shell on a machine with ROS in the venv prefix, minus the source tree."""
    env = ros_env(domain_id)
    venv = os.path.dirname(os.path.dirname(sys.executable))
    env["PYTHONPATH"] = os.pathsep.join(p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                        if p and os.path.realpath(p) != os.path.realpath(ROOT))
    env.update(AMENT_PREFIX_PATH=venv, CMAKE_PREFIX_PATH=venv, VIRTUAL_ENV=venv, MAKEFLAGS="-j2")
    env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env["PATH"]
    return env


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    colcon = os.path.join(os.path.dirname(sys.executable), "colcon")
    assert os.path.exists(colcon), "colcon is not installed: requirements-test.txt pins colcon-common-extensions"
    ws = tmp_path_factory.mktemp("ws")
    (ws / "src").mkdir()
    os.symlink(ROOT, ws / "src" / "sam_ros")
    env = _workspace_env(DOMAIN)
    build = subprocess.run([colcon, "build", "--packages-select", "sam_ros", "--event-handlers", "console_direct+",
                            "--cmake-args", "-DBUILD_TESTING=OFF"],
                           cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-4000:]
    return ws, env


def _in_workspace(ws, env, command: str, **kwargs):
    return subprocess.Popen(["bash", "-c", f"source install/setup.bash && {command}"], cwd=ws, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_install_tree_holds_code_messages_launch_and_config(workspace):
    ws, env = workspace
    install = ws / "install" / "sam_ros"  # colcon's default (isolated) layout: a prefix per package
    for rel in ("lib/sam_ros/sam_node", "lib/sam_ros/sam_lifecycle_node", "lib/sam_ros/sam_demo",
                "share/sam_ros/package.xml",
                "share/sam_ros/launch/sam_ros.launch.py", "share/sam_ros/config/sam_ros.yaml",
                "share/sam_ros/config/fastdds_large_data.xml", "share/ament_index/resource_index/packages/sam_ros"):
        assert (install / rel).exists(), rel
    assert os.access(install / "lib/sam_ros/sam_node", os.X_OK)
    probe = _in_workspace(ws, env, "python3 -c 'import sam_ros.ros.node as n, sam_ros.msg as m, "
                                   "sam_ros.engine.factory as f; print(n.__file__); print(m.__file__); "
                                   "print(f.default_weights())'")
    out, _ = probe.communicate(timeout=120)
    assert probe.returncode == 0, out
    node_file, msg_file, weights = out.strip().splitlines()[-3:]
    for path in (node_file, msg_file, weights):
        assert os.path.realpath(path).startswith(os.path.realpath(install)), f"{path} is not from install/: {out}"


def test_installed_node_runs_from_the_sourced_workspace(workspace):
    ws, env = workspace
    # What `ros2 run sam_ros sam_node` runs (the ros2 CLI is not on PyPI).
    proc = _in_workspace(ws, env, "exec install/sam_ros/lib/sam_ros/sam_node --ros-args -r __node:=colcon_sam")
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip() for line in proc.stdout), daemon=True)
    reader.start()
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN)
    node = rclpy.create_node("colcon_tester", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    results = []
    image_pub = node.create_publisher(Image, "image", qos_profile_sensor_data)
    click_pub = node.create_publisher(Point, "/image_mouse_left", 10)
    node.create_subscription(SegmentationResult, "segmentation", results.append, 20)
    scene = generate_scene(4, height=240, width=320)
    try:
        assert spin_until(ex, lambda: image_pub.get_subscription_count() > 0 or proc.poll() is not None, 120), \
            "\n".join(lines)
        assert proc.poll() is None, "\n".join(lines)
        ys, xs = np.nonzero(scene.masks[0])
        end = time.monotonic() + 120
        sec = 100
        while time.monotonic() < end and not any(r.objects and r.objects[0].area > 0 for r in results):
            sec += 1
            header = Header(frame_id="camera")
            header.stamp.sec = sec
            msg = fill_image_msg(Image(), scene.image, "rgb8")
            msg.header = header
            image_pub.publish(msg)
            if sec % 4 == 0:  # until a frame is encoded (load varies): click the first object's centre
                click_pub.publish(Point(x=float(xs.mean()), y=float(ys.mean()), z=0.0))
            spin_until(ex, lambda: False, 0.5)
    finally:
        ex.remove_node(node)
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    log = "\n".join(lines)
    assert results, log
    hit = [r for r in results if r.objects and r.objects[0].area > 0]
    assert hit, log
    assert hit[-1].header.frame_id == "camera" and hit[-1].width == 320 and hit[-1].height == 240
    assert "listening on" in log
