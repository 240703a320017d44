"""Running a node as a program: init, build, spin until Ctrl-C or shutdown, clean up."""
import sys
from typing import Callable, Tuple, Type

import rclpy
from rclpy.node import Node


def run_node(make_node: Callable[[], Node], args=None,
             startup_errors: Tuple[Type[BaseException], ...] = ()) -> int:
    """Exit code 0 after a normal shutdown, 2 when the node cannot start (the message says why)."""
    from ..engine.runtime import keep_freed_memory

    keep_freed_memory()
    rclpy.init(args=args)
    try:
        node = make_node()
    except startup_errors as e:
        print(f"[sam_ros] cannot start: {e}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
