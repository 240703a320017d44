"""`pip install .` outside ROS: the engine and the tools work, the ROS commands say what is missing.

A fresh venv from the base interpreter gets the package with --no-deps; its dependencies are the
test venv's own installs (torch, numpy, OpenCV, ...: everything pip installed there except the
ROS 2 wheels), linked into one folder on its path, so nothing is downloaded or unpacked again and
rclpy is really absent. pip and setuptools are this venv's too (the new venv is made without pip).
"""
import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROS_COMMANDS = ("sam-ros-node", "sam-ros-lifecycle-node", "sam-ros-synthetic-camera", "sam-ros-demo")
TOOLS = ("sam-ros-train", "sam-ros-evaluate", "sam-ros-data-engine", "sam-ros-view-masks", "sam-ros-console")


def _tops(dist) -> set:
    return {str(f).split("/")[0] for f in (dist.files or ())} - {"", ".."}


def _non_ros_site_packages(dest: str) -> None:
    """Link every top-level entry of this venv's site-packages that belongs to no ROS distribution
    (the ros-* wheels, the egg-infos they carry for their Python packages, our rosidl build)."""
    site = sysconfig.get_paths()["purelib"]
    dists = list(md.distributions(path=[site]))
    ros = {"sam_ros"}
    for dist in dists:
        if re.sub(r"[-_.]+", "-", (dist.metadata["Name"] or "").lower()).startswith("ros-"):
            ros |= _tops(dist)
    os.makedirs(dest)
    for dist in dists:
        tops = _tops(dist)
        if tops & ros:
            continue
        for top in tops:
            src = os.path.join(site, top)
            if not top.endswith(".pth") and os.path.exists(src) and not os.path.exists(os.path.join(dest, top)):
                os.symlink(src, os.path.join(dest, top))


@pytest.fixture(scope="module")
def plain_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pip_install")
    src = tmp / "src"
    shutil.copytree(os.path.join(ROOT, "sam_ros"), src / "sam_ros",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "msg"))
    shutil.copy(os.path.join(ROOT, "setup.py"), src / "setup.py")
    venv = tmp / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    # No pip of its own: pip and setuptools come with the linked dependencies (this venv's).
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    deps = str(tmp / "deps")
    _non_ros_site_packages(deps)
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    with open(os.path.join(site, "sam_ros_test_deps.pth"), "w") as f:
        f.write(deps + "\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "AMENT_PREFIX_PATH", "LD_LIBRARY_PATH")}
    env["PATH"] = str(venv / "bin") + os.pathsep + env.get("PATH", "")
    install = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                              str(src)], cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    return venv, env, tmp


def _run(venv, env, cwd, *args):
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_engine_and_tools_work_without_ros(plain_venv):
    venv, env, tmp = plain_venv
    py = str(venv / "bin" / "python")
    no_ros = _run(venv, env, tmp, py, "-c", "import rclpy")
    assert no_ros.returncode != 0 and "No module named 'rclpy'" in no_ros.stderr
    code = ("import numpy as np, sam_ros, sam_ros.engine.factory as f\n"
            "p = f.create_predictor()\n"
            "img = np.zeros((60, 80, 3), np.uint8); img[20:40, 30:50] = 200\n"
            "out = p.decode(p.encode(img), point_coords=[[40, 30]], point_labels=[1])\n"
            "print(sam_ros.__file__); print(f.default_weights()); print(out.masks.shape, bool(out.masks[out.iou_predictions.argmax(), 30, 40]))\n"
            # Every console script resolves to a callable of the installed package (one process).
            "import importlib.metadata as md\n"
            "eps = [e for e in md.entry_points(group='console_scripts') if e.value.startswith('sam_ros.')]\n"
            "assert all(callable(e.load()) for e in eps)\n"
            "print(sorted(e.name for e in eps))\n")
    r = _run(venv, env, tmp, py, "-c", code)
    assert r.returncode == 0, r.stderr
    pkg, weights, result, scripts = r.stdout.strip().splitlines()[-4:]
    assert scripts == str(sorted(ROS_COMMANDS + TOOLS))
    assert pkg.startswith(str(venv)) and weights.startswith(str(venv)), r.stdout  # the installed copy
    assert result == "(3, 60, 80) True"  # the embedded model segments the bright square
    h = _run(venv, env, tmp, str(venv / "bin" / "sam-ros-evaluate"), "--help")  # one tool end to end
    assert h.returncode == 0 and "usage:" in h.stdout, h.stderr


@pytest.mark.parametrize("command", ROS_COMMANDS)
def test_ros_commands_fail_with_one_clear_sentence(plain_venv, command):
    venv, env, tmp = plain_venv
    r = _run(venv, env, tmp, str(venv / "bin" / command))
    assert r.returncode == 1 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"{command} needs ROS 2's rclpy, which this Python cannot import") and \
        lines[0].endswith(".")


def test_console_live_says_rclpy_is_missing(plain_venv):
    venv, env, tmp = plain_venv
    r = _run(venv, env, tmp, str(venv / "bin" / "sam-ros-console"), "--port", "0", "live")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("console live needs ROS 2's rclpy, which this Python cannot import"), r.stderr
