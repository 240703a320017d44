"""sam_ros: Segment Anything as a real-time ROS 2 node.

Layers (imports point downward only):
  sam_ros.model    pure PyTorch modules, checkpoint compatible with the official SAM files
  sam_ros.engine   ROS-free predictor, automatic masks, backends, mask utilities
  sam_ros.ros      the thin ROS 2 adapter (the only place that imports rclpy)
  sam_ros.tools    command-line entry points
"""
# The ROS build generates `sam_ros.msg` into the install prefix; extending the package path
# lets the source tree (PYTHONPATH=. / pytest) find those generated modules too.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

__version__ = "0.1.0"
