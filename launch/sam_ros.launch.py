"""Standard ROS 2 launch file: `ros2 launch sam_ros sam_ros.launch.py image:=/camera/image_raw`.

Starts the sam_ros node with config/sam_ros.yaml and the Fast DDS large-data transport profile
(config/fastdds_large_data.xml) so camera-sized frames arrive on best-effort QoS.
(launch/launch_ros are not on PyPI: without a ROS install, run
`python -m sam_ros.ros.node --ros-args --params-file config/sam_ros.yaml -r image:=...` instead.)
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

_PROFILES_VARIABLE = ("FASTRTPS_DEFAULT_PROFILES_FILE" if os.environ.get("ROS_DISTRO") in ("humble", "iron", "jazzy")
                      else "FASTDDS_DEFAULT_PROFILES_FILE")


def generate_launch_description():
    share = get_package_share_directory("sam_ros")
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="/camera/image_raw", description="camera image topic"),
        DeclareLaunchArgument("params", default_value=os.path.join(share, "config", "sam_ros.yaml"),
                              description="parameters file"),
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        # Fast DDS 3 (Kilted and later) reads FASTDDS_..., Fast DDS 2 (Humble, Jazzy) FASTRTPS_...
        SetEnvironmentVariable(_PROFILES_VARIABLE, os.path.join(share, "config", "fastdds_large_data.xml")),
        Node(
            package="sam_ros",
            executable="sam_node",
            name="sam_ros",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params")],
            remappings=[("image", LaunchConfiguration("image"))],
            output="screen",
        ),
    ])
