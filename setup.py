"""ROS-free install of the engine and command-line tools: `pip install .` into a plain venv.

Do not pip-install into the ROS set-up venv (scripts/env.sh): there the package is built with
CMake (msg/ generation), and pip would treat rosidl's `sam_ros` as the same distribution and
delete the generated messages. colcon ignores this file (package.xml says ament_cmake).
"""
from setuptools import find_packages, setup

setup(
    name="sam_ros",
    version="0.1.0",
    description="Segment Anything as a real-time ROS 2 node (engine and tools usable without ROS)",
    packages=find_packages(include=["sam_ros", "sam_ros.*"]),
    package_data={"sam_ros": ["weights/*.safetensors", "weights/*.md", "tools/console/static/*"]},
    python_requires=">=3.10",
    install_requires=["torch>=2.3", "numpy", "opencv-python-headless", "safetensors", "tqdm", "pillow"],
    extras_require={"bags": ["rosbags"], "onnx": ["onnx", "onnxruntime"], "ray": ["ray==2.60.0"]},
    entry_points={
        "console_scripts": [
            # ROS 2 commands: one clear sentence when rclpy is missing (sam_ros.tools.entry_points).
            "sam-ros-node=sam_ros.tools.entry_points:node",
            "sam-ros-lifecycle-node=sam_ros.tools.entry_points:lifecycle_node",
            "sam-ros-synthetic-camera=sam_ros.tools.entry_points:synthetic_camera",
            "sam-ros-demo=sam_ros.tools.entry_points:demo",
            # ROS-free tools.
            "sam-ros-train=sam_ros.tools.train:main",
            "sam-ros-evaluate=sam_ros.tools.evaluate:main",
            "sam-ros-data-engine=sam_ros.tools.data_engine:main",
            "sam-ros-view-masks=sam_ros.tools.view_masks:main",
            # The operator console: annotate/review are ROS-free; live says itself when rclpy is missing.
            "sam-ros-console=sam_ros.tools.console.__main__:main",
        ]
    },
)
