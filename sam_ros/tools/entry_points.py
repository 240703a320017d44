"""Console scripts of a `pip install .` (setup.py) for the commands that need ROS 2.

A plain pip install has the engine and the tools but no ROS: rclpy comes from a ROS 2 installation
(or the venv scripts/env.sh sets up). Without it these commands stop with one sentence saying so,
not with a traceback from deep inside an import.
"""
import importlib
import os
import sys
from typing import Callable


def _needs_rclpy(module: str) -> Callable[[], int]:
    def main() -> int:
        prog = os.path.basename(sys.argv[0]) or module
        try:
            import rclpy  # noqa: F401
        except ImportError as e:
            sys.stderr.write(f"{prog} needs ROS 2's rclpy, which this Python cannot import ({e}): source a ROS 2 "
                             "setup.bash or use the venv of scripts/env.sh (pip install . installs only the "
                             "engine and the tools).\n")
            return 1
        return importlib.import_module(module).main()
    return main


node = _needs_rclpy("sam_ros.ros.node")
lifecycle_node = _needs_rclpy("sam_ros.ros.lifecycle_node")
synthetic_camera = _needs_rclpy("sam_ros.ros.synthetic_camera")
demo = _needs_rclpy("sam_ros.tools.demo")
